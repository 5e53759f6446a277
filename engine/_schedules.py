"""Schedules in the database: every statement on ``schedules``, and the views the API shows.

A schedule's row holds its spec (``engine._cron``), ``next_fire_at`` (NULL while paused),
``last_fire_at`` and ``last_instance`` (the last fire made, for overlap), ``held_fire_at`` (a
fire that ``buffer_one`` holds back) and the lease of the process firing it. The firer
(``engine._firer``) takes the due ones under a short lease (on PostgreSQL ``FOR UPDATE SKIP
LOCKED``: processes never wait on each other) and moves them on fenced by that lease and by
``updated_at``, which only a put changes: a fire never undoes a put made while it fired.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, TypedDict

import sqlalchemy as sa

from engine._cron import Spec, invalid
from engine._names import LIVE, encode_payload
from engine._rows import put_racing
from storage import Database, iso, tables
from treadle.errors import InvalidInput, NotFound
from treadle.runtime import JSONValue

S, W, I = tables.schedules, tables.workflows, tables.instances  # noqa: E741
MAX_SCHEDULE_ID = 64
_ID = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9_-]*")


class ScheduleView(TypedDict):
    id: str
    workflow: str
    cron: str | None
    every: float | None
    timezone: str
    params: JSONValue
    overlap: str
    catch_up: str
    paused: bool
    next_fire_at: str | None
    last_fire_at: str | None
    created_at: str | None
    updated_at: str | None


@dataclass(frozen=True)
class Due:
    """A schedule the firer holds the lease of."""

    tenant_id: int
    workflow: str
    id: str
    spec: Spec
    next_fire_at: float | None
    last_instance: str | None
    held_fire_at: float | None
    created_at: float
    updated_at: float

    @property
    def anchor(self) -> float:
        """Where ``every`` counts from: the creation, to the second (ids name seconds)."""
        return float(math.floor(self.created_at))


def check_schedule_id(value: str) -> str:
    if not value or len(value) > MAX_SCHEDULE_ID or not _ID.fullmatch(value):
        raise InvalidInput(
            f"schedule id must be 1-{MAX_SCHEDULE_ID} characters matching "
            "^[a-zA-Z0-9_][a-zA-Z0-9_-]*$",
            code="schedule.invalid_id",
        )
    return value


def _not_found(workflow: str, schedule_id: str) -> NotFound:
    return NotFound(
        f"schedule {schedule_id!r} of workflow {workflow!r} not found", code="schedule.not_found"
    )


def _key(tenant_id: int, workflow: str, schedule_id: str) -> sa.ColumnElement[bool]:
    return sa.and_(S.c.tenant_id == tenant_id, S.c.workflow == workflow, S.c.id == schedule_id)


class ScheduleStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._pg = db.dialect == "postgresql"

    # -- the API ----------------------------------------------------------------------------

    def put(
        self,
        tenant_id: int,
        workflow: str,
        schedule_id: str,
        spec: Spec,
        paused: bool,
        now: float,
    ) -> tuple[ScheduleView, bool]:
        """Create or replace a schedule; True when it was created. A replaced spec fires from
        now on; an unchanged one keeps its next fire. Nothing is written for a refused put."""
        check_schedule_id(schedule_id)
        try:
            encode_payload(spec.params, "params")
        except InvalidInput as exc:
            raise invalid("params", exc.message) from None
        return put_racing(  # created meanwhile by another put: replaced then
            self.db,
            lambda conn: self._put(conn, tenant_id, workflow, schedule_id, spec, paused, now),
        )

    def _put(
        self,
        conn: sa.Connection,
        tenant_id: int,
        workflow: str,
        schedule_id: str,
        spec: Spec,
        paused: bool,
        now: float,
    ) -> tuple[ScheduleView, bool]:
        found = conn.execute(
            sa.select(W.c.name).where(W.c.tenant_id == tenant_id, W.c.name == workflow)
        ).first()
        if found is None:
            raise NotFound(f"workflow {workflow!r} not found", code="workflow.not_found")
        pick = sa.select(S).where(_key(tenant_id, workflow, schedule_id))
        row = conn.execute(pick.with_for_update() if self._pg else pick).first()
        if row is None:
            anchor = float(math.floor(now))
            next_at = None if paused else spec.next_fire(now, anchor)
            values = {
                "tenant_id": tenant_id,
                "workflow": workflow,
                "id": schedule_id,
                "spec": spec.to_json(),
                "paused": paused,
                "next_fire_at": next_at,
                "created_at": now,
                "updated_at": now,
            }
            conn.execute(S.insert().values(**values))
            return _view(conn.execute(pick).one()), True
        same = Spec.from_json(row.spec) == spec and bool(row.paused) == paused
        next_at = row.next_fire_at
        if not same:
            anchor = float(math.floor(row.created_at))
            next_at = None if paused else spec.next_fire(now, anchor)
        conn.execute(
            S.update()
            .where(_key(tenant_id, workflow, schedule_id))
            .values(
                spec=spec.to_json(),
                paused=paused,
                next_fire_at=next_at,
                held_fire_at=row.held_fire_at if same else None,
                lease_owner=None,
                lease_until=None,
                updated_at=max(now, row.updated_at + 1e-6),
            )
        )
        return _view(conn.execute(pick).one()), False

    def get(self, tenant_id: int, workflow: str, schedule_id: str) -> ScheduleView:
        with self.db.connect() as conn:
            row = conn.execute(sa.select(S).where(_key(tenant_id, workflow, schedule_id))).first()
        if row is None:
            raise _not_found(workflow, schedule_id)
        return _view(row)

    def listing(self, tenant_id: int, workflow: str) -> list[ScheduleView]:
        where = sa.and_(S.c.tenant_id == tenant_id, S.c.workflow == workflow)
        with self.db.connect() as conn:
            rows = conn.execute(sa.select(S).where(where).order_by(S.c.id)).all()
        return [_view(row) for row in rows]

    def delete(self, tenant_id: int, workflow: str, schedule_id: str) -> None:
        with self.db.begin() as conn:
            deleted = conn.execute(S.delete().where(_key(tenant_id, workflow, schedule_id)))
        if deleted.rowcount == 0:
            raise _not_found(workflow, schedule_id)

    # -- the firer --------------------------------------------------------------------------

    def claim(self, owner: str, now: float, until: float, limit: int) -> list[Due]:
        """Take the lease of up to ``limit`` due schedules (or holding a fire back) whose
        lease is free."""
        free = sa.and_(
            S.c.paused.is_(False), sa.or_(S.c.lease_until.is_(None), S.c.lease_until <= now)
        )
        keys = (S.c.tenant_id, S.c.workflow, S.c.id)
        # Two probes, one per partial index (ix_schedules_next, ix_schedules_held): an OR of
        # the two conditions would read every schedule.
        fires = sa.select(*keys).where(S.c.next_fire_at <= now, free)
        fires = fires.order_by(S.c.next_fire_at).limit(limit)
        held = sa.select(*keys).where(S.c.held_fire_at.is_not(None), free).limit(limit)
        if self._pg:
            fires = fires.with_for_update(skip_locked=True)
            held = held.with_for_update(skip_locked=True)
        pick = sa.union(*(sa.select(*q.subquery().c) for q in (fires, held)))
        take = (
            S.update()
            .where(sa.tuple_(*keys).in_(pick))
            .values(lease_owner=owner, lease_until=until)
            .returning(*S.c)
        )
        with self.db.begin() as conn:
            rows = conn.execute(take).all()
        return [_due(row) for row in rows]

    def release_all(self) -> None:
        """Give back every lease (SQLite: the one process owning the file starts, and what a
        killed predecessor held is its own to fire now). A quota's back-off has no owner and
        stays."""
        with self.db.begin() as conn:
            conn.execute(
                S.update()
                .where(S.c.lease_owner.is_not(None))
                .values(lease_owner=None, lease_until=None)
            )

    def next_fire_at(self) -> float | None:
        """The earliest next fire of any schedule (for how long the firer may sleep)."""
        with self.db.connect() as conn:
            return conn.execute(
                sa.select(sa.func.min(S.c.next_fire_at)).where(S.c.next_fire_at.is_not(None))
            ).scalar()

    def version(self, tenant_id: int, workflow: str) -> str | None:
        """The workflow's current version (None: it is gone)."""
        with self.db.connect() as conn:
            return conn.execute(
                sa.select(W.c.version).where(W.c.tenant_id == tenant_id, W.c.name == workflow)
            ).scalar()

    def live(self, tenant_id: int, workflow: str, instance_id: str) -> bool:
        """Whether the instance is there and not finished."""
        where = sa.and_(I.c.tenant_id == tenant_id, I.c.workflow == workflow, I.c.id == instance_id)
        with self.db.connect() as conn:
            status = conn.execute(sa.select(I.c.status).where(where)).scalar()
        return status in LIVE

    def advance(self, due: Due, owner: str, values: dict[str, Any]) -> bool:
        """Record a pass of the firer and give the lease back, fenced by the lease and by
        ``updated_at``; False when the schedule was put, deleted or taken over meanwhile."""
        fenced = sa.and_(
            _key(due.tenant_id, due.workflow, due.id),
            S.c.lease_owner == owner,
            S.c.updated_at == due.updated_at,
        )
        with self.db.begin() as conn:
            done = conn.execute(S.update().where(fenced).values(**values))
        return done.rowcount == 1


def _due(row: Any) -> Due:
    return Due(
        row.tenant_id,
        row.workflow,
        row.id,
        Spec.from_json(row.spec),
        row.next_fire_at,
        row.last_instance,
        row.held_fire_at,
        row.created_at,
        row.updated_at,
    )


def _view(row: Any) -> ScheduleView:
    spec = Spec.from_json(row.spec)
    return {
        "id": row.id,
        "workflow": row.workflow,
        "cron": spec.cron,
        "every": spec.every,
        "timezone": spec.timezone,
        "params": spec.params,
        "overlap": spec.overlap,
        "catch_up": spec.catch_up,
        "paused": bool(row.paused),
        "next_fire_at": iso(row.next_fire_at),
        "last_fire_at": iso(row.last_fire_at),
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }
