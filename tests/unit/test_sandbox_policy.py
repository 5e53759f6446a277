"""The restricted policy on its own (the first wall): known escapes and what stays allowed.

tests/sandbox/ runs the same kind of code through real worker processes (the second wall).
"""

from __future__ import annotations

import textwrap

import pytest

from sandbox.restricted._backend import RestrictedBackend
from sandbox.restricted._policy import restricted_import
from tests.sandbox.harness import Instance
from treadle.errors import CodeInvalid

HEADER = """
import json, datetime, decimal, collections, random
from treadle import WorkflowEntrypoint

class Probe(WorkflowEntrypoint):
    def run(self, event, step):
"""


def probe(body: str) -> dict[str, object]:
    """Run ``body`` inside run(); return the outcome message."""
    wf = Instance(HEADER + textwrap.indent(textwrap.dedent(body), " " * 8))
    return wf.inline().outcome


RUNTIME_ESCAPES = {
    "dunder via getattr": ("getattr(event, '__cl' + 'ass__')", "AttributeError"),
    "globals of a function": ("getattr(json.dumps, '__glob' + 'als__')", "AttributeError"),
    "generator frame": ("getattr((x for x in []), 'gi_' + 'frame')", "AttributeError"),
    "generator code": ("getattr((x for x in []), 'gi_' + 'code')", "AttributeError"),
    "traceback frame": (
        "try:\n    1 / 0\nexcept Exception as e:\n    getattr(e, '__trace' + 'back__')",
        "AttributeError",
    ),
    "str.format walk": ("'{0.__class__}'.format(1)", "AttributeError"),
    "format_map walk": ("'{x.__class__}'.format_map({'x': 1})", "AttributeError"),
    "str.format unbound": ("getattr(str, 'format')('{0.__class__}', 1)", "AttributeError"),
    "format on a str subclass": (
        "class S(str):\n    pass\nS('{0.__class__}').format(1)",
        "AttributeError",
    ),
    "format through super() of a str subclass": (
        "class S(str):\n    pass\nsuper(S, S('{0.__init__.__globals__}')).format(step)",
        "AttributeError",
    ),
    "ABC register": ("collections.UserDict.register(list)", "AttributeError"),
    "type()": ("type(1)", "NameError"),
    "open()": ("open('/etc/passwd').read()", "NameError"),
    "globals()": ("globals()", "NameError"),
    "vars()": ("vars(self)", "NameError"),
    "dir()": ("dir(step)", "NameError"),
    "a real module behind a facade": ("datetime.sys.modules['os']", "AttributeError"),
    "withheld UserString": ("collections.UserString('{0}').format(1)", "AttributeError"),
    "mro walk": ("Probe.mro()", "AttributeError"),
    "write to the host step": ("step.do = None", "TypeError"),
    "write to the SDK class": ("WorkflowEntrypoint.run = None", "TypeError"),
    "write to a module": ("json.loads = None", "TypeError"),
    "write to shared decimal state": ("decimal.getcontext().prec = 2", "TypeError"),
    "print to a file": ("print('x', file=step)", "TypeError"),
}


@pytest.mark.parametrize(
    ("body", "error"), list(RUNTIME_ESCAPES.values()), ids=list(RUNTIME_ESCAPES)
)
def test_runtime_escapes_raise(body: str, error: str) -> None:
    outcome = probe(body)
    assert outcome["t"] == "failed", outcome
    assert outcome["error"]["name"] == error  # type: ignore[index]


COMPILE_ESCAPES = {
    "dunder attribute": "event.__class__",
    "dunder in an f-string": "f'{event.__class__}'",
    "gi_frame": "(x for x in []).gi_frame",
    "tb_frame": "e = None\ne.tb_frame",
    "__import__": "__import__('os')",
    "eval": "eval('1')",
    "exec": "exec('1')",
    "except*": "try:\n    pass\nexcept* ValueError:\n    pass",
    "name mangling": "self.__secret = 1",
    "nonlocal": "def f():\n    nonlocal x",
    "metaclass": "class M(metaclass=object):\n    pass",
    "async": "async def f():\n    pass",
    "import os": "import os",
    "import sys inside": "from sys import modules",
}


@pytest.mark.parametrize("body", list(COMPILE_ESCAPES.values()), ids=list(COMPILE_ESCAPES))
def test_compile_time_escapes_are_rejected(body: str) -> None:
    text = HEADER + textwrap.indent(body, " " * 8) + "\n"
    with pytest.raises(CodeInvalid) as caught:
        RestrictedBackend().compile(text, None)
    assert all(p["line"] >= 6 for p in caught.value.problems)


@pytest.mark.parametrize("name", ["os", "sys", "string", "operator", "inspect", "importlib"])
def test_the_import_hook_refuses_modules_outside_the_allowlist(name: str) -> None:
    with pytest.raises(ImportError, match="not allowed in workflow code"):
        restricted_import(name)
    with pytest.raises(ImportError, match="relative imports"):
        restricted_import("json", level=1)


def test_host_objects_show_nothing_of_the_host() -> None:
    outcome = probe(
        """
        @step.do("h")
        def h():
            return 1
        return [f"{step!r}", f"{event!r}", str(self.env), f"{h!r}", hasattr(step, "_replay")]
        """
    )
    assert outcome["output"] == [
        "<step>",
        "<event of instance 'inst-1'>",
        "<env>",
        "<step handle 'h'>",
        False,
    ]


def test_ordinary_python_still_works() -> None:
    outcome = probe(
        """
        import math, re, hashlib, base64, statistics, itertools, textwrap, fractions
        counts = collections.Counter("abca")
        counts["z"] = 9
        groups = collections.defaultdict(list)
        for k, v in [("a", 1), ("a", 2)]:
            groups[k].append(v)
        Point = collections.namedtuple("Point", "x y")
        total = 0
        total += sum(x * x for x in range(4))
        class Acc:
            def __init__(self):
                self.items = []
            def add(self, x):
                self.items.append(x)
                return self
        acc = Acc().add(1).add(2)
        stamp = datetime.datetime(2024, 1, 2, tzinfo=datetime.UTC).isoformat()
        return [
            counts["a"], counts["z"], dict(groups), Point(1, 2).y, total, acc.items,
            math.sqrt(16), re.sub(r"\\d", "#", "a1b2"), hashlib.sha256(b"x").hexdigest()[:8],
            base64.b64encode(b"hi").decode(), statistics.median([3, 1, 2]),
            list(itertools.islice(itertools.count(), 3)), textwrap.dedent("  a b"),
            str(fractions.Fraction(1, 3)), str(decimal.Decimal("1.10") + 1), stamp,
            json.loads(json.dumps({"k": [1]})), sorted({3, 1}), f"{3.14159:.2f}",
            isinstance(random.random(), float), getattr(event, "payload"), hasattr(step, "do"),
        ]
        """
    )
    assert outcome["t"] == "done", outcome
    assert outcome["output"] == [
        2, 9, {"a": [1, 2]}, 2, 14, [1, 2], 4.0, "a#b#", "2d711642", "aGk=", 2, [0, 1, 2],
        "a b", "1/3", "2.10", "2024-01-02T00:00:00+00:00", {"k": [1]}, [1, 3], "3.14",
        True, None, True,
    ]  # fmt: skip
