"""Per-key flow control inside a tenant: concurrency and rate per key, debounce, singleton.

A workflow's ``flow`` (:class:`Flow`) applies to its instances created with a ``key``. Every
key with queued work has a row in ``flow_keys``: its limits and ``ready_at``, when a claim
should next look at it. The claim (``engine._claims``) takes keys whose ``ready_at`` has come,
oldest first, one instance of each per claim (round-robin: a hot key cannot starve the
others), counts the key's live instances and its starts within the rate period over partial
indexes (a handful of index entries: never more than the limits), and sets ``ready_at`` again:

- full (as many live instances as ``concurrency_per_key``): NULL, until one of them ends,
  is restarted, resumed or deleted, which wakes the key (:meth:`FlowStore.wake`): on
  PostgreSQL it appends a ``flow_wakeups`` row for the next claim of the tenant to reopen the
  key (an append locks nothing a claim or create holds), on SQLite it reopens it at once;
- its rate spent: when the oldest start within the period leaves it;
- nothing queued: NULL, until a create reopens it;
- otherwise: now, behind every key that was ready before it.

A key that is full or idle is never read by a claim, whatever its backlog.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from storage import Database, pipelined, tables
from treadle.errors import InvalidInput
from treadle.runtime import JSONObject

I = tables.instances  # noqa: E741
MAX_KEY = 128
PRIORITIES = range(10)
DEFAULT_PRIORITY = 5


@dataclass(frozen=True)
class Flow:
    """A workflow's flow control, as ``PUT /v1/workflows/{name}`` takes it in ``flow``."""

    concurrency_per_key: int | None = None
    rate_limit: int | None = None  # rate_per_key: at most rate_limit starts per rate_period
    rate_period: float | None = None  # seconds
    debounce: float | None = None  # seconds
    singleton: bool = False

    @property
    def mode(self) -> str | None:
        """What a keyed create does with the key's other instances: ``"singleton"`` (refused
        while one is live), ``"debounce"`` (merged into the one queued) or None."""
        if self.singleton:
            return "singleton"
        if self.debounce is not None:
            return "debounce"
        return None

    def to_json(self) -> JSONObject:
        out: dict[str, Any] = {}
        if self.concurrency_per_key is not None:
            out["concurrency_per_key"] = self.concurrency_per_key
        if self.rate_limit is not None:
            out["rate_per_key"] = {"limit": self.rate_limit, "period": self.rate_period}
        if self.debounce is not None:
            out["debounce"] = self.debounce
        if self.singleton:
            out["singleton"] = True
        return out

    @classmethod
    def from_json(cls, value: Any) -> Flow | None:
        """The flow stored with a workflow (as :meth:`to_json` wrote it); None for none."""
        if not value:
            return None
        rate = value.get("rate_per_key") or {}
        return cls(
            concurrency_per_key=value.get("concurrency_per_key"),
            rate_limit=rate.get("limit"),
            rate_period=rate.get("period"),
            debounce=value.get("debounce"),
            singleton=bool(value.get("singleton", False)),
        )


def check_key(key: str | None) -> None:
    if key is not None and not 1 <= len(key) <= MAX_KEY:
        raise InvalidInput(f"key must be 1 to {MAX_KEY} characters")


def check_priority(priority: int) -> None:
    if isinstance(priority, bool) or not isinstance(priority, int) or priority not in PRIORITIES:
        raise InvalidInput("priority must be an integer from 0 to 9")


# -- SQL ----------------------------------------------------------------------------------------

K, WAKE = tables.flow_keys, tables.flow_wakeups
_b = sa.bindparam
# Literally the predicates of the partial indexes (a bound parameter cannot be matched
# against an index predicate by PostgreSQL).
KEY_QUEUED = sa.text(
    "instances.status = 'queued' AND instances.flow_key IS NOT NULL"
    " AND instances.waiting_reason IS NULL"
)
KEY_LIVE = sa.text(
    "instances.flow_key IS NOT NULL"
    " AND instances.status IN ('running', 'waiting', 'waitingForPause', 'paused')"
)
# The predicate of uq_instances_singleton: not finished.
LIVE = sa.text("instances.status IN ('queued', 'running', 'waiting', 'waitingForPause', 'paused')")
# The predicate of ix_instances_running: holding a worker.
RUNNING_NOW = sa.text("instances.status IN ('running', 'waitingForPause')")
KEY_STARTED = sa.text("instances.flow_key IS NOT NULL AND instances.started_at IS NOT NULL")


