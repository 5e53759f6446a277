"""Admission of new instances: ``creates_per_second`` and ``max_queued_instances``.

Both are decided in the transaction that inserts the instances, against the tenant's row in
``tenant_quotas``, which that transaction locks: every API process of a tenant shares one token
bucket, and nothing refused is written. The row also keeps an upper bound of the tenant's
queued instances: exact when last counted, raised by every create (and restart or resume to
``queued``) since, never lowered by the claims that shrink the queue. So a create counts
nothing while the bound leaves room; only a tenant near its ``max_queued_instances`` has its
queue counted (with a partial index), and while a count finds the queue full, at most once a
second.

Rejected: a counter kept exact by every status change (triggers, or the claim): every claim
would then update the rows of the tenants it claims for, from several workers' transactions at
once and in any order, and they would deadlock; and only creates ever need the number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from storage import tables

Q, I = tables.tenant_quotas, tables.instances  # noqa: E741
_RECOUNT_EVERY = 1.0  # seconds between counts of a queue found full
QUEUE_RETRY_AFTER = 1.0


@dataclass(frozen=True)
class Quota:
    """The limits a batch of creates is admitted under. Children, which their parent's code
    starts, are created under none: they count towards the queue but are never refused."""

    creates_per_second: int
    max_queued_instances: int
    # max_storage_mb in bytes (None: not checked); see ``engine._usage``.
    max_storage_bytes: int | None = None


@dataclass(frozen=True)
class Admission:
    """How many of the wanted creates may go ahead; why the others may not (``"rate"``,
    ``"queue"`` or ``"storage"``) and in how many seconds it is worth asking again."""

    admitted: int
    refused: str | None = None
    retry_after: float = 0.0


def refill(tokens: float, refilled_at: float, now: float, per_second: int) -> float:
    """The bucket at ``now``: it holds up to one second's worth and refills continuously."""
    return min(float(per_second), tokens + max(0.0, now - refilled_at) * per_second)


def admit(wanted: int, tokens: float, queue_room: int, per_second: int) -> Admission:
    """Admit what both the bucket and the room in the queue allow."""
    by_rate = min(wanted, math.floor(tokens))
    admitted = max(0, min(by_rate, queue_room))
    if admitted == wanted:
        return Admission(admitted)
    if queue_room <= by_rate:  # a full queue is the reason to report, even with no tokens
        return Admission(admitted, "queue", QUEUE_RETRY_AFTER)
    return Admission(admitted, "rate", (1.0 - (tokens - admitted)) / per_second)


@dataclass(frozen=True)
class Ticket:
    """An admission decided in a create transaction, with the row state to store once the
    admitted instances are inserted."""

    tenant_id: int
    admission: Admission
    tokens: float
    refilled_at: float
    queued_bound: int
    full_at: float  # when a count last found the queue full (0: not since it had room)


def grow_queue_bound(conn: sa.Connection, tenant_id: int, added: int) -> None:
    """Raise the bound for instances queued outside any quota: children, restarts, resumes.
    NULL stays NULL: a queue never counted is counted by the next create under a quota."""
    if added:
        conn.execute(
            sa.update(Q)
            .where(Q.c.tenant_id == tenant_id)
            .values(queued_bound=Q.c.queued_bound + added)
        )


class QuotaStore:
    """All SQL of ``tenant_quotas``; every method runs inside a create transaction."""

    def __init__(self, dialect: str) -> None:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        fresh = insert(Q).values(
            tenant_id=sa.bindparam("t"),
            tokens=sa.bindparam("tokens"),
            refilled_at=sa.bindparam("now"),
            queued_bound=None,
            full_at=0.0,
        )
        # A no-op update of an existing row: it locks the row until commit and returns it.
        self._lock = fresh.on_conflict_do_update(
            index_elements=[Q.c.tenant_id], set_={"tenant_id": fresh.excluded.tenant_id}
        ).returning(Q.c.tokens, Q.c.refilled_at, Q.c.queued_bound, Q.c.full_at)
        # The literal predicate of the partial index ix_instances_queued: a bound parameter
        # could not be matched against it.
        self._count = sa.select(sa.func.count()).where(
            I.c.tenant_id == sa.bindparam("t"), sa.text("instances.status = 'queued'")
        )

    def take(
        self, conn: sa.Connection, tenant_id: int, wanted: int, quota: Quota, now: float
    ) -> Ticket:
        """Lock the tenant's row and decide how many of ``wanted`` creates may go ahead."""
        rate = quota.creates_per_second
        row = conn.execute(self._lock, {"t": tenant_id, "tokens": float(rate), "now": now}).one()
        bound, full_at = row.queued_bound, float(row.full_at)
        tokens = refill(row.tokens, row.refilled_at, now, rate)
        limit = quota.max_queued_instances
        counted = False
        if bound is None or (bound + wanted > limit and now - full_at >= _RECOUNT_EVERY):
            bound, counted = self._counted(conn, tenant_id), True
        admission = admit(wanted, tokens, limit - bound, rate)
        if counted:
            full_at = now if admission.refused == "queue" else 0.0
        refilled_at = max(now, row.refilled_at)
        return Ticket(tenant_id, admission, tokens, refilled_at, bound, full_at)

    def settle(self, conn: sa.Connection, ticket: Ticket, inserted: int) -> None:
        """Store the bucket less what was admitted, and the bound raised by what was inserted."""
        conn.execute(
            sa.update(Q)
            .where(Q.c.tenant_id == ticket.tenant_id)
            .values(
                tokens=ticket.tokens - ticket.admission.admitted,
                refilled_at=ticket.refilled_at,
                queued_bound=ticket.queued_bound + inserted,
                full_at=ticket.full_at,
            )
        )

    def _counted(self, conn: sa.Connection, tenant_id: int) -> int:
        return int(conn.execute(self._count, {"t": tenant_id}).scalar_one())
