"""Builtins and imports: what restricted code cannot name, and the import allowlist."""

from __future__ import annotations

from tests.sandbox.escapes import Case, Raises, Rejected, Returns

ABSENT = (
    "vars", "dir", "globals", "locals", "open", "compile", "type", "repr", "format", "setattr",
    "delattr", "input", "help", "memoryview", "exit", "quit", "copyright",
)  # fmt: skip

CASES = [
    *(Case(f"builtin {name} is absent", f"return {name}", Raises("NameError")) for name in ABSENT),
    Case("breakpoint", "return breakpoint", Rejected("breakpoint", "reserved name")),
    Case("__builtins__", "return __builtins__", Rejected("__builtins__")),
    Case("eval", "return eval('1')", Rejected("eval", "Eval calls")),
    Case("exec", "exec('x = 1')", Rejected("exec", "Exec calls")),
    Case("__import__ by name", "return __import__('os')", Rejected("__import__")),
    Case("print(file=...)", "print('x', file=step)", Raises("TypeError", message="file=")),
    Case("print with a non-string sep", "print('x', sep=step)", Raises("TypeError")),
    Case("import os", "import os\nreturn dict(os.environ)", Rejected("import os")),
    Case(
        "import inside a function",
        "def f():\n    import subprocess\nreturn 1",
        Rejected("import subprocess"),
    ),
    Case("from os import *", "return 1", Rejected("from os import *"), prelude="from os import *"),
    Case(
        "a relative import",
        "return 1",
        Rejected("from . import"),
        wasm=Rejected("from . import", "relative import"),
        prelude="from . import secrets",
    ),
    Case(
        "a dotted import of an allowed module",
        "import json.decoder\nreturn 1",
        Rejected("import json.decoder"),
    ),
    Case(
        "a submodule from an allowed module",
        "from json import decoder\nreturn 1",
        Rejected("from json import decoder", "has no 'decoder'"),
    ),
    # The C code of datetime imports these through the running frame's __import__ (served to
    # it); tenant code still cannot import them.
    Case(
        "what datetime's C code imports",
        "d = datetime.datetime.strptime('2020-01-02', '%Y-%m-%d')\n"
        "return [d.strftime('%d/%m/%Y'), list(d.timetuple())[:3]]",
        Returns(["02/01/2020", [2020, 1, 2]]),
    ),
    Case("import time", "import time\nreturn time.time()", Rejected("import time")),
    Case("import _strptime", "import _strptime\nreturn 1", Rejected("import _strptime")),
    Case("functools", "import functools\nreturn 1", Rejected("import functools")),
    Case(
        "operator.attrgetter",
        "import operator\nreturn operator.attrgetter('__class__')(1)",
        Rejected("import operator"),
    ),
    Case(
        "importlib",
        "import importlib\nreturn importlib.import_module('os')",
        Rejected("import importlib"),
    ),
    Case(
        "treadle internals",
        "from treadle import errors\nreturn 1",
        Rejected("from treadle import errors", "has no 'errors'"),
    ),
    Case(
        "the Wasm guest's host bindings",
        "from treadle_guest import _host\nreturn 1",
        Rejected("from treadle_guest import _host"),
    ),
]
