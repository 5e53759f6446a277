"""The statements of a step commit (``engine._commits``), and the fence they stand behind.

Every write made on behalf of a replay is fenced by the instance's lease epoch: the commit's
first statement bumps the lease of exactly the (pk, epoch) pairs it was given that are still
running, and writes nothing for the others: a worker whose lease was taken over, or whose
instance was terminated, restarted or deleted, commits nothing (``docs/architecture.md``).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from engine._rows import RUNNING, E, I, S
from storage import pipelined

_STEP_FIELDS = ("type", "status", "output", "error", "attempts", "wake_at", "event_pk")
_b = sa.bindparam


class LeaseLost(Exception):
    """Another worker took over this instance, or it was terminated, restarted or deleted:
    this replay's results are void."""


class PauseRequested(LeaseLost):
    """The instance was asked to pause: what its replay recorded so far is kept, and the
    replay stops here."""


def _upsert_step(insert: Any) -> Any:
    step = insert(S)
    return step.on_conflict_do_update(
        index_elements=[S.c.instance_pk, S.c.name, S.c.count],
        set_={f: step.excluded[f] for f in _STEP_FIELDS},
    )


UPSERT_STEP = {"postgresql": _upsert_step(postgresql.insert), "sqlite": _upsert_step(sqlite.insert)}
"""A step's latest record replaces the earlier ones, per dialect."""

FENCE = (
    sa.update(I)
    .where(sa.tuple_(I.c.pk, I.c.epoch).in_(_b("pairs", expanding=True)))
    .where(I.c.status.in_(RUNNING))
    .values(due_at=_b("lease"))
    .returning(I.c.pk, I.c.status)
)

# On PostgreSQL, every transaction that locks several instance rows locks them in ascending pk
# order, in one statement at its start, so that two of them never wait for each other in a
# cycle; a statement of its own, as PostgreSQL may read a locking subquery only in part. It and
# the fence are sent with the transaction's BEGIN, in one round trip (``lock_and_fence``).
_PG_LOCK_ROWS = "SELECT pk FROM instances WHERE pk = ANY(%(locked)s) ORDER BY pk FOR NO KEY UPDATE"
_PG_FENCE = (
    "UPDATE instances SET due_at = %(lease)s"
    " WHERE (pk, epoch) IN (SELECT * FROM unnest(%(pks)s::bigint[], %(epochs)s::bigint[]))"
    " AND status IN ('running', 'waitingForPause')"
    " RETURNING pk, status"
)


def lock_and_fence(
    conn: sa.Connection, locked: set[int], pairs: list[tuple[int, int]], lease: float
) -> dict[int, str]:
    """Lock the rows ``locked`` in ascending pk order, then extend the lease of the (pk, epoch)
    ``pairs`` still running; the status of each of those, by pk. Run first in a transaction."""
    if conn.dialect.name != "postgresql":
        # SQLite: the write lock taken by BEGIN IMMEDIATE already serialises commits.
        fenced = conn.execute(FENCE, {"pairs": pairs, "lease": lease})
        return {pk: status for pk, status in fenced}
    driver = conn.connection.driver_connection
    assert driver is not None
    fence = driver.cursor()
    # Read after the pipeline: a read inside it would cost a round trip of its own.
    with pipelined(conn):
        driver.execute(_PG_LOCK_ROWS, {"locked": sorted(locked)})
        fence.execute(
            _PG_FENCE,
            {"lease": lease, "pks": [pk for pk, _ in pairs], "epochs": [e for _, e in pairs]},
        )
    return {pk: status for pk, status in fence.fetchall()}


# A replay of an instance asked to pause stops at its next commit; what it recorded is kept
# and the instance becomes paused, due again as soon as it is resumed.
PAUSE = (
    sa.update(I)
    .where(I.c.pk.in_(_b("pks", expanding=True)))
    .values(
        status="paused",
        paused_at=_b("now"),
        paused_due_at=sa.func.coalesce(_b("due", type_=sa.Float), I.c.due_at),
        due_at=None,
        lease_owner=None,
    )
)

CHILD_DONE = (
    E.insert()
    .inline()
    .values(
        instance_pk=_b("parent"),
        type=_b("type"),
        payload=_b("payload", type_=E.c.payload.type),
        created_at=_b("now"),
    )
)

WAKE_PARENT = (
    sa.update(I).where(I.c.pk == _b("parent"), I.c.status == "waiting").values(due_at=_b("now"))
)

END = (
    sa.update(I)
    .where(I.c.pk == _b("b_pk"))
    .values(
        status=_b("b_status"),
        output=_b("b_output", type_=I.c.output.type),
        error=_b("b_error", type_=I.c.error.type),
        error_name=_b("b_error_name"),
        rollback=_b("b_rollback", type_=I.c.rollback.type),
        ended_at=_b("b_now"),
        due_at=None,
        lease_owner=None,
    )
)

_PENDING = sa.exists().where(
    E.c.instance_pk == I.c.pk, E.c.type == _b("b_type"), E.c.consumed_at.is_(None)
)
# A suspended instance with the event it waits for already there is due at once.
SUSPEND = (
    sa.update(I)
    .where(I.c.pk == _b("b_pk"))
    .values(
        status="waiting",
        due_at=sa.case((_PENDING, _b("b_now")), else_=_b("b_due")),
        lease_owner=None,
    )
)

CONSUME = sa.update(E).where(E.c.pk.in_(_b("pks", expanding=True)))
