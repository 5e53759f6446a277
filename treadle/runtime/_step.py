"""What tenant Python code holds: ``step``, the event and step handles (``self.env`` and
``ctx`` live in ``_env`` and ``_context``).

Thin wrappers over a :class:`~treadle.runtime._runtime.Runtime` (the in-process
:class:`~treadle.runtime._journal.Replay`, or the Wasm guest's runtime over host calls); fan-out
and fan-in are in ``_fanout``, rollbacks in ``_saga``. Everything internal is underscore-named,
which restricted code cannot reach, and every ``repr`` is fixed text so that ``f"{step!r}"``
shows nothing of the host.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypedDict

from treadle.runtime._context import Context, Event, Key, StepInfo, function_name, invoker
from treadle.runtime._durations import Duration
from treadle.runtime._env import Env
from treadle.runtime._fanout import Node, resolve
from treadle.runtime._links import approval_link
from treadle.runtime._retries import RetryOptions, StepConfig, resolve_rollback_config
from treadle.runtime._runtime import Runtime
from treadle.runtime._saga import Saga

__all__ = ["Context", "Env", "Event", "RollbackOptions", "Step", "StepHandle", "StepInfo"]


class RollbackOptions(TypedDict, total=False):
    """``rollback_config`` as tenant code writes it: the rollback handler's own retries and
    per-attempt timeout (the defaults of a step otherwise)."""

    retries: RetryOptions
    timeout: Duration


class Step:
    """The ``step`` argument of ``run(self, event, step)`` (see ``docs/workflows.md``)."""

    __slots__ = ("_replay",)

    def __init__(self, replay: Runtime) -> None:
        self._replay = replay

    def __repr__(self) -> str:
        return "<step>"

    def do(
        self,
        name: str,
        fn: Callable[..., Any] | None = None,
        *,
        retries: RetryOptions | None = None,
        timeout: Any = None,
        concurrent: bool = False,
        depends: Iterable[StepHandle] = (),
        rollback: Callable[..., Any] | None = None,
        rollback_config: RollbackOptions | None = None,
    ) -> Any:
        """Run ``fn`` once, durably; without ``fn``, a decorator that returns a step handle.

        Dependencies (``depends``) run first, ``concurrent=True`` ones in parallel, and ``fn``
        receives their results as arguments named after their functions. ``rollback`` undoes
        the completed step if the instance fails (``rollback_config``: its retries, timeout).
        """
        options = _Options(
            name, retries, timeout, _handles(depends), concurrent, rollback, rollback_config
        )
        if fn is None:
            return _Decorator(self._replay, options)
        if not callable(fn):
            raise TypeError(f"step.do({name!r}, fn): fn must be callable")
        node = options.node(self._replay, fn)
        resolve(self._replay, node)
        return _result(node)

    def sleep(self, name: str, duration: Any) -> None:
        self._replay.sleep(name, duration)

    def sleep_until(self, name: str, when: Any) -> None:
        self._replay.sleep_until(name, when)

    def wait_for_event(self, name: str, *, type: str, timeout: Any = "24 hours") -> Any:
        return self._replay.wait_for_event(name, type, timeout)

    def approval_link(self, name: str, type: str, ttl: Any = "7 days", uses: int = 1) -> Any:
        """A link that sends an event of ``type`` to this instance without an API key:
        ``{"url", "expires_at"}``, for ``uses`` sends within ``ttl``. A step of its own,
        ``name``: a replay returns the same link, and a retried mint replaces the last."""
        return approval_link(self._replay, name, type, ttl, uses)


class _Options:
    __slots__ = (
        "concurrent",
        "depends",
        "name",
        "retries",
        "rollback",
        "rollback_config",
        "timeout",
    )

    def __init__(
        self,
        name: str,
        retries: Any,
        timeout: Any,
        depends: tuple[StepHandle, ...],
        concurrent: Any,
        rollback: Any,
        rollback_options: Any,
    ) -> None:
        if not isinstance(concurrent, bool):
            raise TypeError("step.do: concurrent must be True or False")
        if rollback is not None and not callable(rollback):
            raise TypeError("step.do: rollback must be callable")
        if rollback is None and rollback_options is not None:
            raise TypeError("step.do: rollback_config needs a rollback handler")
        self.name = name
        self.retries = retries
        self.timeout = timeout
        self.depends = depends
        self.concurrent = concurrent
        self.rollback = rollback
        self.rollback_config: StepConfig | None = (
            None if rollback is None else resolve_rollback_config(rollback_options)
        )

    def node(self, replay: Runtime, fn: Callable[..., Any]) -> Node:
        on_complete: Callable[[Key], None] | None = None
        if self.rollback is not None and self.rollback_config is not None:
            handler, config = self.rollback, self.rollback_config

            def on_complete(key: Key) -> None:
                Saga.of(replay).register(key, handler, config)

        depends = tuple(h._node for h in self.depends)
        return Node(
            self.name,
            (self.retries, self.timeout, self.concurrent),
            depends,
            invoker(self.name, fn, [d.arg_name for d in depends]),
            function_name(fn),
            on_complete,
        )


class _Decorator:
    __slots__ = ("_options", "_replay")

    def __init__(self, replay: Runtime, options: _Options) -> None:
        self._replay = replay
        self._options = options

    def __repr__(self) -> str:
        return f"<step.do decorator {self._options.name!r}>"

    def __call__(self, fn: Callable[..., Any]) -> StepHandle:
        if not callable(fn):
            raise TypeError(f"@step.do({self._options.name!r}) must decorate a function")
        return StepHandle(self._replay, self._options.node(self._replay, fn))


class StepHandle:
    """A decorated step: calling it runs (or replays) the step once and remembers the result;
    its dependencies run first, concurrent ones in parallel."""

    __slots__ = ("_node", "_replay")

    def __init__(self, replay: Runtime, node: Node) -> None:
        self._replay = replay
        self._node = node

    def __repr__(self) -> str:
        return f"<step handle {self._node.name!r}>"

    def __call__(self) -> Any:
        resolve(self._replay, self._node)
        return _result(self._node)


def _handles(depends: Iterable[Any]) -> tuple[StepHandle, ...]:
    handles = tuple(depends)
    for handle in handles:
        if not isinstance(handle, StepHandle):
            raise TypeError(
                "step.do: depends must list step handles (functions decorated with @step.do)"
            )
    return handles


def _result(node: Node) -> Any:
    if node.error is not None:
        raise node.error
    return node.value
