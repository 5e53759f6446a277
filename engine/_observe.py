"""What the engine tells whoever watches it: claims, attempts and replays, as they happen.

The engine knows nothing of metrics libraries; the platform hands it an :class:`Observer`
that turns these calls into its metrics (``dispatcher._metrics``). The default observes
nothing. Calls come from the engine's threads and must be quick and never raise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from treadle.runtime import ErrorValue


@dataclass(frozen=True)
class Woken:
    """An instance a claim took: its tenant, how long it had been due, and whether it was
    woken from a wait (a timer or an event) rather than taken from the queue or over from a
    stalled replay."""

    tenant_id: int
    waited: float
    from_wait: bool


@dataclass(frozen=True)
class Attempt:
    """A step attempt that ended and was committed: the attempt ``number`` of occurrence
    ``count`` of step ``step`` (``kind``: ``do`` or ``rollback``) of an instance."""

    tenant_id: int
    workflow: str
    success: bool
    seconds: float
    instance_id: str = ""
    step: str = ""
    count: int = 1
    kind: str = "do"
    number: int = 1
    started_at: float = 0.0
    error: ErrorValue | None = None
    trace: RunTrace | None = None


@dataclass(frozen=True)
class Waited:
    """A sleep or a wait for an event (``kind``) that ended (``status``: complete, or errored
    when a wait timed out) and was committed at ``ended_at``."""

    tenant_id: int
    workflow: str
    instance_pk: int
    instance_id: str
    step: str
    count: int
    kind: str
    status: str
    ended_at: float
    trace: RunTrace | None


@dataclass(frozen=True)
class RunTrace:
    """The trace of an instance's run: its ids, and the caller's span it hangs from."""

    trace_id: str
    span_id: str
    parent_span_id: str | None


def run_trace(
    trace_id: str | None, span_id: str | None, parent_span_id: str | None
) -> RunTrace | None:
    """The trace of a run from an instance's stored ids (None when it has none)."""
    return RunTrace(trace_id, span_id, parent_span_id) if trace_id and span_id else None


@dataclass(frozen=True)
class Ended:
    """An instance that ended: complete or errored by a replay, or terminated."""

    tenant_id: int
    workflow: str
    instance_id: str
    status: str
    error: ErrorValue | None
    created_at: float
    ended_at: float
    trace: RunTrace | None


class Observer:
    def claimed(self, woken: Sequence[Woken]) -> None:
        """A claim took these instances."""

    def attempted(self, attempts: Sequence[Attempt]) -> None:
        """A commit made these attempts durable."""

    def replayed(self, sandbox: str, seconds: float) -> None:
        """A replay ended (whatever its outcome) after ``seconds`` in ``sandbox``."""

    def ended(self, run: Ended) -> None:
        """An instance ended (a replay's commit, or a terminate)."""

    def waited(self, waits: Sequence[Waited]) -> None:
        """A commit recorded the end of these sleeps and waits."""


class Observers(Observer):
    """Several observers, each told everything."""

    def __init__(self, *observers: Observer) -> None:
        self._observers = observers

    def claimed(self, woken: Sequence[Woken]) -> None:
        for observer in self._observers:
            observer.claimed(woken)

    def attempted(self, attempts: Sequence[Attempt]) -> None:
        for observer in self._observers:
            observer.attempted(attempts)

    def replayed(self, sandbox: str, seconds: float) -> None:
        for observer in self._observers:
            observer.replayed(sandbox, seconds)

    def ended(self, run: Ended) -> None:
        for observer in self._observers:
            observer.ended(run)

    def waited(self, waits: Sequence[Waited]) -> None:
        for observer in self._observers:
            observer.waited(waits)
