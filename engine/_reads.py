"""All read queries of the engine: journals for replays, and instances, steps, logs and
history for the API, each paged by count and by bytes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import sqlalchemy as sa
from psycopg.rows import dict_row

from engine._rows import (
    E,
    H,
    HistoryEvent,
    I,
    InstanceRow,
    JournalEvent,
    LogEntry,
    PagedStep,
    S,
    WatchedEvent,
    instance_key,
    not_found,
    step_record,
)
from engine._search import InstanceFilter, listing
from engine._usage import json_size
from storage import Database
from treadle.runtime import StepRecord

_Row = TypeVar("_Row")


@dataclass
class Journal:
    """What a replay starts from: the instance's recorded steps and its unconsumed events."""

    steps: list[StepRecord]
    events: list[JournalEvent]


@dataclass(frozen=True)
class Page(Generic[_Row]):
    """Rows of a paged read, and whether more follow."""

    rows: list[_Row]
    more: bool


class Reads:
    """The engine's reads; none of them writes."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def journals(self, pks: list[int]) -> dict[int, Journal]:
        """Recorded steps and unconsumed events of each instance, in order."""
        found: dict[int, Journal] = {pk: Journal([], []) for pk in pks}
        with self.db.connect() as conn:
            for row in conn.execute(
                sa.select(S).where(S.c.instance_pk.in_(pks)).order_by(S.c.instance_pk, S.c.seq)
            ).mappings():
                found[row["instance_pk"]].steps.append(step_record(row))
            events = (
                sa.select(E.c.pk, E.c.instance_pk, E.c.type, E.c.payload, E.c.created_at)
                .where(E.c.instance_pk.in_(pks), E.c.consumed_at.is_(None))
                .order_by(E.c.pk)
            )
            _add_events(found, conn.execute(events))
        return found

    def instance(
        self, tenant_id: int, workflow: str, instance_id: str, limit: int, budget: int
    ) -> tuple[InstanceRow, Page[PagedStep]]:
        """The instance's row, and its first page of steps (see :meth:`steps`)."""
        with self.db.connect(server_cursor=True) as conn:
            row = conn.execute(
                sa.select(I).where(*instance_key(tenant_id, workflow, instance_id))
            ).first()
            if row is None:
                raise not_found(instance_id)
            page = self._steps(conn, row.pk, -1, limit, budget)
            return cast(InstanceRow, row._asdict()), page

    def steps(
        self, tenant_id: int, workflow: str, instance_id: str, after: int, limit: int, budget: int
    ) -> Page[PagedStep]:
        """Steps after position ``after``, in order: at most ``limit`` of them and about
        ``budget`` bytes of their values (at least one); each with its position ``seq``."""
        with self.db.connect(server_cursor=True) as conn:
            pk = self._pk(conn, tenant_id, workflow, instance_id)
            return self._steps(conn, pk, after, limit, budget)

    def _steps(
        self, conn: sa.Connection, pk: int, after: int, limit: int, budget: int
    ) -> Page[PagedStep]:
        query = sa.select(S).where(S.c.instance_pk == pk, S.c.seq > after).order_by(S.c.seq)
        return _page(conn, query, limit, budget, _step_size, _paged_step)

    def _pk(self, conn: sa.Connection, tenant_id: int, workflow: str, instance_id: str) -> int:
        pk = conn.execute(
            sa.select(I.c.pk).where(*instance_key(tenant_id, workflow, instance_id))
        ).scalar()
        if pk is None:
            raise not_found(instance_id)
        return int(pk)

    def instances(
        self,
        tenant_id: int,
        match: InstanceFilter,
        before: int | None,
        limit: int,
        budget: int,
    ) -> Page[InstanceRow]:
        """The newest of the tenant's instances that ``match``, before ``before``, paged as
        :meth:`steps`."""
        newest_first = listing(tenant_id, match, before)
        with self.db.connect(server_cursor=True) as conn:
            return _page(conn, newest_first, limit, budget, _instance_size, _instance_row)

    def logs(
        self, tenant_id: int, workflow: str, instance_id: str, after: int, limit: int, budget: int
    ) -> Page[LogEntry]:
        """Log lines after history event ``after``, oldest first, paged as :meth:`steps`;
        each with its event id ``pk``."""
        with self.db.connect(server_cursor=True) as conn:
            pk = self._pk(conn, tenant_id, workflow, instance_id)
            query = (
                sa.select(H.c.pk, H.c.ts, H.c.step, H.c.data)
                .where(H.c.instance_pk == pk, H.c.type == "log", H.c.pk > after)
                .order_by(H.c.pk)
            )
            return _page(conn, query, limit, budget, lambda r: json_size(r["data"]), _log_line)

    def parent_of(self, tenant_id: int, workflow: str, instance_id: str) -> int | None:
        with self.db.connect() as conn:
            parent = conn.execute(
                sa.select(I.c.parent_pk).where(*instance_key(tenant_id, workflow, instance_id))
            ).scalar()
        return int(parent) if parent is not None else None

    def history(
        self, tenant_id: int, workflow: str, instance_id: str, after: int, limit: int
    ) -> tuple[list[HistoryEvent], str]:
        """History events after event id ``after``, and the instance's current status."""
        _, rows, status = self.instance_history(tenant_id, workflow, instance_id, after, limit)
        return rows, status

    def instance_history(
        self, tenant_id: int, workflow: str, instance_id: str, after: int, limit: int
    ) -> tuple[int, list[HistoryEvent], str]:
        """The instance's pk, its history events after event id ``after`` and its status."""
        with self.db.connect() as conn:
            found = conn.execute(
                sa.select(I.c.pk, I.c.status).where(*instance_key(tenant_id, workflow, instance_id))
            ).first()
            if found is None:
                raise not_found(instance_id)
            rows = conn.execute(
                sa.select(H.c.pk, H.c.ts, H.c.type, H.c.step, H.c.data)
                .where(H.c.instance_pk == found.pk, H.c.pk > after)
                .order_by(H.c.pk)
                .limit(limit)
            )
            events = [cast(HistoryEvent, r._asdict()) for r in rows]
            return int(found.pk), events, str(found.status)

    def watched_history(
        self, cursors: Mapping[int, int], limit: int
    ) -> tuple[dict[int, str], list[WatchedEvent]]:
        """For the instances ``cursors`` names (pk: the last event id seen of each), their
        statuses (a deleted instance is missing) and their history events after that id,
        oldest first, at most ``limit`` in all (each with its ``instance_pk``).

        The statuses are read first: an instance found finished has every one of its events
        among these, unless ``limit`` cut them short.
        """
        if not cursors:
            return {}, []
        # Each instance after its own cursor, one index range each: one cursor for all (the
        # smallest) would read again, on every call, what the others have seen already.
        after = sa.or_(*(sa.and_(H.c.instance_pk == pk, H.c.pk > c) for pk, c in cursors.items()))
        columns = (H.c.instance_pk, H.c.pk, H.c.ts, H.c.type, H.c.step, H.c.data)
        with self.db.connect() as conn:
            found = conn.execute(sa.select(I.c.pk, I.c.status).where(I.c.pk.in_(list(cursors))))
            statuses = {int(pk): str(status) for pk, status in found}
            rows = conn.execute(sa.select(*columns).where(after).order_by(H.c.pk).limit(limit))
            return statuses, [cast(WatchedEvent, r._asdict()) for r in rows]

    def counts(self) -> dict[tuple[int, str, str], int]:
        """Instances by (tenant id, workflow, status): one pass over the listing index."""
        query = sa.select(I.c.tenant_id, I.c.workflow, I.c.status, sa.func.count()).group_by(
            I.c.status, I.c.tenant_id, I.c.workflow
        )
        with self.db.connect() as conn:
            return {(int(t), str(w), str(s)): int(n) for t, w, s, n in conn.execute(query)}

    def event_time(self, instance_pk: int, step: str, type_: str) -> float | None:
        """When the instance's latest history event of ``type_`` for ``step`` happened."""
        query = (
            sa.select(H.c.ts)
            .where(H.c.instance_pk == instance_pk, H.c.type == type_, H.c.step == step)
            .order_by(H.c.pk.desc())
            .limit(1)
        )
        with self.db.connect() as conn:
            found = conn.execute(query).scalar()
        return None if found is None else float(found)

    def stalled_count(self, now: float, grace: float) -> int:
        query = sa.select(sa.func.count()).where(_HOLDING, I.c.due_at < now - grace)
        with self.db.connect() as conn:
            return int(conn.execute(query.select_from(I)).scalar_one())

    def stalled(self, now: float, grace: float, limit: int) -> list[Stalled]:
        """Up to ``limit`` instances holding a worker whose lease ran out more than ``grace``
        seconds ago (its process stopped renewing it), longest stalled first."""
        query = (
            sa.select(I.c.pk, I.c.tenant_id, I.c.workflow, I.c.id, I.c.due_at)
            .where(_HOLDING, I.c.due_at < now - grace)
            .order_by(I.c.due_at)
            .limit(limit)
        )
        with self.db.connect() as conn:
            return [
                Stalled(int(p), int(t), w, i, float(d)) for p, t, w, i, d in conn.execute(query)
            ]


