"""``ctx``: what a step body, or a rollback handler, may know about the attempt it runs in;
the ``event`` of ``run()``; and how a step function is called (its dependencies' values, ctx).

Shared by the sandbox's step runtime and the local test harness (``treadle.testing``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from inspect import CO_VARKEYWORDS
from types import FunctionType
from typing import Any

from treadle.runtime._records import ErrorValue, iso
from treadle.runtime._retries import StepConfig
from treadle.runtime._values import JSONValue

Key = tuple[str, int]
# A step function called with its dependencies' values (by parameter name) and its attempt.
Invoke = Callable[[dict[str, JSONValue], "Attempt"], Any]


@dataclass(frozen=True)
class Attempt:
    """What a step body may know about the attempt it runs in (``ctx``)."""

    name: str
    count: int
    number: int
    config: StepConfig
    idempotency_key: str


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

    def __init__(self, attempt: Attempt, step: Key, error: ErrorValue, output: Any) -> None:
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


class Event:
    """The ``event`` argument of ``run()``: the instance's params and identity."""

    __slots__ = ("instance_id", "payload", "timestamp", "workflow")

    def __init__(self, request: Mapping[str, Any]) -> None:
        self.payload = request["params"]
        self.instance_id = request["instance_id"]
        self.workflow = request["workflow"]
        self.timestamp = iso(float(request["created_at"]))

    def __repr__(self) -> str:
        return f"<event of instance {self.instance_id!r}>"


def invoker(name: str, fn: Callable[..., Any], depends: Sequence[str]) -> Invoke:
    """How to call step function ``fn``: with the values of the dependencies (named in
    ``depends``) it has parameters for, and ``ctx``.

    A dependency ``fn`` has no parameter for is still waited for, which makes fan-in over
    handles made in a loop possible: ``def all_done(): ...``, then call the handles.
    """
    names, any_keyword = parameters(fn)
    wants_ctx = "ctx" in names
    if not depends:
        if wants_ctx:
            return lambda arguments, attempt: fn(ctx=Context(attempt))
        return lambda arguments, attempt: fn()
    given = [d for d in depends if any_keyword or d in names]
    for arg in [*given, "ctx"] if wants_ctx else given:
        if given.count(arg) + (wants_ctx and arg == "ctx") > 1:
            raise TypeError(
                f"step.do({name!r}): several values would be passed as {arg!r}; "
                "give the dependencies' functions different names"
            )
    accepted = set(given)

    def invoke(arguments: dict[str, JSONValue], attempt: Attempt) -> Any:
        values = {k: v for k, v in arguments.items() if k in accepted}
        return fn(**values, ctx=Context(attempt)) if wants_ctx else fn(**values)

    return invoke


def function_name(fn: Callable[..., Any]) -> str:
    """The name dependents receive ``fn``'s value under."""
    return str(getattr(fn, "__name__", "value"))
