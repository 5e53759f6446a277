"""All SQL of claims and leases: which due instances a worker takes, and for how long.

A claim shares the runners of a process fairly between the tenants with due work, none beyond
its cap of instances holding a worker; it takes each instance with a lease (``due_at``) and a
new epoch, which fences out whoever held it before (``engine._fencing``). The heartbeat
extends the leases of the instances a process holds; an expired lease makes an instance due.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine._flow import FlowStore, KeyState
from engine._observe import RunTrace, run_trace
from engine._reads import Journal, send_journal_reads
from engine._rows import RUNNING, H, I, T, Write, workflow_event
from storage import Database, pipelined, tables
from treadle.runtime import JSONValue

K, WAKE = tables.flow_keys, tables.flow_wakeups

_PG_CLAIM_LOCK = 0x7472  # the advisory lock space of claims; the second key is the tenant
_TENANT_CHUNK = 16  # tenants locked and counted per statement of a claim
_MAX_TENANTS_PER_CLAIM = 64
_b = sa.bindparam

# Literally the predicate of the partial index ix_instances_running, so that PostgreSQL can use
# it whatever the plan (it cannot match bound parameters against an index predicate).
_HOLDING_A_WORKER = sa.text("instances.status IN ('running', 'waitingForPause')")

# Literally the predicates of the partial indexes ix_instances_tenant_due (started work, and
# queued instances delayed by start_at or debounce) and ix_instances_queue (queued, no key).
_DUE_WORK = sa.text(
    "instances.due_at IS NOT NULL"
    " AND (instances.status <> 'queued' OR instances.waiting_reason IS NOT NULL)"
)
_QUEUED = sa.text(
    "instances.status = 'queued' AND instances.flow_key IS NULL"
    " AND instances.waiting_reason IS NULL"
)
# A delayed instance whose time has come is not run by the claim that finds it: it joins the
# queue (of its key, or the tenant's), to start by priority and within its key's limits.
_DELAYED = sa.and_(I.c.status == "queued", I.c.waiting_reason.is_not(None))
_TAKE = (
    sa.update(I)
    .values(
        # A pause request outlives the lease of the replay it was made during.
        status=sa.case(
            (_DELAYED, "queued"),
            (I.c.status == "waitingForPause", "waitingForPause"),
            else_="running",
        ),
        lease_owner=sa.case((_DELAYED, None), else_=_b("owner")),
        due_at=sa.case((_DELAYED, I.c.due_at), else_=_b("lease")),
        epoch=sa.case((_DELAYED, I.c.epoch), else_=I.c.epoch + 1),
        started_at=sa.case(
            (_DELAYED, I.c.started_at), else_=sa.func.coalesce(I.c.started_at, _b("now"))
        ),
        waiting_reason=None,
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
        I.c.trace_id,
        I.c.span_id,
        I.c.parent_span_id,
        I.c.flow_key,
        I.c.status,
    )
)
# On PostgreSQL a claim takes each tenant's advisory lock, then counts its instances holding a
# worker (in a statement of its own, so that it sees what a claim that held the lock before
# committed), both sent with the claim's BEGIN in one round trip.
_PG_TRY_LOCK = (
    "SELECT t FROM unnest(%(tenants)s::integer[]) AS t WHERE pg_try_advisory_xact_lock(%(k)s, t)"
)
_PG_RUNNING = (
    "SELECT tenant_id, count(*) FROM instances WHERE tenant_id = ANY(%(tenants)s::integer[])"
    " AND instances.status IN ('running', 'waitingForPause') AND due_at > %(now)s"
    " GROUP BY tenant_id"
)
_LEASE = (
    sa.update(I)
    .where(sa.tuple_(I.c.pk, I.c.epoch).in_(_b("pairs", expanding=True)))
    .where(I.c.status.in_(RUNNING))
    .values(due_at=_b("lease"))
)
# On PostgreSQL a heartbeat never waits: a row locked by a commit in flight gets its lease
# extended by that commit.
_UNLOCKED = (
    sa.select(I.c.pk)
    .where(I.c.pk.in_(_b("locked", expanding=True)))
    .with_for_update(key_share=True, skip_locked=True)
)
_LEASE_SKIPPING_LOCKED = _LEASE.where(I.c.pk.in_(_UNLOCKED.scalar_subquery()))


@dataclass(frozen=True)
class Claimed:
    pk: int
    tenant_id: int
    workflow: str
    id: str
    version: str
    params: JSONValue
    created_at: float
    epoch: int
    parent_pk: int | None = None
    mode: str = "run"  # "rollback": terminated with rollback requested
    due_at: float | None = None  # when it was due, before the claim
    was: str = "queued"  # its status before the claim
    trace_id: str | None = None  # its trace, and the span of its run (engine._traces)
    span_id: str | None = None
    parent_span_id: str | None = None
    flow_key: str | None = None  # its key (engine._flow)

    @property
    def trace(self) -> RunTrace | None:
        return run_trace(self.trace_id, self.span_id, self.parent_span_id)


@dataclass(frozen=True)
class Claim:
    """What a claim took, and when the next instance of a tenant below its cap is due (None:
    nothing is; a tenant at its cap is due again when one of its replays ends)."""

    claimed: list[Claimed]
    next_due: float | None  # now when the claim moved delayed instances into a queue
    # Their journals, read in the claim's transaction (PostgreSQL: in its last round trip);
    # None where they are read after it (SQLite: the write lock is not held for reads).
    journals: dict[int, Journal] | None = None


@dataclass(frozen=True)
class _Plan:
    shares: list[tuple[int, int]]  # (tenant id, how many to claim)
    next_due: float | None


class Claims:
    """Claims, leases and their heartbeat."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._pg = db.dialect == "postgresql"
        self._lease = _LEASE_SKIPPING_LOCKED if self._pg else _LEASE
        self._turn = 0  # the tenant served last: the next claim's round starts after it
        self.flow = FlowStore(db.dialect)
        # The tenants whose keys had work at the last next_due_by_tenant (a key ready, or a
        # wakeup): only their claims read flow_keys.
        self._keyed: set[int] = set()

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

        keyed = set(self._keyed)

        def write(conn: sa.Connection) -> Claim:
            plan = self._plan(conn, now, limit, due, caps, room or {})
            claimed: list[Claimed] = []
            next_due = plan.next_due
            later: list[Callable[[], object]] = []
            if plan.shares:
                claimed, released, later = self._take(
                    conn, plan.shares, owner, now, lease_until, keyed
                )
                if released:
                    next_due = now
            running = [workflow_event(c.pk, now, "running") for c in claimed]
            if not self._pg:
                for send in later:
                    send()
                if running:
                    conn.execute(H.insert(), running)
                return Claim(claimed, next_due)
            # The keys' next looks, the history, the journals' reads and (a claim commits
            # alone) the COMMIT: one round trip.
            collect = None
            with pipelined(conn, last=True):
                for send in later:
                    send()
                if running:
                    conn.execute(H.insert().inline(), running)
                    collect = send_journal_reads(conn, [c.pk for c in claimed])
            return Claim(claimed, next_due, collect() if collect else {})

        return write

    def _take(
        self,
        conn: sa.Connection,
        shares: list[tuple[int, int]],
        owner: str,
        now: float,
        lease_until: float,
        keyed: set[int],
    ) -> tuple[list[Claimed], int, list[Callable[[], object]]]:
        """Take each tenant's share: its due started work first (oldest due first), then its
        queued instances by priority (highest first, then oldest), those of keys one per ready
        key; return them, with when each was due and its status before (for the metrics), and
        how many delayed instances joined a queue instead, and the writes left to send (of
        flow_keys and flow_wakeups: nothing reads them in this transaction)."""
        flow_tenants = [t for t, _ in shares if t in keyed]
        keys: dict[int, list[KeyState]] = {}
        if flow_tenants:
            keys = self.flow.ready_keys(conn, [(t, n) for t, n in shares if t in keyed], now)
        parts = [self._candidates(t, n, now, keys.get(t, [])) for t, n in shares]
        if len(parts) > 1:
            # Each a subquery of its own: compound members cannot carry ORDER BY or LIMIT.
            parts = [sa.select(*p.subquery().c) for p in parts]
            taken = sa.union_all(*parts).subquery()
        else:
            taken = parts[0].subquery()
        params = {"owner": owner, "lease": lease_until, "now": now}
        if self._pg:
            # The subquery reads the rows as they were before the update.
            take = _TAKE.where(I.c.pk == taken.c.pk).returning(taken.c.due_at, taken.c.status)
            rows: list[tuple[Any, ...]] = [tuple(r) for r in conn.execute(take, params)]
        else:
            # SQLite's RETURNING gives only the updated row's new values: read the old ones
            # first (in the same write transaction, which nothing else can change meanwhile).
            before = {int(pk): (d, st) for pk, d, st in conn.execute(sa.select(taken)).all()}
            rows = []
            if before:
                result = conn.execute(_TAKE.where(I.c.pk.in_(list(before))), params)
                rows = [(*row, *before[int(row[0])]) for row in result]
        claimed = [_claimed(row) for row in rows if row[14] != "queued"]
        released = [row for row in rows if row[14] == "queued"]
        later = self._settle_keys(conn, keys, claimed, now)
        # A delayed keyed instance that joined its key's queue reopens the key.
        woken = [(int(r[1]), r[2], r[13]) for r in released if r[13] is not None]
        if woken:
            later.append(functools.partial(self.flow.wake, conn, woken, now))
        return claimed, len(released), later

    def _candidates(
        self, tenant_id: int, limit: int, now: float, keys: list[KeyState]
    ) -> sa.Select[Any]:
        """The instances a tenant's share takes: its due started work, then queued ones."""
        started = sa.select(
            I.c.pk, I.c.due_at, I.c.status, sa.literal(0).label("rank"), I.c.priority
        ).where(I.c.tenant_id == tenant_id, I.c.due_at <= now, _DUE_WORK)
        started = started.order_by(I.c.due_at).limit(limit)
        queued = (
            sa.select(I.c.pk, I.c.due_at, I.c.status, sa.literal(1).label("rank"), I.c.priority)
            .where(I.c.tenant_id == tenant_id, _QUEUED)
            .order_by(I.c.priority.desc(), I.c.due_at)
            .limit(limit)
        )
        selects = [started, queued]
        heads = [k.head for k in keys if k.head is not None and k.blocked_until(now) is None]
        if heads:
            selects.append(
                sa.select(
                    I.c.pk, I.c.due_at, I.c.status, sa.literal(1).label("rank"), I.c.priority
                ).where(I.c.pk.in_(heads), I.c.status == "queued")
            )
        if self._pg:
            selects = [q.with_for_update(skip_locked=True) for q in selects]
        # Subqueries of their own: compound members cannot carry LIMIT (SQLite) or FOR UPDATE.
        each = sa.union_all(*(sa.select(*q.subquery().c) for q in selects)).subquery()
        return (
            sa.select(each.c.pk, each.c.due_at, each.c.status)
            .order_by(each.c.rank, each.c.priority.desc(), each.c.due_at)
            .limit(limit)
        )

    def _settle_keys(
        self,
        conn: sa.Connection,
        keys: dict[int, list[KeyState]],
        claimed: list[Claimed],
        now: float,
    ) -> list[Callable[[], object]]:
        """The writes that set when each key read by this claim is looked at again: after it
        started one, or while it cannot (full, rate spent, nothing queued); a key whose
        instance lost to others of higher priority stays where it was."""
        taken = {c.pk for c in claimed}
        writes: list[Callable[[], object]] = []
        for tenant_id, states in keys.items():
            ready: dict[tuple[str, str], float] = {}
            for k in states:
                blocked = k.blocked_until(now)
                if blocked is not None:
                    ready[(k.workflow, k.key)] = blocked
                elif k.head in taken:
                    ready[(k.workflow, k.key)] = k.after_start(now)
            if ready:
                writes.append(functools.partial(self.flow.set_ready, conn, tenant_id, ready))
        return writes

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
            chunk, running = self._lock_and_count(conn, turn[first : first + _TENANT_CHUNK], now)
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
        """Each tenant's earliest due time: a few index probes per tenant, however long its
        queue: its started work and delayed instances, the head of its queue, its keys' next
        ``ready_at`` (and any wakeup of a key: due now)."""
        t = T.c.id
        started = sa.select(sa.func.min(I.c.due_at)).where(I.c.tenant_id == t, _DUE_WORK)
        queued = (
            sa.select(I.c.due_at)
            .where(I.c.tenant_id == t, _QUEUED)
            .order_by(I.c.priority.desc(), I.c.due_at)
            .limit(1)
        )
        keys = sa.select(sa.func.min(K.c.ready_at)).where(
            K.c.tenant_id == t, K.c.ready_at.is_not(None)
        )
        woken = sa.select(WAKE.c.pk).where(WAKE.c.tenant_id == t).limit(1)
        query = sa.select(
            t,
            started.scalar_subquery(),
            queued.scalar_subquery(),
            keys.scalar_subquery(),
            woken.scalar_subquery(),
        )
        with self.db.connect() as conn:
            rows = conn.execute(query).all()
        due: dict[int, float] = {}
        keyed: set[int] = set()
        for tenant, at_started, at_queued, at_key, wakeup in rows:
            times = [float(x) for x in (at_started, at_queued, at_key) if x is not None]
            if wakeup is not None:
                times.append(0.0)
            if at_key is not None or wakeup is not None:
                keyed.add(int(tenant))
            if times:
                due[int(tenant)] = min(times)
        self._keyed = keyed
        return due

    def _lock_and_count(
        self, conn: sa.Connection, tenants: list[int], now: float
    ) -> tuple[list[int], dict[int, int]]:
        """The tenants this claim may serve, and the instances of each holding a worker (an
        expired lease holds none).

        On PostgreSQL two workers claiming for one tenant at once could both see a free slot:
        a claim takes a per-tenant advisory lock first, and skips tenants whose lock another
        claim holds (as SKIP LOCKED skips rows)."""
        if not tenants:
            return [], {}
        if not self._pg:
            rows = conn.execute(
                sa.select(I.c.tenant_id, sa.func.count())
                .where(I.c.tenant_id.in_(tenants), _HOLDING_A_WORKER, I.c.due_at > now)
                .group_by(I.c.tenant_id)
            )
            return tenants, {int(t): int(n) for t, n in rows}
        driver = conn.connection.driver_connection
        assert driver is not None
        lock, count = driver.cursor(), driver.cursor()
        with pipelined(conn):
            lock.execute(_PG_TRY_LOCK, {"k": _PG_CLAIM_LOCK, "tenants": tenants})
            count.execute(_PG_RUNNING, {"tenants": tenants, "now": now})
        held = {int(t) for (t,) in lock.fetchall()}
        running = {int(t): int(n) for t, n in count.fetchall() if t in held}
        return [t for t in tenants if t in held], running

    def release(self, claimed: Claimed, retry_at: float) -> Write:
        """Give an instance back after an infrastructure failure, to be tried again later."""

        def write(conn: sa.Connection) -> None:
            conn.execute(
                sa.update(I)
                .where(I.c.pk == claimed.pk, I.c.epoch == claimed.epoch)
                .where(I.c.status.in_(RUNNING))
                .values(due_at=retry_at, lease_owner=None)
            )

        return write

    def recover_all(self, now: float) -> Write:
        """Make every running instance due now (for a process that owns the database)."""

        def write(conn: sa.Connection) -> None:
            conn.execute(sa.update(I).where(I.c.status.in_(RUNNING)).values(due_at=now))

        return write

    def heartbeat(self, held: Iterable[Claimed], lease_until: float) -> None:
        """Extend the leases of the instances this process holds, in a transaction of its own
        (on PostgreSQL it skips rows that a commit in flight has locked: that commit extends
        them itself)."""
        pairs = [(c.pk, c.epoch) for c in held]
        if pairs:
            params = {"pairs": pairs, "lease": lease_until, "locked": sorted(p for p, _ in pairs)}
            with self.db.begin() as conn:
                conn.execute(self._lease, params)

    def still_held(self, held: Iterable[Claimed]) -> set[int]:
        """Which of ``held`` are still this replay's to run: same epoch, still running (or
        waiting for a pause). The others were terminated, restarted or deleted meanwhile."""
        pairs = [(c.pk, c.epoch) for c in held]
        if not pairs:
            return set()
        query = (
            sa.select(I.c.pk)
            .where(sa.tuple_(I.c.pk, I.c.epoch).in_(pairs))
            .where(I.c.status.in_(RUNNING))
        )
        with self.db.connect() as conn:
            return set(conn.execute(query).scalars())


def _claimed(row: Any) -> Claimed:
    pk, tenant_id, workflow, id_, version, params, created_at, epoch, parent_pk, rollback = row[:10]
    mode = "rollback" if (rollback or {}).get("requested") else "run"
    trace_id, span_id, parent_span_id, flow_key, _, due_at, was = row[10:17]
    return Claimed(
        pk, tenant_id, workflow, id_, version, params, created_at, epoch, parent_pk, mode,
        due_at=due_at, was=was, trace_id=trace_id, span_id=span_id,
        parent_span_id=parent_span_id, flow_key=flow_key,
    )  # fmt: skip
