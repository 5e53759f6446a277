"""What tenant Python code holds: ``step``, the event, ``self.env``, ``ctx`` and step handles.

Thin wrappers over :class:`~sandbox._journal.Replay`. Everything internal is underscore-named,
which restricted code cannot reach, and every ``repr`` is fixed text so that ``f"{step!r}"``
shows nothing of the host.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from sandbox._journal import Attempt, Replay
from sandbox._records import iso
from treadle.errors import NonRetryableError, StepError


class Step:
    """The ``step`` argument of ``run(self, event, step)`` (DESIGN §2)."""

    __slots__ = ("_replay",)

    def __init__(self, replay: Replay) -> None:
        self._replay = replay

    def __repr__(self) -> str:
        return "<step>"

    def do(
        self,
        name: str,
        fn: Callable[..., Any] | None = None,
        *,
        retries: dict[str, Any] | None = None,
        timeout: Any = None,
        concurrent: bool = False,
        depends: Iterable[StepHandle] = (),
        rollback: Callable[..., Any] | None = None,
    ) -> Any:
        """Run ``fn`` once, durably; without ``fn``, a decorator that returns a step handle.

        ``concurrent`` and ``rollback`` are accepted for forward compatibility: dependencies
        resolve one after the other for now, and rollback handlers are not run yet.
        """
        options = _Options(name, retries, timeout, _handles(depends), concurrent, rollback)
        if fn is None:
            return _Decorator(self, options)
        if not callable(fn):
            raise TypeError(f"step.do({name!r}, fn): fn must be callable")
        return self._run(options, fn)

    def sleep(self, name: str, duration: Any) -> None:
        self._replay.sleep(name, duration)

    def sleep_until(self, name: str, when: Any) -> None:
        self._replay.sleep_until(name, when)

    def wait_for_event(self, name: str, *, type: str, timeout: Any = "24 hours") -> Any:
        return self._replay.wait_for_event(name, type, timeout)

    def _run(self, options: _Options, fn: Callable[..., Any]) -> Any:
        arguments = {_function_name(h._fn): h() for h in options.depends}
        wants_ctx = _accepts_ctx(fn)

        def body(attempt: Attempt) -> Any:
            if wants_ctx:
                return fn(**arguments, ctx=Context(attempt))
            return fn(**arguments)

        return self._replay.do(options.name, body, options.retries, options.timeout)


class _Options:
    __slots__ = ("depends", "name", "retries", "timeout")

    def __init__(
        self,
        name: str,
        retries: Any,
        timeout: Any,
        depends: tuple[StepHandle, ...],
        concurrent: Any,
        rollback: Any,
    ) -> None:
        if not isinstance(concurrent, bool):
            raise TypeError("step.do: concurrent must be True or False")
        if rollback is not None and not callable(rollback):
            raise TypeError("step.do: rollback must be callable")
        self.name = name
        self.retries = retries
        self.timeout = timeout
        self.depends = depends


class _Decorator:
    __slots__ = ("_options", "_step")

    def __init__(self, step: Step, options: _Options) -> None:
        self._step = step
        self._options = options

    def __repr__(self) -> str:
        return f"<step.do decorator {self._options.name!r}>"

    def __call__(self, fn: Callable[..., Any]) -> StepHandle:
        if not callable(fn):
            raise TypeError(f"@step.do({self._options.name!r}) must decorate a function")
        return StepHandle(self._step, self._options, fn)


class StepHandle:
    """A decorated step: calling it runs (or replays) the step once and remembers the result."""

    __slots__ = ("_error", "_fn", "_options", "_settled", "_step", "_value")

    def __init__(self, step: Step, options: _Options, fn: Callable[..., Any]) -> None:
        self._step = step
        self._options = options
        self._fn = fn
        self._settled = False
        self._value: Any = None
        self._error: StepError | None = None

    def __repr__(self) -> str:
        return f"<step handle {self._options.name!r}>"

    def __call__(self) -> Any:
        if not self._settled:
            try:
                self._value = self._step._run(self._options, self._fn)
            except StepError as exc:
                self._error = exc
            self._settled = True
        if self._error is not None:
            raise self._error
        return self._value


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


class StepInfo:
    __slots__ = ("count", "name")

    def __init__(self, name: str, count: int) -> None:
        self.name = name
        self.count = count

    def __repr__(self) -> str:
        return f"<step {self.name!r} #{self.count}>"


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


class Env:
    """``self.env``: the tenant's bindings. ``vars`` is read-only."""

    __slots__ = ("vars",)

    def __init__(self, vars: Mapping[str, Any]) -> None:
        self.vars = MappingProxyType(dict(vars))

    def __repr__(self) -> str:
        return "<env>"

    def fetch(self, *args: Any, **kwargs: Any) -> Any:
        raise NonRetryableError("env.fetch is not available in this version of treadle")


def _handles(depends: Iterable[Any]) -> tuple[StepHandle, ...]:
    handles = tuple(depends)
    for handle in handles:
        if not isinstance(handle, StepHandle):
            raise TypeError(
                "step.do: depends must list step handles (functions decorated with @step.do)"
            )
    return handles


def _accepts_ctx(fn: Callable[..., Any]) -> bool:
    try:
        return "ctx" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature take no ctx
        return False


def _function_name(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__name__", "value"))
