"""Frames: generators, coroutines and tracebacks lead to frames, whose ``f_globals``,
``f_builtins`` and ``f_back`` are the host's."""

from __future__ import annotations

from tests.sandbox.escapes import Case, Raises, Rejected, Returns

GENERATOR = """
def gen():
    yield 1
"""
NOT_ALLOWED = Raises("AttributeError")
CAUGHT = "try:\n    1 / 0\nexcept ZeroDivisionError as exc:\n    {}"

CASES = [
    Case("generator: gi_frame", "return (x for x in [1]).gi_frame.f_globals", Rejected("gi_frame")),
    Case(
        "generator: gi_frame by a computed name",
        "return getattr(getattr((x for x in [1]), 'gi_' + 'frame'), 'f_glo' + 'bals')",
        NOT_ALLOWED,
    ),
    Case(
        "generator: gi_code",
        "return getattr(gen(), 'gi_' + 'code')",
        NOT_ALLOWED,
        prelude=GENERATOR,
    ),
    Case(
        "generator: gi_yieldfrom",
        "return gen().gi_yieldfrom",
        Rejected("gi_yieldfrom"),
        prelude=GENERATOR,
    ),
    Case(
        "generator: any attribute but send/throw/close",
        "return getattr(gen(), 'gi_running')",
        NOT_ALLOWED,
        prelude=GENERATOR,
    ),
    Case(
        "generator: throw() hands back no traceback",
        "g = gen()\nnext(g)\ntry:\n    g.throw(ValueError('x'))\nexcept ValueError as exc:\n"
        "    return getattr(exc, '__trace' + 'back__')",
        NOT_ALLOWED,
        prelude=GENERATOR,
    ),
    Case(
        "coroutine: async def",
        "return 1",
        Rejected("async def"),
        prelude="async def co():\n    return 1",
    ),
    Case(
        "async generator",
        "return 1",
        Rejected("async def"),
        prelude="async def agen():\n    yield 1",
    ),
    Case(
        "cr_frame", "return co().cr_frame", Rejected("cr_frame"), prelude="def co():\n    return 1"
    ),
    Case(
        "ag_frame by a computed name",
        "return getattr(gen(), 'ag_' + 'frame')",
        NOT_ALLOWED,
        prelude=GENERATOR,
    ),
    Case("frame: f_back", "return gen().f_back", Rejected("f_back"), prelude=GENERATOR),
    Case(
        "traceback: __traceback__",
        CAUGHT.format("return exc.__traceback__.tb_frame"),
        Rejected("return exc.__traceback__"),
    ),
    Case(
        "traceback: by a computed name",
        CAUGHT.format("return getattr(getattr(exc, '__trace' + 'back__'), 'tb_frame')"),
        NOT_ALLOWED,
    ),
    Case(
        "traceback: tb_frame and tb_next",
        CAUGHT.format("return getattr(exc, 'tb_next')"),
        NOT_ALLOWED,
    ),
    Case(
        "traceback: with_traceback",
        CAUGHT.format("return list(exc.with_traceback(None).args)"),
        Returns(["division by zero"]),
    ),
    Case("sys.exc_info", "import sys\nreturn sys.exc_info()", Rejected("import sys")),
    Case(
        "traceback module",
        "import traceback\nreturn traceback.format_stack()",
        Rejected("import traceback"),
    ),
    Case("inspect module", "import inspect\nreturn inspect.stack()", Rejected("import inspect")),
    Case(
        "__context__ and __cause__",
        CAUGHT.format("return getattr(exc, '__con' + 'text__') or getattr(exc, '__cause__')"),
        NOT_ALLOWED,
    ),
    Case(
        "a lambda's default argument and __defaults__",
        "f = lambda s=step: s\nreturn getattr(f, '__defa' + 'ults__')",
        NOT_ALLOWED,
    ),
    Case(
        "a decorator reaching __code__",
        "def deco(fn):\n    return getattr(fn, '__co' + 'de__')\n"
        "@deco\ndef target():\n    pass\nreturn target",
        NOT_ALLOWED,
    ),
]