_HAS_QUEUED = sa.exists().where(
    I.c.tenant_id == K.c.tenant_id,
    I.c.workflow == K.c.workflow,
    I.c.flow_key == K.c.flow_key,
    KEY_QUEUED,
)
_PG_APPLY_WAKEUPS = (
    "WITH woken AS ("
    " DELETE FROM flow_wakeups WHERE tenant_id = ANY(%(tenants)s)"
    " RETURNING tenant_id, workflow, flow_key),"
    " reopened AS ("
    " SELECT k.tenant_id, k.workflow, k.flow_key FROM flow_keys AS k"
    " WHERE (k.tenant_id, k.workflow, k.flow_key) IN (SELECT * FROM woken)"
    " AND (k.ready_at IS NULL OR k.ready_at > %(now)s)"
    " AND EXISTS (SELECT 1 FROM instances WHERE instances.tenant_id = k.tenant_id"
    " AND instances.workflow = k.workflow AND instances.flow_key = k.flow_key"
    " AND instances.status = 'queued' AND instances.flow_key IS NOT NULL"
    " AND instances.waiting_reason IS NULL)"
    " FOR UPDATE OF k SKIP LOCKED)"
    " UPDATE flow_keys AS k SET ready_at = %(now)s FROM reopened AS r"
    " WHERE k.tenant_id = r.tenant_id AND k.workflow = r.workflow AND k.flow_key = r.flow_key"
)


_APPEND_WAKEUP = (
    WAKE.insert().inline().values(tenant_id=_b("t"), workflow=_b("w"), flow_key=_b("k"))
)
_REOPEN = (
    sa.update(K)
    .where(K.c.tenant_id == _b("t"), K.c.workflow == _b("w"), K.c.flow_key == _b("k"))
    .where(sa.or_(K.c.ready_at.is_(None), K.c.ready_at > _b("now")), _HAS_QUEUED)
    .values(ready_at=_b("now"))
)


def _key_state(row: Any) -> KeyState:
    w, k, conc, rate, period, head, second, live, recent, oldest = row
    return KeyState(w, k, conc, rate, period, head, second is not None, live, recent, oldest)


def _same_key(k: Any = K) -> tuple[Any, ...]:
    return (
        I.c.tenant_id == k.c.tenant_id,
        I.c.workflow == k.c.workflow,
        I.c.flow_key == k.c.flow_key,
    )


@dataclass(frozen=True)
class KeyState:
    """A ready key as a claim reads it: its limits, the pk of its next queued instance (None:
    nothing queued and not delayed), its live instances and its starts within the period."""

    workflow: str
    key: str
    concurrency: int | None
    rate_limit: int | None
    rate_period: float | None
    head: int | None
    more: bool  # a second instance is queued behind the head
    live: int
    recent: int
    oldest: float | None  # the oldest start within the period

    def blocked_until(self, now: float) -> float | None:
        """None when the key may start one now; else when to look at it again (``inf``: not
        until a wakeup or a create reopens it)."""
        if self.head is None:
            return math.inf
        if self.concurrency is not None and self.live >= self.concurrency:
            return math.inf
        if self.rate_limit is not None and self.recent >= self.rate_limit:
            return (self.oldest if self.oldest is not None else now) + (self.rate_period or 0.0)
        return None

    def after_start(self, now: float) -> float:
        """When to look at the key again once it has started one now (``inf``: full, or
        nothing more queued)."""
        if not self.more:
            return math.inf
        if self.concurrency is not None and self.live + 1 >= self.concurrency:
            return math.inf
        if self.rate_limit is not None and self.recent + 1 >= self.rate_limit:
            first = self.oldest if self.oldest is not None and self.recent else now
            return first + (self.rate_period or 0.0)
        return now


