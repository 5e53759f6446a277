"""What the engine tells whoever watches it: claims, attempts and replays, as they happen.

The engine knows nothing of metrics libraries; the platform hands it an :class:`Observer`
that turns these calls into its metrics (``dispatcher._metrics``). The default observes
nothing. Calls come from the engine's threads and must be quick and never raise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


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
    """A step attempt that ended and was committed."""

    tenant_id: int
    workflow: str
    success: bool
    seconds: float


class Observer:
    def claimed(self, woken: Sequence[Woken]) -> None:
        """A claim took these instances."""

    def attempted(self, attempts: Sequence[Attempt]) -> None:
        """A commit made these attempts durable."""

    def replayed(self, sandbox: str, seconds: float) -> None:
        """A replay ended (whatever its outcome) after ``seconds`` in ``sandbox``."""
