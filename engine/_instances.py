"""All SQL that creates instances, sends them events and deletes a workflow's instances.

Creates are admitted under the tenant's quota (``engine._quotas``) in the transaction that
inserts them; everything stored is charged to the tenant's storage (``engine._usage``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from engine._flow import LIVE, Flow, FlowStore
from engine._quotas import Admission, Quota, QuotaStore, grow_queue_bound
from engine._rows import (
    E,
    H,
    I,
    NewInstanceRow,
    StoredInstanceRow,
    Write,
    instance_key,
    lock_row,
    not_found,
    notify,
    storage_full,
    workflow_event,
)
from engine._usage import (
    ROW_OVERHEAD,
    STORAGE_RETRY_AFTER,
    Usage,
    UsageLedger,
    charge,
    json_size,
)
from storage import BatchWrite, Database, dumps, pipelined
from treadle.errors import Conflict
from treadle.runtime import JSONValue

# SQLite: the rows as they are; an id that exists already is skipped.
_SQLITE_INSERT = (
    sqlite.insert(I)
    .on_conflict_do_nothing(index_elements=[I.c.tenant_id, I.c.workflow, I.c.id])
    .returning(I.c.pk, I.c.id)
)
# PostgreSQL: the same as driver SQL over arrays, one short statement for a whole batch. (An
# INSERT with a row of placeholders per instance is a new statement text for every batch size,
# which the driver parses afresh each time: that was most of a batch create's CPU.)
_PG_INSERT = (
    "INSERT INTO instances (tenant_id, workflow, id, version, status, params, created_at,"
    " due_at, epoch, parent_pk, stored_bytes, trace_id, span_id, parent_span_id, flow_key,"
    " priority, flow_mode, waiting_reason, tags)"
    " SELECT * FROM unnest(%(tenant_id)s::integer[], %(workflow)s::text[], %(id)s::text[],"
    " %(version)s::text[], %(status)s::text[], %(params)s::text[]::jsonb[],"
    " %(created_at)s::float8[], %(due_at)s::float8[], %(epoch)s::bigint[],"
    " %(parent_pk)s::bigint[], %(stored_bytes)s::bigint[], %(trace_id)s::text[],"
    " %(span_id)s::text[], %(parent_span_id)s::text[], %(flow_key)s::text[],"
    " %(priority)s::smallint[], %(flow_mode)s::text[], %(waiting_reason)s::text[],"
    " %(tags)s::text[]::jsonb[])"
    " ON CONFLICT (tenant_id, workflow, id) DO NOTHING RETURNING pk, id"
)
_PG_COLUMNS = (
    "tenant_id", "workflow", "id", "version", "status", "created_at", "due_at", "epoch",
    "parent_pk", "stored_bytes", "trace_id", "span_id", "parent_span_id", "flow_key",
    "priority", "flow_mode", "waiting_reason",
)  # fmt: skip


def _insert(conn: sa.Connection, rows: list[StoredInstanceRow]) -> dict[int, str]:
    """Insert ``rows``; the pk and id of each row inserted (not of those whose id existed)."""
    if conn.dialect.name != "postgresql":
        return {pk: id_ for pk, id_ in conn.execute(_SQLITE_INSERT, rows)}
    arrays: dict[str, list[Any]] = {c: [r.get(c) for r in rows] for c in _PG_COLUMNS}
    arrays["params"] = [None if r["params"] is None else dumps(r["params"]) for r in rows]
    arrays["tags"] = [None if r.get("tags") is None else dumps(r["tags"]) for r in rows]
    # A new instance has nothing in the other columns (``_new_row``), which the array insert
    # leaves to their defaults.
    assert all(v is None for r in rows for c, v in r.items() if c not in arrays), rows[0]
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor:
        cursor.execute(_PG_INSERT, arrays)
        return {pk: id_ for pk, id_ in cursor.fetchall()}


@dataclass(frozen=True)
class Created:
    """The ids a create inserted (of those admitted; the others existed already), and the
    admission: ``admission.admitted`` rows were tried, the rest refused by a quota. Under a
    workflow's flow, ``debounced`` maps a create merged into its key's pending instance to
    that instance's id, and ``singleton`` a create refused to the id of its key's live one."""

    ids: set[str]
    admission: Admission
    debounced: dict[str, str] = field(default_factory=dict)
    singleton: dict[str, str] = field(default_factory=dict)


class InstanceWrites:
    """Creates, events and deletions of instances."""

    def __init__(self, db: Database, quotas: QuotaStore, usage: UsageLedger) -> None:
        self.db = db
        self.quotas = quotas
        self.usage = usage
        self.postgresql = db.dialect == "postgresql"
        self.flow = FlowStore(db.dialect)

    def create(
        self,
        tenant_id: int,
        rows: list[NewInstanceRow],
        quota: Quota | None,
        now: float,
        flow: Flow | None = None,
    ) -> CreateWrite:
        """Insert those of the instance rows of one tenant that ``quota`` admits (all of them
        without one), under their workflow's ``flow``; the write returns a :class:`Created`."""
        return CreateWrite(self, tenant_id, rows, quota, now, flow)

    def send_event(
        self,
        tenant_id: int,
        workflow: str,
        instance_id: str,
        type_: str,
        payload: JSONValue,
        now: float,
        max_storage_bytes: int | None = None,
    ) -> Write:
        size = ROW_OVERHEAD + json_size(payload)

        def write(conn: sa.Connection) -> None:
            # The instance row is locked before the event is stored, as a suspending replay
            # locks it before it looks for pending events (``RecordWrite``): whichever comes
            # second sees the other, so exactly one of them makes the instance due.
            query = sa.select(I.c.pk, I.c.status).where(
                *instance_key(tenant_id, workflow, instance_id)
            )
            row = conn.execute(lock_row(query, self.postgresql)).first()
            if row is None:
                raise not_found(instance_id)
            if row.status in ("complete", "errored", "terminated"):
                raise Conflict(
                    f"instance {instance_id!r} is {row.status}; it takes no more events",
                    code="instance.finished",
                )
            if max_storage_bytes is not None:
                limit = {tenant_id: max_storage_bytes}
                used = self.usage.totals(conn, {tenant_id: size}, limit)[tenant_id]
                if used + size > max_storage_bytes:
                    raise storage_full(max_storage_bytes)
            # The rest only writes: on PostgreSQL one round trip, with the COMMIT.
            with pipelined(conn, last=True):
                conn.execute(
                    E.insert()
                    .inline()
                    .values(instance_pk=row.pk, type=type_, payload=payload, created_at=now)
                )
                conn.execute(
                    sa.update(I)
                    .where(I.c.pk == row.pk)
                    .values(
                        stored_bytes=I.c.stored_bytes + size,
                        due_at=sa.case((I.c.status == "waiting", now), else_=I.c.due_at),
                    )
                )
                self.usage.charge(conn, {tenant_id: size}, now)
                notify(conn, self.postgresql)

        return write

    def delete_workflow(self, tenant_id: int, workflow: str, now: float) -> Write:
        def write(conn: sa.Connection) -> None:
            deleted = conn.execute(
                sa.delete(I)
                .where(I.c.tenant_id == tenant_id, I.c.workflow == workflow)
                .returning(I.c.stored_bytes)
            )
            charge(conn, {tenant_id: -sum(int(n) for n in deleted.scalars())}, now)

        return write


