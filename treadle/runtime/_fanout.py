"""Fan-out and fan-in of decorated steps: ``concurrent=True`` and ``depends=[...]``.

Calling a step settles its unsettled dependencies first. Keys (name, occurrence) are assigned
when the step is called, to all of them at once, depth first in ``depends`` order: program
order, never the order in which threads finish, so every replay assigns the same keys whatever
ran in parallel. Then, until the called step is settled:

- steps with a final record settle from it (a completed one registers its rollback);
- a step whose dependency failed for good fails with that dependency's error, and nothing
  more starts (bodies already running finish and are recorded);
- otherwise the first ready step in program order decides: a plain step runs alone, a
  concurrent one runs together with every other ready concurrent step, in threads;
- a retry that is not due yet suspends the replay once nothing else in the batch can run.

In rollback mode nothing runs: the replay stops at the first step without a final record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from treadle.runtime._context import Attempt, Invoke, Key
from treadle.runtime._journal import StepCall
from treadle.runtime._runtime import Runtime
from treadle.runtime.errors import StepError


class Node:
    """One step in the graph: a decorated function, or a ``step.do(name, fn, ...)`` call."""

    __slots__ = (
        "arg_name", "call", "concurrent", "depends", "error", "invoke", "name", "on_complete",
        "retries", "settled", "timeout", "value",
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        options: tuple[Any, Any, bool],
        depends: tuple[Node, ...],
        invoke: Invoke,
        arg_name: str,
        on_complete: Callable[[Key], None] | None,
    ) -> None:
        self.name = name
        self.retries, self.timeout, self.concurrent = options
        self.depends = depends
        self.invoke = invoke  # the function, given its dependencies' values by name and ctx
        self.arg_name = arg_name  # the parameter name dependents receive this value under
        self.on_complete = on_complete
        self.call: StepCall | None = None
        self.settled = False
        self.value: Any = None
        self.error: StepError | None = None

    def body(self, attempt: Attempt) -> Any:
        return self.invoke({d.arg_name: d.value for d in self.depends}, attempt)

    def succeed(self, value: Any) -> None:
        self.settled, self.value = True, value
        if self.on_complete is not None and self.call is not None:
            self.on_complete(self.call.key)

    def fail(self, error: StepError) -> None:
        self.settled, self.error = True, error


def resolve(replay: Runtime, root: Node) -> None:
    """Settle ``root`` (value or error), running what it needs; may suspend the replay."""
    if root.settled:
        return
    replay.check_call(root.name, "do")  # a step keyed earlier may still be called in a body
    if not root.depends:
        _open(replay, root)
        _run_alone(replay, root)
        return
    nodes = _closure(root)
    for node in nodes:
        _open(replay, node)
    while not root.settled:
        _settle_recorded(nodes)
        _propagate_failures(nodes)
        if root.settled:
            return
        batch, wakes = _next_batch(replay, nodes)
        if replay.mode == "rollback" and not batch:
            replay.stop()  # a step that ran would stop the replay where it begins
        if not batch:
            replay.suspend_until(min(wakes))
        if len(batch) == 1:
            _run_alone(replay, batch[0])
        else:
            replay.run_attempts([(n.call, n.body) for n in batch if n.call is not None])


def _open(replay: Runtime, node: Node) -> None:
    if node.call is None:
        node.call = replay.open_step(node.name, node.retries, node.timeout)


def _run_alone(replay: Runtime, node: Node) -> None:
    assert node.call is not None
    try:
        value = replay.run_call(node.call, node.body)
    except StepError as exc:
        node.fail(exc)
    else:
        node.succeed(value)


def _closure(root: Node) -> list[Node]:
    """``root`` and its unsettled dependencies, dependencies first, in ``depends`` order."""
    seen: set[int] = set()
    ordered: list[Node] = []

    def visit(node: Node) -> None:
        if node.settled or id(node) in seen:
            return
        seen.add(id(node))
        for dependency in node.depends:
            visit(dependency)
        ordered.append(node)

    visit(root)
    return ordered


def _settle_recorded(nodes: list[Node]) -> None:
    for node in nodes:
        record = node.call.record if node.call is not None else None
        if node.settled or record is None:
            continue
        if record["status"] == "complete":
            node.succeed(record["output"])
        elif record["status"] == "errored":
            failure: Mapping[str, object] = record["error"] or {}
            node.fail(StepError(str(failure.get("message", "")), name=str(failure.get("name"))))


def _propagate_failures(nodes: list[Node]) -> None:
    """A step whose dependency failed for good fails with the first such error, in order."""
    for node in nodes:  # dependencies come first, so failures travel the whole way down
        if not node.settled:
            broken = next((d.error for d in node.depends if d.error is not None), None)
            if broken is not None:
                node.fail(broken)


def _next_batch(replay: Runtime, nodes: list[Node]) -> tuple[list[Node], list[float]]:
    """The steps to run now, and the wake times of candidates whose retry is not due."""
    ready = [n for n in nodes if not n.settled and all(d.settled for d in n.depends)]
    first = ready[0]
    candidates = [n for n in ready if n.concurrent] if first.concurrent else [first]
    now = replay.now()
    batch, wakes = [], []
    for node in candidates:
        record = node.call.record if node.call is not None else None
        wake_at = record.get("wake_at") if record and record["status"] == "waiting" else None
        if wake_at is not None and wake_at > now:
            wakes.append(float(wake_at))
        else:
            batch.append(node)
    return batch, wakes
