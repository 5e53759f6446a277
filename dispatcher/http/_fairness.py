"""Each tenant's share of an API process's reads: a few at once, the rest wait their turn.

Reads run on the process's thread pool and hold one of its database connections while they
run, and both are handed out first come, first served: a tenant with 40 reads of a large
instance in flight would have every other tenant's request queue behind all 40 (measured: one
second and more for a 130 KB instance). So at most :data:`READS_PER_TENANT` reads of one
tenant run at once in a process; the others wait here, in order, holding neither a thread nor
a connection. Nothing is refused and a single client never notices: a tenant's reads take
turns among themselves only.

Writes are not counted: they wait for the group committer, which batches them (holding them
back would shrink the batches), and are limited by ``creates_per_second``. Live streams are
not either: they last as long as their instance runs, are capped per tenant, and are fed by
one reader per process (``dispatcher.http._notifier``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager

READS_PER_TENANT = 4


class ReadShares:
    def __init__(self, limit: int = READS_PER_TENANT) -> None:
        self._limit = limit
        self._turns: dict[Hashable, asyncio.Semaphore] = {}
        self._waiting: dict[Hashable, int] = {}

    @asynccontextmanager
    async def turn(self, tenant_id: Hashable) -> AsyncIterator[None]:
        """Wait for one of the tenant's turns and hold it for the block (an anonymous
        caller's turns are its address's)."""
        turns = self._turns.setdefault(tenant_id, asyncio.Semaphore(self._limit))
        self._waiting[tenant_id] = self._waiting.get(tenant_id, 0) + 1
        try:
            async with turns:
                yield
        finally:
            self._waiting[tenant_id] -= 1
            if not self._waiting[tenant_id]:  # no state is kept for a quiet tenant
                del self._waiting[tenant_id], self._turns[tenant_id]


def counted(method: str, path: str) -> bool:
    """Whether a tenant's request takes one of its turns: a read, but not a live stream."""
    return method in ("GET", "HEAD") and not path.endswith("/stream")