@dataclass(eq=False)
class CreateWrite(BatchWrite):
    """New instances of one tenant, admitted under its quota in the same transaction.

    Creates that commit together lock their tenants' quota rows in tenant order, so two
    batches with creates of the same tenants never wait for each other in a cycle.
    """

    store: InstanceWrites
    tenant_id: int
    rows: list[NewInstanceRow]
    quota: Quota | None
    now: float
    flow: Flow | None = None
    lock_order = 1  # quota rows, after the instance rows step commits lock

    @staticmethod
    def combine(conn: sa.Connection, writes: Sequence[Any]) -> list[Any]:
        order = sorted(range(len(writes)), key=lambda i: writes[i].tenant_id)
        results: list[Any] = [None] * len(writes)
        later: list[Callable[[], object]] = []
        for n, index in enumerate(order):
            following = writes[order[n + 1]].tenant_id if n + 1 < len(order) else None
            last_of_tenant = following != writes[index].tenant_id
            results[index] = writes[index].insert(conn, later if last_of_tenant else None)
        # What is left only writes: on PostgreSQL it is sent in one round trip, with the
        # COMMIT when these are the transaction's last writes.
        with pipelined(conn, last=True):
            for send in later:
                send()
            if any(r.ids for r in results):
                notify(conn, writes[0].store.postgresql)
        return results

    def insert(self, conn: sa.Connection, later: list[Callable[[], object]] | None) -> Created:
        """Admit and insert the rows; the writes whose results nothing reads go to ``later``
        (when given: no other write of the tenant follows in the transaction, whose admission
        would read what they write)."""
        quotas = self.store.quotas
        ticket = None
        admission = Admission(len(self.rows))
        sizes = [
            2 * ROW_OVERHEAD + json_size(row["params"]) + json_size(row["tags"])
            for row in self.rows
        ]
        if self._storage_full(conn, sum(sizes)):
            return Created(set(), Admission(0, "storage", STORAGE_RETRY_AFTER))
        if self.quota is not None:
            ticket = quotas.take(conn, self.tenant_id, len(self.rows), self.quota, self.now)
            admission = ticket.admission
        rows: list[StoredInstanceRow] = [
            {**row, "stored_bytes": size}
            for row, size in zip(self.rows[: admission.admitted], sizes, strict=False)
        ]
        inserted: dict[int, str] = {}
        debounced: dict[str, str] = {}
        singleton: dict[str, str] = {}
        keyed = [row for row in rows if row["flow_key"] is not None]
        if keyed:
            # The key rows first: a claim holding one never waits for this create.
            opened: dict[str, float] = {}
            for row in keyed:
                key, due = str(row["flow_key"]), row["due_at"] or self.now
                opened[key] = min(opened.get(key, due), due)
            self.store.flow.open(conn, self.tenant_id, rows[0]["workflow"], self.flow, opened)
        plain = [row for row in rows if row["flow_mode"] is None]
        if plain:
            inserted = _insert(conn, plain)
        for row in rows:
            if row["flow_mode"] == "debounce":
                merged = self._debounce(conn, row)
                if merged is not None:
                    debounced[row["id"]] = merged
                    continue
            elif row["flow_mode"] == "singleton":
                live = self._live(conn, row)
                if live is not None:
                    singleton[row["id"]] = live
                    continue
            else:
                continue
            inserted.update(_insert(conn, [row]))
        writes: list[Callable[[], object]] = []
        if inserted:
            events = [workflow_event(pk, self.now, "queued") for pk in inserted]
            writes.append(functools.partial(conn.execute, H.insert().inline(), events))
            stored = {row["id"]: row["stored_bytes"] for row in rows}
            charges = {self.tenant_id: sum(stored[id_] for id_ in inserted.values())}
            created = {self.tenant_id: Usage(instances_created=len(inserted))}
            writes.append(
                functools.partial(self.store.usage.charge, conn, charges, self.now, created)
            )
        if ticket is not None:
            writes.append(functools.partial(quotas.settle, conn, ticket, len(inserted)))
        else:
            writes.append(functools.partial(grow_queue_bound, conn, self.tenant_id, len(inserted)))
        if later is None:
            for write in writes:
                write()
        else:
            later.extend(writes)
        return Created(set(inserted.values()), admission, debounced, singleton)

    def _same_key(self, row: StoredInstanceRow) -> tuple[Any, ...]:
        return (
            I.c.tenant_id == self.tenant_id,
            I.c.workflow == row["workflow"],
            I.c.flow_key == row["flow_key"],
        )

    def _debounce(self, conn: sa.Connection, row: StoredInstanceRow) -> str | None:
        """Merge a debounced create into its key's pending instance (queued, never started),
        if there is one: the new params, started no earlier than the new create's time. Return
        that instance's id; None when there is none (the create is inserted)."""
        pending = sa.select(I.c.pk, I.c.id, I.c.params).where(
            *self._same_key(row),
            sa.text("instances.flow_mode = 'debounce' AND instances.status = 'queued'"),
            I.c.started_at.is_(None),
        )
        found = conn.execute(lock_row(pending, self.store.postgresql)).first()
        if found is None:
            return None
        grown = json_size(row["params"]) - json_size(found.params)
        conn.execute(
            sa.update(I)
            .where(I.c.pk == found.pk)
            .values(
                params=row["params"],
                tags=row["tags"],  # the merged create's tags replace them, as its params
                due_at=row["due_at"],
                waiting_reason=row["waiting_reason"],
                stored_bytes=I.c.stored_bytes + grown,
            )
        )
        conn.execute(
            H.insert().values(workflow_event(found.pk, self.now, "queued", debounced=True))
        )
        if grown:
            self.store.usage.charge(conn, {self.tenant_id: grown}, self.now)
        return str(found.id)

    def _live(self, conn: sa.Connection, row: StoredInstanceRow) -> str | None:
        """The id of the live instance of a singleton create's key, if there is one."""
        live = sa.select(I.c.id).where(
            *self._same_key(row), sa.text("instances.flow_mode = 'singleton'"), LIVE
        )
        return conn.execute(live.limit(1)).scalar()

    def _storage_full(self, conn: sa.Connection, adding: int) -> bool:
        """Whether the creates would take the tenant past ``max_storage_mb`` (children, which
        come under no quota, are never refused: their parent's commits are held to it)."""
        limit = self.quota.max_storage_bytes if self.quota is not None else None
        if limit is None:
            return False
        used = self.store.usage.totals(conn, {self.tenant_id: adding}, {self.tenant_id: limit})
        return used[self.tenant_id] + adding > limit