class FlowStore:
    """All SQL of ``flow_keys`` and ``flow_wakeups``."""

    def __init__(self, dialect: str) -> None:
        self._pg = dialect == "postgresql"
        insert = postgresql.insert if self._pg else sqlite.insert
        row = insert(K)
        earlier = sa.or_(K.c.ready_at.is_(None), K.c.ready_at > row.excluded.ready_at)
        # A create opens its key: at the earliest of when it was to be looked at and when the
        # new instance is due. The limits are the workflow's as of this create.
        self._open = row.on_conflict_do_update(
            index_elements=[K.c.tenant_id, K.c.workflow, K.c.flow_key],
            set_={
                "concurrency": row.excluded.concurrency,
                "rate_limit": row.excluded.rate_limit,
                "rate_period": row.excluded.rate_period,
                "ready_at": sa.case((earlier, row.excluded.ready_at), else_=K.c.ready_at),
            },
        )
        period = sa.func.coalesce(K.c.rate_period, 0.0)
        recent = sa.and_(*_same_key(), KEY_STARTED, I.c.started_at > _b("now") - period)
        # A key's instances holding one of its slots, and its starts within its rate period.
        live = (
            sa.select(sa.func.count())
            .where(*_same_key(), KEY_LIVE, I.c.started_at.is_not(None))
            .scalar_subquery()
        )
        recent_count = sa.select(sa.func.count()).where(recent).scalar_subquery()
        ready = (
            sa.select(
                K.c.workflow,
                K.c.flow_key,
                K.c.concurrency,
                K.c.rate_limit,
                K.c.rate_period,
                sa.select(I.c.pk)
                .where(*_same_key(), KEY_QUEUED)
                .order_by(I.c.priority.desc(), I.c.due_at)
                .limit(1)
                .scalar_subquery(),
                sa.select(I.c.pk)
                .where(*_same_key(), KEY_QUEUED)
                .order_by(I.c.priority.desc(), I.c.due_at)
                .offset(1)
                .limit(1)
                .scalar_subquery(),
                # Counted only for the limits a key has (a CASE reads its subquery only
                # when it gets to it).
                sa.case(
                    (
                        K.c.concurrency.is_not(None),
                        live,
                    ),
                    else_=0,
                ),
                sa.case(
                    (
                        K.c.rate_limit.is_not(None),
                        recent_count,
                    ),
                    else_=0,
                ),
                sa.case(
                    (
                        K.c.rate_limit.is_not(None),
                        sa.select(sa.func.min(I.c.started_at)).where(recent).scalar_subquery(),
                    ),
                    else_=None,
                ),
            )
            .where(K.c.tenant_id == _b("t"), K.c.ready_at <= _b("now"))
            .order_by(K.c.ready_at)
            .limit(_b("n"))
        )
        if self._pg:
            ready = ready.with_for_update(of=K, skip_locked=True)
        self._ready = ready
        self._ready_sql: str | None = None  # as the driver takes it (PostgreSQL)
        self._ready_params: dict[str, Any] = {}
        self._state = sa.select(K.c.concurrency, K.c.rate_limit, live, recent_count)
        self._set_ready = (
            sa.update(K)
            .where(
                K.c.tenant_id == _b("t"),
                K.c.workflow == _b("w"),
                K.c.flow_key == _b("k"),
            )
            .values(ready_at=_b("ready_at"))
        )

    def open(
        self, conn: sa.Connection, tenant_id: int, workflow: str, flow: Flow | None,
        due: dict[str, float],
    ) -> None:  # fmt: skip
        """Open the keys ``due`` (key: when its new instance is due) of a create, in key order
        (two creates never lock the same keys in opposite orders)."""
        flow = flow or Flow()
        rows = [
            {
                "tenant_id": tenant_id,
                "workflow": workflow,
                "flow_key": key,
                "concurrency": flow.concurrency_per_key,
                "rate_limit": flow.rate_limit,
                "rate_period": flow.rate_period,
                "ready_at": at,
            }
            for key, at in sorted(due.items())
        ]
        if rows:
            conn.execute(self._open, rows)

    @staticmethod
    def wake(conn: sa.Connection, keys: list[tuple[int, str, str]], now: float) -> None:
        """Wake ``keys`` (tenant, workflow, key): one of their slots was freed or an instance
        of theirs queued again. On PostgreSQL a wakeup is appended, for the next claim of the
        tenant to reopen the key (locking the key row here could deadlock with a create that
        holds it); on SQLite, where transactions never overlap, the key is reopened at once
        if it has an instance queued."""
        if not keys:
            return
        rows = [{"t": t, "w": w, "k": k, "now": now} for t, w, k in sorted(set(keys))]
        if conn.dialect.name == "postgresql":
            conn.execute(_APPEND_WAKEUP, rows)
        else:
            conn.execute(_REOPEN, rows)

    def ready_keys(
        self, conn: sa.Connection, shares: list[tuple[int, int]], now: float
    ) -> dict[int, list[KeyState]]:
        """For each (tenant, n) of ``shares``: the keys woken since the tenant's last claim
        that have an instance queued are reopened (:meth:`apply_wakeups`), then up to n keys
        whose ``ready_at`` has come are read (:meth:`ready`). On PostgreSQL in one round trip.
        """
        if not self._pg:
            self.apply_wakeups(conn, [t for t, _ in shares], now)
            return {t: self.ready(conn, t, n, now) for t, n in shares}
        driver = conn.connection.driver_connection
        assert driver is not None
        if self._ready_sql is None:
            compiled = self._ready.compile(dialect=conn.dialect)
            self._ready_sql, self._ready_params = str(compiled), dict(compiled.params)
        cursors = []
        with pipelined(conn):
            driver.execute(_PG_APPLY_WAKEUPS, {"tenants": [t for t, _ in shares], "now": now})
            for t, n in shares:
                cursor = driver.cursor()
                cursor.execute(self._ready_sql, {**self._ready_params, "t": t, "n": n, "now": now})
                cursors.append((t, cursor))
        return {t: [_key_state(row) for row in cursor.fetchall()] for t, cursor in cursors}

    def apply_wakeups(self, conn: sa.Connection, tenants: list[int], now: float) -> None:
        """Reopen the keys woken since the last claim of ``tenants`` that have an instance
        queued. A key row another transaction holds is skipped: only a create holds one (a
        claim of the tenant would hold its advisory lock), and a create opens the key itself.
        """
        if self._pg:
            # One statement: the wakeups go, and the keys they name are reopened (looked up
            # by their primary key).
            driver = conn.connection.driver_connection
            assert driver is not None
            driver.execute(_PG_APPLY_WAKEUPS, {"tenants": tenants, "now": now})
            return
        # SQLite reopens keys at once (:meth:`wake`): only wakeups of a database written by
        # PostgreSQL's rules are left, none in practice.
        woken = conn.execute(
            sa.delete(WAKE)
            .where(WAKE.c.tenant_id.in_(tenants))
            .returning(WAKE.c.tenant_id, WAKE.c.workflow, WAKE.c.flow_key)
        ).all()
        self.wake(conn, [(int(t), w, k) for t, w, k in woken], now)

    def ready(self, conn: sa.Connection, tenant_id: int, limit: int, now: float) -> list[KeyState]:
        """Up to ``limit`` keys of a tenant whose ``ready_at`` has come, longest ready first,
        locked (PostgreSQL: skipping those another transaction holds)."""
        rows = conn.execute(self._ready, {"t": tenant_id, "n": limit, "now": now}).all()
        return [_key_state(row) for row in rows]

    def set_ready(
        self, conn: sa.Connection, tenant_id: int, ready: dict[tuple[str, str], float]
    ) -> None:
        """Store when each key ((workflow, key): time, ``inf`` for NULL) is next looked at."""
        if ready:
            conn.execute(
                self._set_ready,
                [
                    {"t": tenant_id, "w": w, "k": k, "ready_at": None if math.isinf(at) else at}
                    for (w, k), at in sorted(ready.items())
                ],
            )

    def waiting_reasons(
        self, db: Database, rows: Sequence[Mapping[str, Any]], now: float, running_cap: int
    ) -> dict[int, str]:
        """Why each of ``rows`` (queued instances of one tenant, due) has not started, by pk,
        where something holds it back: its key full (``concurrency_key``) or its rate spent
        (``rate_limit``), else its tenant at ``max_running_instances`` (``tenant_limit``).
        One read per key, and one for the tenant."""
        reasons: dict[int, str] = {}
        with db.connect() as conn:
            keys = sorted({(r["workflow"], r["flow_key"]) for r in rows if r["flow_key"]})
            for workflow, key in keys:
                state = conn.execute(
                    self._state.where(
                        K.c.tenant_id == rows[0]["tenant_id"],
                        K.c.workflow == workflow,
                        K.c.flow_key == key,
                    ),
                    {"now": now},
                ).first()
                reason = None
                if state is not None:
                    conc, rate, live, recent = state
                    if conc is not None and live >= conc:
                        reason = "concurrency_key"
                    elif rate is not None and recent >= rate:
                        reason = "rate_limit"
                if reason is not None:
                    for r in rows:
                        if (r["workflow"], r["flow_key"]) == (workflow, key):
                            reasons[int(r["pk"])] = reason
            if len(reasons) < len(rows):
                running = conn.execute(
                    sa.select(sa.func.count()).where(
                        I.c.tenant_id == rows[0]["tenant_id"], RUNNING_NOW, I.c.due_at > now
                    )
                ).scalar_one()
                if running >= running_cap:
                    for r in rows:
                        reasons.setdefault(int(r["pk"]), "tenant_limit")
        return reasons
