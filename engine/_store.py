"""All SQL of the engine: instances, steps, events and history (logs included).

Writes are returned as functions of a connection so that the group committer can run many of
them, from many instances, in one transaction. Every write made on behalf of a replay is
fenced by the instance's lease epoch: a worker whose lease was taken over commits nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from engine._quotas import Admission, Quota, QuotaStore, grow_queue_bound
from engine._usage import ROW_OVERHEAD, STORAGE_RETRY_AFTER, UsageLedger, charge, json_size
from storage import BatchWrite, Database, tables
from treadle.errors import Conflict, NotFound, StorageQuotaExceeded

I, S, E, H = tables.instances, tables.steps, tables.events, tables.history  # noqa: E741
T = tables.tenants
Write = Callable[[sa.Connection], Any]
_STEP_FIELDS = ("type", "status", "output", "error", "attempts", "wake_at", "event_pk")
WAKE_CHANNEL = "treadle_wake"
_PG_CLAIM_LOCK = 0x7472  # the advisory lock space of claims; the second key is the tenant
_TENANT_CHUNK = 16  # tenants locked and counted per statement of a claim
_MAX_TENANTS_PER_CLAIM = 64


class LeaseLost(Exception):
    """Another worker took over this instance, or it was terminated, restarted or deleted:
    this replay's results are void."""


class PauseRequested(LeaseLost):
    """The instance was asked to pause: what its replay recorded so far is kept, and the
    replay stops here."""


@dataclass(frozen=True)
class Claimed:
    pk: int
    tenant_id: int
    workflow: str
    id: str
    version: str
    params: Any
    created_at: float
    epoch: int
    parent_pk: int | None = None
    mode: str = "run"  # "rollback": terminated with rollback requested


@dataclass
class Journal:
    steps: list[dict[str, Any]]
    events: list[dict[str, Any]]


@dataclass(frozen=True)
class Final:
    """How a replay ended, as the instance row should record it."""

    status: str  # "complete" | "errored" | "waiting"
    output: Any = None
    error: Any = None
    wake_at: float | None = None
    event_type: str | None = None
    rollback: Any = None


@dataclass(frozen=True)
class Claim:
    """What a claim took, and when the next instance of a tenant below its cap is due (None:
    nothing is; a tenant at its cap is due again when one of its replays ends)."""

    claimed: list[Claimed]
    next_due: float | None


@dataclass(frozen=True)
class _Plan:
    shares: list[tuple[int, int]]  # (tenant id, how many to claim)
    next_due: float | None


@dataclass(frozen=True)
class Created:
    """The ids a create inserted (of those admitted; the others existed already), and the
    admission: ``admission.admitted`` rows were tried, the rest refused by a quota."""

    ids: set[str]
    admission: Admission


_RUNNING = ("running", "waitingForPause")
# Literally the predicate of the partial index ix_instances_running, so that PostgreSQL can use
# it whatever the plan (it cannot match bound parameters against an index predicate).
_HOLDING_A_WORKER = sa.text("instances.status IN ('running', 'waitingForPause')")


class EngineStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._pg = db.dialect == "postgresql"
        insert = postgresql.insert if self._pg else sqlite.insert
        step_insert = insert(S)
        self.upsert_step = step_insert.on_conflict_do_update(
            index_elements=[S.c.instance_pk, S.c.name, S.c.count],
            set_={f: step_insert.excluded[f] for f in _STEP_FIELDS},
        )
        b = sa.bindparam
        self.fence = (
            sa.update(I)
            .where(sa.tuple_(I.c.pk, I.c.epoch).in_(b("pairs", expanding=True)))
            .where(I.c.status.in_(_RUNNING))
            .values(due_at=b("lease"))
            .returning(I.c.pk, I.c.status)
        )
        # Every transaction that locks several instance rows locks them in ascending pk order,
        # in one statement at its start, so that two of them never wait for each other in a
        # cycle. A statement of its own: PostgreSQL may read a locking subquery only in part.
        self.lock_rows = (
            sa.select(I.c.pk)
            .where(I.c.pk.in_(b("locked", expanding=True)))
            .order_by(I.c.pk)
            .with_for_update(key_share=True)
        )
        self.lease = (
            sa.update(I)
            .where(sa.tuple_(I.c.pk, I.c.epoch).in_(b("pairs", expanding=True)))
            .where(I.c.status.in_(_RUNNING))
            .values(due_at=b("lease"))
        )
        if self._pg:
            # A heartbeat never waits: a row locked by a commit in flight gets its lease
            # extended by that commit.
            unlocked = (
                sa.select(I.c.pk)
                .where(I.c.pk.in_(b("locked", expanding=True)))
                .with_for_update(key_share=True, skip_locked=True)
            )
            self.lease = self.lease.where(I.c.pk.in_(unlocked.scalar_subquery()))
        # A replay of an instance asked to pause stops at its next commit; what it recorded is
        # kept and the instance becomes paused, due again as soon as it is resumed.
        self.pause = (
            sa.update(I)
            .where(I.c.pk.in_(b("pks", expanding=True)))
            .values(
                status="paused",
                paused_at=b("now"),
                paused_due_at=sa.func.coalesce(b("due", type_=sa.Float), I.c.due_at),
                due_at=None,
                lease_owner=None,
            )
        )
        self.child_done = E.insert().values(
            instance_pk=b("parent"),
            type=b("type"),
            payload=b("payload", type_=E.c.payload.type),
            created_at=b("now"),
        )
        self.wake_parent = (
            sa.update(I)
            .where(I.c.pk == b("parent"), I.c.status == "waiting")
            .values(due_at=b("now"))
        )
        self.end = (
            sa.update(I)
            .where(I.c.pk == b("b_pk"))
            .values(
                status=b("b_status"),
                output=b("b_output", type_=I.c.output.type),
                error=b("b_error", type_=I.c.error.type),
                rollback=b("b_rollback", type_=I.c.rollback.type),
                ended_at=b("b_now"),
                due_at=None,
                lease_owner=None,
            )
        )
        pending = sa.exists().where(
            E.c.instance_pk == I.c.pk, E.c.type == b("b_type"), E.c.consumed_at.is_(None)
        )
        self.suspend = (
            sa.update(I)
            .where(I.c.pk == b("b_pk"))
            .values(
                status="waiting",
                due_at=sa.case((pending, b("b_now")), else_=b("b_due")),
                lease_owner=None,
            )
        )
        self.consume = sa.update(E).where(E.c.pk.in_(b("pks", expanding=True)))
        self._take = (
            sa.update(I)
            .values(
                # A pause request outlives the lease of the replay it was made during.
                status=sa.case(
                    (I.c.status == "waitingForPause", "waitingForPause"), else_="running"
                ),
                lease_owner=b("owner"),
                due_at=b("lease"),
                epoch=I.c.epoch + 1,
                started_at=sa.func.coalesce(I.c.started_at, b("now")),
            )
            .returning(
                I.c.pk,
                I.c.tenant_id,
                I.c.workflow,
                I.c.id,
                I.c.version,
                I.c.params,
                I.c.created_at,
                I.c.epoch,
                I.c.parent_pk,
                I.c.rollback,
            )
        )
        self._try_lock = sa.text(
            "SELECT t FROM unnest(CAST(:tenants AS integer[])) AS t"
            " WHERE pg_try_advisory_xact_lock(:k, t)"
        )
        self._turn = 0  # the tenant served last: the next claim's round starts after it
        self.quotas = QuotaStore(db.dialect)
        self.usage = UsageLedger()
        self.insert_instance = (
            insert(I).on_conflict_do_nothing(index_elements=[I.c.tenant_id, I.c.workflow, I.c.id])
        ).returning(I.c.pk, I.c.id)

    # -- creating and claiming ------------------------------------------------------------------

    def create(
        self, tenant_id: int, rows: list[dict[str, Any]], quota: Quota | None, now: float
    ) -> CreateWrite:
        """Insert those of the instance rows of one tenant that ``quota`` admits (all of them
        without one); the write returns a :class:`Created`."""
        return CreateWrite(self, tenant_id, rows, quota, now)

    def claim(
        self,
        owner: str,
        now: float,
        lease_until: float,
        limit: int,
        due: dict[int, float],
        caps: dict[int, int],
        room: dict[int, int] | None = None,
    ) -> Write:
        """Take up to ``limit`` due instances (queued, waiting and due, or with an expired
        lease), shared fairly between the tenants with due work, none beyond its cap of
        instances holding a worker; the write returns a :class:`Claim`.

        ``due`` is :meth:`next_due_by_tenant` and ``caps`` the cap of each tenant due, both
        read before the write (a policy lookup inside it could wait for the write itself);
        ``room``, the most of each tenant's instances this process may take on now.
        """

        def write(conn: sa.Connection) -> Claim:
            plan = self._plan(conn, now, limit, due, caps, room or {})
            claimed: list[Claimed] = []
            if plan.shares:
                pks = sa.union_all(*(self._due(t, n, now) for t, n in plan.shares))
                params = {"owner": owner, "lease": lease_until, "now": now}
                rows = conn.execute(self._take.where(I.c.pk.in_(pks.scalar_subquery())), params)
                claimed = [_claimed(row) for row in rows]
            if claimed:
                conn.execute(H.insert(), [workflow_event(c.pk, now, "running") for c in claimed])
            return Claim(claimed, plan.next_due)

        return write

    def _plan(
        self,
        conn: sa.Connection,
        now: float,
        limit: int,
        next_due: dict[int, float],
        caps: dict[int, int],
        room: dict[int, int],
    ) -> _Plan:
        """Which tenants to claim for, and how many each: round-robin over the tenants with due
        work, starting after the one served last, each given an equal share of ``limit``
        within the slots its cap leaves."""
        due = sorted(t for t, at in next_due.items() if at <= now and t in caps)
        turn = [t for t in due if t > self._turn] + [t for t in due if t <= self._turn]
        shares: list[tuple[int, int]] = []
        blocked: set[int] = set()
        free = limit
        for first in range(0, min(len(turn), _MAX_TENANTS_PER_CLAIM), _TENANT_CHUNK):
            chunk = self._lockable(conn, turn[first : first + _TENANT_CHUNK])
            running = self._running(conn, chunk, now)
            slots = {t: min(caps[t] - running.get(t, 0), room.get(t, limit)) for t in chunk}
            blocked.update(t for t, n in slots.items() if n <= 0)
            free = self._share_out(slots, free, shares)
            if free <= 0:
                break
        open_ = [at for t, at in next_due.items() if t not in blocked]
        return _Plan(shares, min(open_) if open_ else None)

    def _share_out(self, slots: dict[int, int], free: int, shares: list[tuple[int, int]]) -> int:
        """Give the tenants with free slots, in turn, equal parts of ``free`` runners; return
        how many runners are left."""
        wanting = sum(1 for n in slots.values() if n > 0)
        each = -(-free // max(1, wanting))
        for tenant, open_slots in slots.items():
            # Considered, served or at its cap: the next round starts after it, so tenants
            # beyond the ones a claim can look at get their turn too.
            self._turn = tenant
            share = min(each, open_slots, free)
            if share > 0:
                shares.append((tenant, share))
                free -= share
            if free <= 0:
                break
        return free

    def next_due_by_tenant(self) -> dict[int, float]:
        """Each tenant's earliest due time: one index probe per tenant, however long its
        queue."""
        earliest = sa.select(sa.func.min(I.c.due_at)).where(
            I.c.tenant_id == T.c.id, I.c.due_at.is_not(None)
        )
        with self.db.connect() as conn:
            rows = conn.execute(sa.select(T.c.id, earliest.scalar_subquery())).all()
        return {int(tenant): float(due) for tenant, due in rows if due is not None}

    def _lockable(self, conn: sa.Connection, tenants: list[int]) -> list[int]:
        """The tenants this claim may serve. On PostgreSQL two workers claiming for one tenant
        at once could both see a free slot: a claim takes a per-tenant advisory lock first,
        and skips tenants whose lock another claim holds (as SKIP LOCKED skips rows)."""
        if not self._pg or not tenants:
            return tenants
        locked = conn.execute(self._try_lock, {"k": _PG_CLAIM_LOCK, "tenants": tenants})
        held = {int(t) for (t,) in locked}
        return [t for t in tenants if t in held]

    def _running(self, conn: sa.Connection, tenants: list[int], now: float) -> dict[int, int]:
        """Instances holding a worker, per tenant; an expired lease holds none."""
        if not tenants:
            return {}
        rows = conn.execute(
            sa.select(I.c.tenant_id, sa.func.count())
            .where(I.c.tenant_id.in_(tenants), _HOLDING_A_WORKER, I.c.due_at > now)
            .group_by(I.c.tenant_id)
        )
        return {int(t): int(n) for t, n in rows}

    def _due(self, tenant_id: int, limit: int, now: float) -> sa.Select[Any]:
        due = (
            sa.select(I.c.pk)
            .where(I.c.tenant_id == tenant_id, I.c.due_at <= now)
            .order_by(I.c.due_at)
            .limit(limit)
        )
        if self._pg:
            due = due.with_for_update(skip_locked=True)
        # A subquery of its own: compound members cannot carry LIMIT (SQLite) or FOR UPDATE.
        return sa.select(due.subquery().c.pk)

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
            for pk, instance_pk, type_, payload, created_at in conn.execute(events):
                found[instance_pk].events.append(
                    {"pk": pk, "type": type_, "payload": payload, "timestamp": created_at}
                )
        return found

    # -- recording a replay ---------------------------------------------------------------------

    def release(self, claimed: Claimed, retry_at: float) -> Write:
        """Give an instance back after an infrastructure failure, to be tried again later."""

        def write(conn: sa.Connection) -> None:
            conn.execute(
                sa.update(I)
                .where(I.c.pk == claimed.pk, I.c.epoch == claimed.epoch)
                .where(I.c.status.in_(_RUNNING))
                .values(due_at=retry_at, lease_owner=None)
            )

        return write

    def recover_all(self, now: float) -> Write:
        """Make every running instance due now (for a process that owns the database)."""

        def write(conn: sa.Connection) -> None:
            conn.execute(sa.update(I).where(I.c.status.in_(_RUNNING)).values(due_at=now))

        return write

    def heartbeat(self, held: Iterable[Claimed], lease_until: float) -> None:
        """Extend the leases of the instances this process holds, in a transaction of its own
        (on PostgreSQL it skips rows that a commit in flight has locked: that commit extends
        them itself)."""
        pairs = [(c.pk, c.epoch) for c in held]
        if pairs:
            params = {"pairs": pairs, "lease": lease_until, "locked": sorted(p for p, _ in pairs)}
            with self.db.begin() as conn:
                conn.execute(self.lease, params)

    def still_held(self, held: Iterable[Claimed]) -> set[int]:
        """Which of ``held`` are still this replay's to run: same epoch, still running (or
        waiting for a pause). The others were terminated, restarted or deleted meanwhile."""
        pairs = [(c.pk, c.epoch) for c in held]
        if not pairs:
            return set()
        query = (
            sa.select(I.c.pk)
            .where(sa.tuple_(I.c.pk, I.c.epoch).in_(pairs))
            .where(I.c.status.in_(_RUNNING))
        )
        with self.db.connect() as conn:
            return set(conn.execute(query).scalars())

    # -- events, reads and deletion for the API --------------------------------------------------

    def send_event(
        self,
        tenant_id: int,
        workflow: str,
        instance_id: str,
        type_: str,
        payload: Any,
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
            row = conn.execute(lock_row(query, self._pg)).first()
            if row is None:
                raise not_found(instance_id)
            if row.status in ("complete", "errored", "terminated"):
                raise Conflict(
                    f"instance {instance_id!r} is {row.status}; it takes no more events",
                    code="instance.finished",
                )
            if max_storage_bytes is not None:
                used = self.usage.used(conn, [tenant_id])[tenant_id]
                if used + size > max_storage_bytes:
                    raise storage_full(max_storage_bytes)
            conn.execute(
                E.insert().values(instance_pk=row.pk, type=type_, payload=payload, created_at=now)
            )
            conn.execute(
                sa.update(I).where(I.c.pk == row.pk).values(stored_bytes=I.c.stored_bytes + size)
            )
            charge(conn, {tenant_id: size})
            conn.execute(
                sa.update(I).where(I.c.pk == row.pk, I.c.status == "waiting").values(due_at=now)
            )
            self.notify(conn)

        return write

    def instance(
        self, tenant_id: int, workflow: str, instance_id: str, limit: int, budget: int
    ) -> tuple[dict[str, Any], Page]:
        """The instance's row, and its first page of steps (see :meth:`steps`)."""
        with self.db.connect() as conn:
            row = conn.execute(
                sa.select(I).where(*instance_key(tenant_id, workflow, instance_id))
            ).first()
            if row is None:
                raise not_found(instance_id)
            return row._asdict(), self._steps(conn, row.pk, -1, limit, budget)

    def steps(
        self, tenant_id: int, workflow: str, instance_id: str, after: int, limit: int, budget: int
    ) -> Page:
        """Steps after position ``after``, in order: at most ``limit`` of them and about
        ``budget`` bytes of their values (at least one); each with its position ``seq``."""
        with self.db.connect() as conn:
            pk = self._pk(conn, tenant_id, workflow, instance_id)
            return self._steps(conn, pk, after, limit, budget)

    def _steps(self, conn: sa.Connection, pk: int, after: int, limit: int, budget: int) -> Page:
        query = sa.select(S).where(S.c.instance_pk == pk, S.c.seq > after).order_by(S.c.seq)
        page = _page(conn, query, limit, budget, _step_size)
        return Page([{**step_record(r), "seq": r["seq"]} for r in page.rows], page.more)

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
        workflow: str,
        status: str | None,
        before: int | None,
        limit: int,
        budget: int,
    ) -> Page:
        """The newest instances before ``before``, paged as :meth:`steps`."""
        query = sa.select(I).where(I.c.tenant_id == tenant_id, I.c.workflow == workflow)
        if status is not None:
            query = query.where(I.c.status == status)
        if before is not None:
            query = query.where(I.c.pk < before)
        with self.db.connect() as conn:
            return _page(conn, query.order_by(I.c.pk.desc()), limit, budget, _instance_size)

    def logs(
        self, tenant_id: int, workflow: str, instance_id: str, after: int, limit: int, budget: int
    ) -> Page:
        """Log lines after history event ``after``, oldest first, paged as :meth:`steps`;
        each with its event id ``pk``."""
        with self.db.connect() as conn:
            pk = self._pk(conn, tenant_id, workflow, instance_id)
            query = (
                sa.select(H.c.pk, H.c.ts, H.c.step, H.c.data)
                .where(H.c.instance_pk == pk, H.c.type == "log", H.c.pk > after)
                .order_by(H.c.pk)
            )
            page = _page(conn, query, limit, budget, lambda r: json_size(r["data"]))
        lines = [
            {"pk": r["pk"], "ts": r["ts"], "step": r["step"], "message": r["data"]["message"]}
            for r in page.rows
        ]
        return Page(lines, page.more)

    def parent_of(self, tenant_id: int, workflow: str, instance_id: str) -> int | None:
        with self.db.connect() as conn:
            parent = conn.execute(
                sa.select(I.c.parent_pk).where(*instance_key(tenant_id, workflow, instance_id))
            ).scalar()
        return int(parent) if parent is not None else None

    def history(
        self, tenant_id: int, workflow: str, instance_id: str, after: int, limit: int
    ) -> tuple[list[dict[str, Any]], str]:
        """History events after event id ``after``, and the instance's current status."""
        _, rows, status = self.instance_history(tenant_id, workflow, instance_id, after, limit)
        return rows, status

    def instance_history(
        self, tenant_id: int, workflow: str, instance_id: str, after: int, limit: int
    ) -> tuple[int, list[dict[str, Any]], str]:
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
            return int(found.pk), [r._asdict() for r in rows], str(found.status)

    def watched_history(
        self, cursors: Mapping[int, int], limit: int
    ) -> tuple[dict[int, str], list[dict[str, Any]]]:
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
            return statuses, [r._asdict() for r in rows]

    def delete_workflow(self, tenant_id: int, workflow: str) -> Write:
        def write(conn: sa.Connection) -> None:
            deleted = conn.execute(
                sa.delete(I)
                .where(I.c.tenant_id == tenant_id, I.c.workflow == workflow)
                .returning(I.c.stored_bytes)
            )
            charge(conn, {tenant_id: -sum(int(n) for n in deleted.scalars())})

        return write

    def counts_by_status(self) -> dict[str, int]:
        with self.db.connect() as conn:
            rows = conn.execute(sa.select(I.c.status, sa.func.count()).group_by(I.c.status))
            return {status: int(n) for status, n in rows}

    def notify(self, conn: sa.Connection) -> None:
        # Wakes `treadle worker` processes on other machines; SQLite has only this process.
        if self._pg:
            conn.execute(sa.text("SELECT pg_notify(:c, '')"), {"c": WAKE_CHANNEL})


@dataclass(eq=False)
class CreateWrite(BatchWrite):
    """New instances of one tenant, admitted under its quota in the same transaction.

    Creates that commit together lock their tenants' quota rows in tenant order, so two
    batches with creates of the same tenants never wait for each other in a cycle.
    """

    store: EngineStore
    tenant_id: int
    rows: list[dict[str, Any]]
    quota: Quota | None
    now: float
    lock_order = 1  # quota rows, after the instance rows step commits lock

    @staticmethod
    def combine(conn: sa.Connection, writes: Sequence[Any]) -> list[Any]:
        order = sorted(range(len(writes)), key=lambda i: writes[i].tenant_id)
        results: list[Any] = [None] * len(writes)
        for index in order:
            results[index] = writes[index].insert(conn)
        if any(r.ids for r in results):
            writes[0].store.notify(conn)
        return results

    def insert(self, conn: sa.Connection) -> Created:
        quotas = self.store.quotas
        ticket = None
        admission = Admission(len(self.rows))
        sizes = [2 * ROW_OVERHEAD + json_size(row["params"]) for row in self.rows]
        if self._storage_full(conn, sum(sizes)):
            return Created(set(), Admission(0, "storage", STORAGE_RETRY_AFTER))
        if self.quota is not None:
            ticket = quotas.take(conn, self.tenant_id, len(self.rows), self.quota, self.now)
            admission = ticket.admission
        rows = [
            {**row, "stored_bytes": size}
            for row, size in zip(self.rows[: admission.admitted], sizes, strict=False)
        ]
        inserted: dict[int, str] = {}
        if rows:
            inserted = {pk: id_ for pk, id_ in conn.execute(self.store.insert_instance, rows)}
        if inserted:
            events = [workflow_event(pk, self.now, "queued") for pk in inserted]
            conn.execute(H.insert(), events)
            stored = {row["id"]: row["stored_bytes"] for row in rows}
            charge(conn, {self.tenant_id: sum(stored[id_] for id_ in inserted.values())})
        if ticket is not None:
            quotas.settle(conn, ticket, len(inserted))
        else:
            grow_queue_bound(conn, self.tenant_id, len(inserted))
        return Created(set(inserted.values()), admission)

    def _storage_full(self, conn: sa.Connection, adding: int) -> bool:
        """Whether the creates would take the tenant past ``max_storage_mb`` (children, which
        come under no quota, are never refused: their parent's commits are held to it)."""
        limit = self.quota.max_storage_bytes if self.quota is not None else None
        if limit is None:
            return False
        return self.store.usage.used(conn, [self.tenant_id])[self.tenant_id] + adding > limit


@dataclass(frozen=True)
class Page:
    """Rows of a paged read, and whether more follow."""

    rows: list[dict[str, Any]]
    more: bool


def _page(
    conn: sa.Connection,
    query: sa.Select[Any],
    limit: int,
    budget: int,
    size_of: Callable[[Any], int],
) -> Page:
    """Up to ``limit`` rows of ``query`` and about ``budget`` bytes (at least one row), read a
    few at a time: a page of large rows is never all in memory before it is cut."""
    rows: list[dict[str, Any]] = []
    spent = 0
    result = conn.execute(query.limit(limit + 1).execution_options(yield_per=8)).mappings()
    try:
        for row in result:
            spent += size_of(row)
            if len(rows) == limit or (rows and spent > budget):
                return Page(rows, True)
            rows.append(dict(row))
    finally:
        result.close()
    return Page(rows, False)


def _instance_size(row: Any) -> int:
    return json_size(row["params"]) + json_size(row["output"]) + json_size(row["error"])


def _step_size(row: Any) -> int:
    return json_size(row["output"]) + json_size(row["error"]) + json_size(row["attempts"])


def lock_row(query: sa.Select[Any], postgresql: bool) -> sa.Select[Any]:
    """``query`` of one instance row, locking it on PostgreSQL (SQLite's write transactions
    lock the whole database). ``FOR NO KEY UPDATE``: rows of other tables that refer to the
    instance (steps, events, history) can still be inserted meanwhile."""
    return query.with_for_update(key_share=True) if postgresql else query


def _claimed(row: Any) -> Claimed:
    pk, tenant_id, workflow, id_, version, params, created_at, epoch, parent_pk, rollback = row
    mode = "rollback" if (rollback or {}).get("requested") else "run"
    return Claimed(
        pk, tenant_id, workflow, id_, version, params, created_at, epoch, parent_pk, mode
    )


def instance_key(tenant_id: int, workflow: str, instance_id: str) -> tuple[Any, ...]:
    return (I.c.tenant_id == tenant_id, I.c.workflow == workflow, I.c.id == instance_id)


def storage_full(max_bytes: int) -> StorageQuotaExceeded:
    return StorageQuotaExceeded(
        f"the tenant's storage is used up (max_storage_mb={max_bytes // (1024 * 1024)}); "
        "delete instances to make room",
        retry_after=STORAGE_RETRY_AFTER,
    )


def not_found(instance_id: str) -> NotFound:
    return NotFound(f"instance {instance_id!r} not found", code="instance.not_found")


def step_record(row: Any) -> dict[str, Any]:
    return {
        "name": row["name"],
        "count": row["count"],
        "type": row["type"],
        "status": row["status"],
        "output": row["output"],
        "error": row["error"],
        "attempts": row["attempts"] or [],
        "wake_at": row["wake_at"],
        "event_pk": row["event_pk"],
    }


def workflow_event(pk: int, now: float, status: str, **data: Any) -> dict[str, Any]:
    return {
        "instance_pk": pk,
        "ts": now,
        "type": f"workflow.{status}",
        "step": None,
        "data": {"status": status, **data},
    }
