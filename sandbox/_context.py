"""``ctx``: what a step body, or a rollback handler, may know about the attempt it runs in."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from inspect import CO_VARKEYWORDS
from types import FunctionType
from typing import Any

from sandbox._journal import Attempt, Key


class StepInfo:
    __slots__ = ("count", "name")

    def __init__(self, name: str, count: int) -> None:
        self.name = name
        self.count = count

    def __repr__(self) -> str:
        return f"<step {self.name!r} #{self.count}>"


class Context:
    """``ctx``: handed to a step function that has a parameter named ``ctx``."""

    __slots__ = ("attempt", "config", "idempotency_key", "step")

    def __init__(self, attempt: Attempt) -> None:
        self.attempt = attempt.number
        self.step = StepInfo(attempt.name, attempt.count)
        self.config = {
            "retries": dict(attempt.config["retries"]),
            "timeout": attempt.config["timeout"],
        }
        self.idempotency_key = attempt.idempotency_key

    def __repr__(self) -> str:
        return f"<ctx of step {self.step.name!r} attempt {self.attempt}>"


class RollbackContext(Context):
    """The ``ctx`` of a rollback handler: the step it undoes, that step's recorded ``output``,
    and the ``error`` (``{"name", "message"}``) the instance fails with."""

    __slots__ = ("error", "output")

    def __init__(self, attempt: Attempt, step: Key, error: dict[str, str], output: Any) -> None:
        super().__init__(attempt)
        self.step = StepInfo(*step)
        self.error = dict(error)
        self.output = output

    def __repr__(self) -> str:
        return f"<ctx of the rollback of step {self.step.name!r} attempt {self.attempt}>"


def accepts_arguments(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` takes any parameter (a rollback handler's ``ctx``, whatever its name)."""
    names, any_keyword = parameters(fn)
    return bool(names) or any_keyword


def parameters(fn: Callable[..., Any]) -> tuple[tuple[str, ...], bool]:
    """The names ``fn`` accepts as keywords, and whether it takes ``**kwargs`` too."""
    if type(fn) is FunctionType:
        # What inspect.signature would say, read off the code object: a step function is made
        # afresh on every replay, and inspect costs several microseconds each time.
        code = fn.__code__
        named = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
        return named, bool(code.co_flags & CO_VARKEYWORDS)
    try:
        found = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature take no ctx
        return (), False
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = tuple(p.name for p in found if p.kind in keyword)
    return names, any(p.kind == inspect.Parameter.VAR_KEYWORD for p in found)
