"""``except*`` and exception groups, and what exceptions carry out of the host."""

from __future__ import annotations

from tests.sandbox.escapes import Case, Raises, Rejected, Returns, Suspends

FAIL_ONCE = """
def fail():
    raise ValueError("no")
"""

CASES = [
    Case("except*", "try:\n    pass\nexcept* ValueError:\n    pass", Rejected("try:")),
    Case("ExceptionGroup", "return ExceptionGroup('x', [ValueError()])", Raises("NameError")),
    Case(
        "BaseExceptionGroup", "return BaseExceptionGroup('x', [ValueError()])", Raises("NameError")
    ),
    Case(
        "StepError fields",
        "try:\n    step.do('f', fail, retries={'limit': 0})\nexcept StepError as exc:\n"
        "    return [exc.name, exc.message, list(exc.args), exc.details, exc.code]",
        Returns(["ValueError", "no", ["no"], {}, "step.failed"]),
        prelude=FAIL_ONCE,
    ),
    Case(
        "StepError __context__",
        "try:\n    step.do('f', fail, retries={'limit': 0})\nexcept StepError as exc:\n"
        "    return getattr(exc, '__cont' + 'ext__')",
        Raises("AttributeError"),
        prelude=FAIL_ONCE,
    ),
    Case(
        "the args of a host error",
        "try:\n    step.do('x', 5)\nexcept TypeError as exc:\n    return list(exc.args)",
        Returns(["step.do('x', fn): fn must be callable"]),
    ),
    Case(
        "AttributeError.obj",
        "try:\n    step.missing\nexcept AttributeError as exc:\n    return exc.obj",
        Raises("AttributeError", message="'obj' is not allowed"),
    ),
    Case(
        "catching the suspend",
        "try:\n    step.sleep('nap', 60)\nexcept BaseException as exc:\n"
        "    caught = list(exc.args)\nreturn {'caught': caught}",
        Suspends(),
        # No suspend inside Wasm: the host traps the guest, which cannot catch it.
        wasm=Suspends(),
    ),
    Case("raising SystemExit", "raise SystemExit(0)", Raises("SystemExit")),
    Case("raising KeyboardInterrupt", "raise KeyboardInterrupt()", Raises("KeyboardInterrupt")),
]