@dataclass(frozen=True)
class Stalled:
    """An instance holding a worker whose lease ran out (``since``) and that nobody took over."""

    pk: int
    tenant_id: int
    workflow: str
    id: str
    since: float


# Literally the predicate of the partial index ix_instances_running.
_HOLDING = sa.text("instances.status IN ('running', 'waitingForPause')")

# The journal reads of a claim on PostgreSQL, sent in its last pipeline (``send_journal_reads``).
_PG_STEPS = (
    "SELECT instance_pk, name, count, type, status, output, error, attempts, wake_at, event_pk"
    " FROM steps WHERE instance_pk = ANY(%(pks)s) ORDER BY instance_pk, seq"
)
_PG_EVENTS = (
    "SELECT pk, instance_pk, type, payload, created_at FROM events"
    " WHERE instance_pk = ANY(%(pks)s) AND consumed_at IS NULL ORDER BY pk"
)


def send_journal_reads(conn: sa.Connection, pks: list[int]) -> Callable[[], dict[int, Journal]]:
    """Send the reads of what :meth:`Reads.journals` returns, on PostgreSQL, into the pipeline
    open on ``conn`` (within a transaction, e.g. the claim's); returns what collects them once
    the pipeline is through."""
    driver = conn.connection.driver_connection
    assert driver is not None
    steps = driver.cursor(row_factory=dict_row)
    events = driver.cursor()
    steps.execute(_PG_STEPS, {"pks": pks})
    events.execute(_PG_EVENTS, {"pks": pks})

    def collect() -> dict[int, Journal]:
        found: dict[int, Journal] = {pk: Journal([], []) for pk in pks}
        for row in steps.fetchall():
            found[row["instance_pk"]].steps.append(step_record(row))
        _add_events(found, events.fetchall())
        return found

    return collect


