"""Grammar of newer Pythons: 3.12's type parameters, ``type`` statements and f-strings parsed
by the tokenizer (PEP 695, PEP 701), 3.13's defaults of type parameters and class attributes
(``__static_attributes__``, ``__firstlineno__``), and the frame and generator attributes that
3.12 and 3.13 added.

The restricted backend compiles with the server's Python: what that Python cannot parse is
refused as a SyntaxError, what it can is refused by the policy or by the attribute guard. The
Wasm backend runs CPython 3.14 whatever the server runs, so its outcome does not depend on it.
"""

from __future__ import annotations

import sys

from tests.sandbox.escapes import Case, Expectation, Raises, Rejected

NOT_ALLOWED = Raises("AttributeError")
UNDERSCORE = 'starts with "_"'
GENERATOR = """
def gen():
    yield 1
"""


def since(version: tuple[int, int], then: Expectation, before: Expectation) -> Expectation:
    """``then`` on a server Python of ``version`` or newer, else ``before``."""
    return then if sys.version_info >= version else before


def typing_syntax(fragment: str, message: str, version: tuple[int, int] = (3, 12)) -> Expectation:
    """Refused by the policy where the server's Python parses it, else a SyntaxError."""
    return since(version, Rejected(fragment, message), Rejected(fragment, "SyntaxError"))


TYPE_STATEMENT = "type statements are not allowed"
TYPE_PARAMETERS = "type parameters (def f[T], class C[T]) are not allowed"

CASES = [
    Case(
        "type statement",
        "return 1",
        typing_syntax("type Alias", TYPE_STATEMENT),
        prelude="type Alias = int",
    ),
    Case(
        "type statement: a lazy value reaching a dunder",
        "type Alias = step.__class__\nreturn 1",
        typing_syntax("type Alias", TYPE_STATEMENT),
    ),
    Case(
        "type parameters of a function",
        "return ident(1)",
        typing_syntax("def ident[T]", TYPE_PARAMETERS),
        prelude="def ident[T](x: T) -> T:\n    return x",
    ),
    Case(
        "type parameters of a class",
        "return Box()",
        typing_syntax("class Box[T]", TYPE_PARAMETERS),
        prelude="class Box[T]:\n    pass",
    ),
    Case(
        "a TypeVarTuple",
        "return pack(1, 2)",
        typing_syntax("def pack[*Ts]", TYPE_PARAMETERS),
        prelude="def pack[*Ts](*args):\n    return args",
    ),
    Case(
        "a ParamSpec",
        "return wrap(len)",
        typing_syntax("def wrap[**P]", TYPE_PARAMETERS),
        prelude="def wrap[**P](fn):\n    return fn",
    ),
    Case(
        "a type parameter's bound reaching the host",
        "return bound(1)",
        typing_syntax("def bound[T", TYPE_PARAMETERS),
        prelude="def bound[T: WorkflowEntrypoint.__class__](x):\n    return x",
    ),
    Case(
        "a type parameter's default (3.13)",
        "return default(1)",
        typing_syntax("def default[T", TYPE_PARAMETERS, version=(3, 13)),
        prelude="def default[T = WorkflowEntrypoint](x):\n    return x",
    ),
    Case(
        "__type_params__ by a computed name",
        "def f():\n    pass\nreturn getattr(f, '__type_' + 'params__')",
        NOT_ALLOWED,
    ),
    Case(
        "f-string: an f-string in it with the same quotes",
        "return f'{f'{step.__class__}'}'",
        since((3, 12), Rejected("return f'", UNDERSCORE), Rejected("return f'", "SyntaxError")),
    ),
    Case(
        "f-string: a comment between a name and its attribute",
        "return f'''{\n    step  # a comment\n    .__class__\n}'''",
        since((3, 12), Rejected("step  # a comment", UNDERSCORE), Rejected("}'''", "SyntaxError")),
    ),
    Case(
        "f-string: an escape in the expression spells a dunder",
        r"""return getattr(step, f'{"\x5f\x5fclass__"}')""",
        since((3, 12), NOT_ALLOWED, Rejected("return getattr", "SyntaxError")),
    ),
    Case(
        "f-string: a format spec that is an f-string",
        "return f'{1:{f'{step.__class__}'}}'",
        since((3, 12), Rejected("return f'", UNDERSCORE), Rejected("return f'", "SyntaxError")),
    ),
    Case("__static_attributes__", "return Probe.__static_attributes__", Rejected("Probe.__static")),
    Case(
        "__static_attributes__ by a computed name",
        "return getattr(Probe, '__static_' + 'attributes__')",
        NOT_ALLOWED,
    ),
    Case(
        "__firstlineno__ by a computed name",
        "return getattr(Probe, '__first' + 'lineno__')",
        NOT_ALLOWED,
    ),
    Case("generator: gi_suspended", "return gen().gi_suspended", NOT_ALLOWED, prelude=GENERATOR),
    Case(
        "frame: f_locals of a generator's frame",
        "return getattr(getattr(gen(), 'gi_' + 'frame'), 'f_locals')",
        NOT_ALLOWED,
        prelude=GENERATOR,
    ),
]
