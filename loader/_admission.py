"""Turns to check uploaded code: a few at once, fair between tenants, and a short queue.

Checking an upload runs its module in a sandbox worker, which takes up to the check's deadline
when the module's top level never ends. So at most ``checks`` run at once in a process, at most
``per_tenant`` of them a tenant's; up to ``queued_per_tenant`` more of a tenant wait for a turn,
for at most ``wait_seconds``. Any other upload is refused at once with :class:`UploadBusy`, as
is one that waited too long: a tenant sending fifty uploads at once gets a few checked and the
rest told when to try again, and holds nothing anyone else needs.

A turn that frees goes to the tenant with uploads waiting whose last turn began the longest
ago, not to the first in line: one tenant's queue delays another tenant's check by one check at
most.

All of it runs on the event loop: a waiting upload holds no thread.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import deque
from dataclasses import dataclass

from treadle.errors import UploadBusy
from treadle.runtime import seconds_text


@dataclass(frozen=True)
class UploadLimits:
    """How many uploads are checked at once, and how long one may take."""

    checks: int = 2  # at once in the process
    per_tenant: int = 1  # at once for one tenant
    queued_per_tenant: int = 4  # a tenant's uploads waiting for a turn
    wait_seconds: float = 10.0  # the longest an upload waits for its turn
    check_seconds: float = 10.0  # the longest a check runs: the module must have loaded by then

    def __post_init__(self) -> None:
        if self.checks < 1 or self.per_tenant < 1 or self.queued_per_tenant < 0:
            raise ValueError("checks and per_tenant must be at least 1, queued_per_tenant >= 0")
        if self.wait_seconds <= 0 or self.check_seconds <= 0:
            raise ValueError("wait_seconds and check_seconds must be positive")

    @property
    def retry_after(self) -> float:
        """When a refused upload may find room: one check later."""
        return float(math.ceil(self.check_seconds))


class Admission:
    """Hands out turns to check uploads; one per event loop (it is not thread-safe)."""

    def __init__(self, limits: UploadLimits) -> None:
        self._limits = limits
        self._running: dict[int, int] = {}
        self._busy = 0
        self._queues: dict[int, deque[asyncio.Future[None]]] = {}  # tenants with uploads waiting
        # When each tenant with a turn or a queue last began a turn (a count, not a time).
        self._began: dict[int, int] = {}
        self._turns = itertools.count(1)

    @property
    def busy(self) -> int:
        """Turns held now."""
        return self._busy

    def waiting(self, tenant_id: int) -> int:
        """The tenant's uploads waiting for a turn."""
        return len(self._queues.get(tenant_id, ()))

    async def enter(self, tenant_id: int) -> None:
        """Wait for a turn of the tenant's; the caller must :meth:`leave` once done with it.

        Raises :class:`UploadBusy` when the tenant already has as many uploads waiting as it
        may, or when no turn came within ``wait_seconds``.
        """
        if self._free(tenant_id):
            self._start(tenant_id)
            return
        queue = self._queues.get(tenant_id, deque())
        if len(queue) >= self._limits.queued_per_tenant:
            held = len(queue) + self._running.get(tenant_id, 0)
            raise self._refusal(f"{held} uploads of this tenant are being checked or waiting")
        turn = asyncio.get_running_loop().create_future()
        queue.append(turn)
        self._queues.setdefault(tenant_id, queue)
        try:
            async with asyncio.timeout(self._limits.wait_seconds):
                await turn
        except TimeoutError:
            if _given(turn):
                return  # it came just as the wait ended
            self._forget(tenant_id, turn)
            waited = seconds_text(self._limits.wait_seconds)
            raise self._refusal(f"no turn to check this upload came within {waited}") from None
        except asyncio.CancelledError:  # the request went away
            if _given(turn):
                self.leave(tenant_id)
            else:
                self._forget(tenant_id, turn)
            raise

    def leave(self, tenant_id: int) -> None:
        """Give back a turn of the tenant's; the next one goes to the tenant next in line."""
        self._busy -= 1
        self._running[tenant_id] -= 1
        if not self._running[tenant_id]:
            del self._running[tenant_id]
        self._hand_on()
        self._tidy(tenant_id)

    def _free(self, tenant_id: int) -> bool:
        # A turn is handed on as soon as it frees: when one is free, nobody who could take it
        # is waiting, and a newcomer may have it.
        running = self._running.get(tenant_id, 0)
        return self._busy < self._limits.checks and running < self._limits.per_tenant

    def _start(self, tenant_id: int) -> None:
        self._busy += 1
        self._running[tenant_id] = self._running.get(tenant_id, 0) + 1
        self._began[tenant_id] = next(self._turns)

    def _hand_on(self) -> None:
        while self._busy < self._limits.checks:
            ready = [t for t in self._queues if self._free(t)]
            if not ready:
                return
            tenant_id = min(ready, key=lambda t: self._began.get(t, 0))
            queue = self._queues[tenant_id]
            turn = queue.popleft()
            if not queue:
                del self._queues[tenant_id]
            if not turn.done():  # one that gave up waiting is skipped
                self._start(tenant_id)
                turn.set_result(None)

    def _forget(self, tenant_id: int, turn: asyncio.Future[None]) -> None:
        queue = self._queues.get(tenant_id)
        if queue is not None and turn in queue:
            queue.remove(turn)
            if not queue:
                del self._queues[tenant_id]
        self._tidy(tenant_id)

    def _tidy(self, tenant_id: int) -> None:
        # A quiet tenant leaves nothing behind, and comes first when it uploads again.
        if tenant_id not in self._running and tenant_id not in self._queues:
            self._began.pop(tenant_id, None)

    def _refusal(self, situation: str) -> UploadBusy:
        limits = self._limits
        message = (
            f"{situation} (a tenant's uploads are checked {limits.per_tenant} at a time, with "
            f"{limits.queued_per_tenant} more waiting); try again shortly"
        )
        return UploadBusy(message, retry_after=limits.retry_after)


def _given(turn: asyncio.Future[None]) -> bool:
    return turn.done() and not turn.cancelled()