def _add_events(found: dict[int, Journal], rows: Iterable[Any]) -> None:
    for pk, instance_pk, type_, payload, created_at in rows:
        found[instance_pk].events.append(
            {"pk": pk, "type": type_, "payload": payload, "timestamp": created_at}
        )


def _page(
    conn: sa.Connection,
    query: sa.Select[Any],
    limit: int,
    budget: int,
    size_of: Callable[[sa.RowMapping], int],
    shape: Callable[[sa.RowMapping], _Row],
) -> Page[_Row]:
    """Up to ``limit`` rows of ``query`` and about ``budget`` bytes (at least one row), read a
    few at a time: a page of large rows is never all in memory before it is cut. ``conn`` is
    a ``connect(server_cursor=True)``."""
    rows: list[_Row] = []
    spent = 0
    result = conn.execute(query.limit(limit + 1).execution_options(yield_per=8)).mappings()
    try:
        for row in result:
            spent += size_of(row)
            if len(rows) == limit or (rows and spent > budget):
                return Page(rows, True)
            rows.append(shape(row))
    finally:
        result.close()
    return Page(rows, False)


def _instance_size(row: sa.RowMapping) -> int:
    return json_size(row["params"]) + json_size(row["output"]) + json_size(row["error"])


def _step_size(row: sa.RowMapping) -> int:
    return json_size(row["output"]) + json_size(row["error"]) + json_size(row["attempts"])


def _instance_row(row: sa.RowMapping) -> InstanceRow:
    return cast(InstanceRow, dict(row))


def _paged_step(row: sa.RowMapping) -> PagedStep:
    return {**step_record(row), "seq": row["seq"]}


def _log_line(row: sa.RowMapping) -> LogEntry:
    return {
        "pk": row["pk"],
        "ts": row["ts"],
        "step": row["step"],
        "message": row["data"]["message"],
    }
