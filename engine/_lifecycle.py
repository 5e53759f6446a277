"""Lifecycle of an instance: pause, resume, terminate, restart, delete; retention.

The state machine (the statuses of ``docs/api.md``)::

    queued ──claim──> running ──suspend──> waiting ──due──> running ──> complete | errored
      │                 │                    │
    pause             pause                pause            (complete, errored, terminated
      ▼                 ▼                    ▼               are final)
    paused <──── waitingForPause          paused
      │  (the running step finishes,
    resume  then the replay stops)

- ``pause``: queued → paused; waiting → paused (its timers stop); running → waitingForPause,
  which becomes paused at the replay's next commit. Final and paused instances: 409.
- ``resume``: paused → queued or waiting, with sleep, retry and event-timeout times shifted by
  the time spent paused; waitingForPause → running (the pause is called off).
- ``terminate``: from any non-final status → terminated (final). With rollback requested the
  instance stays running while its rollback handlers run, then becomes terminated.
- ``restart``: from any status → queued, from the beginning or from a given step: recorded
  steps before it are kept, it and everything after are discarded (and give back the events
  they consumed); optionally moved to the workflow's current version.
- ``delete``: from any status; a replay in flight is fenced out.

Every transition bumps nothing it need not; those that take an instance away from a running
replay (terminate, restart) bump the lease epoch, so that replay commits nothing more.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from engine._flow import FlowStore
from engine._names import FINISHED, LIVE
from engine._quotas import grow_queue_bound
from engine._rows import E, H, I, S, Write, instance_key, not_found
from engine._usage import charge
from treadle.errors import Conflict, InvalidInput, NotFound
from treadle.runtime import JSONObject

ALLOWED = {
    "pause": ("queued", "running", "waiting"),
    "resume": ("paused", "waitingForPause"),
    "terminate": LIVE,
    "restart": (*LIVE, *FINISHED),
}


class Lifecycle:
    def __init__(self, postgresql: bool) -> None:
        self._pg = postgresql

    def change(
        self,
        tenant_id: int,
        workflow: str,
        instance_id: str,
        action: str,
        now: float,
        *,
        from_step: JSONObject | None = None,
        version: str | None = None,
        rollback: bool = False,
    ) -> Write:
        """A write that applies ``action`` and returns the instance's new status."""
        if action not in ALLOWED:
            raise InvalidInput(
                f"unknown status change {action!r}; one of: pause, resume, terminate, restart",
                code="instance.invalid_status_change",
            )

        key = instance_key(tenant_id, workflow, instance_id)

        def write(conn: sa.Connection) -> str:
            if self._pg:
                _lock_with_parent(conn, key)
            row = conn.execute(sa.select(I).where(*key)).first()
            if row is None:
                raise not_found(instance_id)
            if row.status not in ALLOWED[action]:
                raise Conflict(
                    f"cannot {action} an instance that is {row.status}",
                    code="instance.invalid_transition",
                )
            handler = getattr(self, f"_{action}")
            status: str = handler(
                conn, row, now, from_step=from_step, version=version, rollback=rollback
            )
            if status == "queued":  # queued again: it counts towards max_queued_instances
                grow_queue_bound(conn, tenant_id, 1)
            if row.flow_key is not None:
                # Queued again, or a slot of its key freed: the key is looked at again.
                FlowStore.wake(conn, [(tenant_id, workflow, row.flow_key)], now)
            conn.execute(
                H.insert().values(
                    instance_pk=row.pk,
                    ts=now,
                    type=f"workflow.{status}",
                    step=None,
                    data={"action": action, "status": status},
                )
            )
            return status

        return write

    def change_rows(
        self, conn: sa.Connection, tenant_id: int, rows: list[Any], action: str, now: float
    ) -> list[str | None]:
        """Apply ``action`` to each instance row of ``rows`` (read in ``conn``'s transaction,
        locked on PostgreSQL), as :meth:`change` does to one (no ``from``, ``upgrade`` or
        ``rollback``): the new status of each, or None where its status does not allow the
        action (it is left as it is). For bulk actions: the rows that change alike change in
        one statement, and the queue bound, keys and history are written once for all."""
        allowed = [row for row in rows if row.status in ALLOWED[action]]
        new = _change_many(conn, allowed, action, now, self)
        history = [
            {
                "instance_pk": row.pk,
                "ts": now,
                "type": f"workflow.{new[row.pk]}",
                "step": None,
                "data": {"action": action, "status": new[row.pk]},
            }
            for row in allowed
        ]
        grow_queue_bound(conn, tenant_id, sum(1 for s in new.values() if s == "queued"))
        keys = {(tenant_id, r.workflow, r.flow_key) for r in allowed if r.flow_key is not None}
        if keys:
            FlowStore.wake(conn, sorted(keys), now)
        if history:
            conn.execute(H.insert(), history)
        return [new.get(row.pk) for row in rows]

    def delete_rows(self, conn: sa.Connection, tenant_id: int, pks: list[int], now: float) -> int:
        """Delete the instances ``pks`` of a tenant, as :meth:`delete` does one; how many
        there were."""
        deleted = conn.execute(
            sa.delete(I)
            .where(I.c.tenant_id == tenant_id, I.c.pk.in_(pks))
            .returning(I.c.workflow, I.c.stored_bytes, I.c.flow_key)
        ).all()
        keys = {(tenant_id, r.workflow, r.flow_key) for r in deleted if r.flow_key is not None}
        if keys:
            FlowStore.wake(conn, sorted(keys), now)
        if deleted:
            charge(conn, {tenant_id: -sum(int(r.stored_bytes) for r in deleted)}, now)
        return len(deleted)

    def _pause(self, conn: sa.Connection, row: Any, now: float, **_: Any) -> str:
        if row.status == "running":
            _update(conn, row.pk, status="waitingForPause")
            return "waitingForPause"
        due = row.due_at if row.status == "waiting" else None
        _update(conn, row.pk, status="paused", paused_at=now, paused_due_at=due, due_at=None)
        return "paused"

    def _resume(self, conn: sa.Connection, row: Any, now: float, **_: Any) -> str:
        if row.status == "waitingForPause":
            _update(conn, row.pk, status="running")
            return "running"
        if row.paused_due_at is None:
            _update(conn, row.pk, status="queued", due_at=now, paused_at=None, waiting_reason=None)
            return "queued"
        shift = now - (row.paused_at or now)
        conn.execute(
            sa.update(S)
            .where(S.c.instance_pk == row.pk, S.c.status == "waiting", S.c.wake_at.is_not(None))
            .values(wake_at=S.c.wake_at + shift)
        )
        # An event that came while paused is delivered now rather than at the wait's timeout.
        pending = sa.exists().where(E.c.instance_pk == row.pk, E.c.consumed_at.is_(None))
        due = sa.case((pending, now), else_=row.paused_due_at + shift)
        _update(conn, row.pk, status="waiting", due_at=due, paused_at=None, paused_due_at=None)
        return "waiting"

    def _terminate(self, conn: sa.Connection, row: Any, now: float, **kw: Any) -> str:
        if kw["rollback"]:
            # Replayed once more in rollback mode; the replay's outcome makes it terminated.
            _update(
                conn,
                row.pk,
                status="running",
                due_at=now,
                lease_owner=None,
                epoch=I.c.epoch + 1,
                rollback={"requested": True},
            )
            return "running"
        _update(
            conn,
            row.pk,
            status="terminated",
            ended_at=now,
            due_at=None,
            lease_owner=None,
            epoch=I.c.epoch + 1,
        )
        if row.parent_pk is not None:
            _tell_parent(conn, row, now)
        return "terminated"

    def _restart(self, conn: sa.Connection, row: Any, now: float, **kw: Any) -> str:
        first = 0
        if kw["from_step"] is not None:
            first = _step_seq(conn, row.pk, kw["from_step"])
        doomed = (S.c.instance_pk == row.pk, S.c.seq >= first)
        consumed = sa.select(S.c.event_pk).where(*doomed, S.c.event_pk.is_not(None))
        conn.execute(sa.update(E).where(E.c.pk.in_(consumed)).values(consumed_at=None))
        conn.execute(sa.delete(S).where(*doomed))
        values: dict[str, object] = {
            "status": "queued",
            "due_at": now,
            "lease_owner": None,
            "epoch": I.c.epoch + 1,
            "output": None,
            "error": None,
            "error_name": None,
            "ended_at": None,
            "paused_at": None,
            "paused_due_at": None,
            "rollback": None,
            "waiting_reason": None,
        }
        if kw["version"] is not None:
            values["version"] = kw["version"]
        _update(conn, row.pk, **values)
        return "queued"

    def delete(self, tenant_id: int, workflow: str, instance_id: str, now: float) -> Write:
        key = instance_key(tenant_id, workflow, instance_id)

        def write(conn: sa.Connection) -> None:
            deleted = conn.execute(
                sa.delete(I).where(*key).returning(I.c.stored_bytes, I.c.flow_key)
            ).first()
            if deleted is None:
                raise not_found(instance_id)
            if deleted.flow_key is not None:
                FlowStore.wake(conn, [(tenant_id, workflow, deleted.flow_key)], now)
            charge(conn, {tenant_id: -int(deleted.stored_bytes)}, now)

        return write

    def purge(self, tenant_id: int, before: float, now: float, limit: int = 1000) -> Write:
        """Delete up to ``limit`` instances of a tenant that finished before ``before``."""
        old = (
            sa.select(I.c.pk)
            .where(I.c.tenant_id == tenant_id, I.c.status.in_(FINISHED), I.c.ended_at < before)
            .limit(limit)
        )

        def write(conn: sa.Connection) -> int:
            purged = conn.execute(
                sa.delete(I).where(I.c.pk.in_(old.scalar_subquery())).returning(I.c.stored_bytes)
            ).all()
            charge(conn, {tenant_id: -sum(int(n) for (n,) in purged)}, now)
            return len(purged)

        return write


def _change_many(
    conn: sa.Connection, rows: list[Any], action: str, now: float, one: Lifecycle
) -> dict[int, str]:
    """The statements of ``Lifecycle._<action>`` for many rows (their statuses allow it),
    alike rows in one statement; each row's new status, by pk."""
    new: dict[int, str] = {}

    def many(status: str, chosen: list[Any], **values: Any) -> None:
        if chosen:
            pks = [row.pk for row in chosen]
            conn.execute(sa.update(I).where(I.c.pk.in_(pks)).values(status=status, **values))
            new.update(dict.fromkeys(pks, status))

    if action == "terminate":
        many("terminated", rows, ended_at=now, due_at=None, lease_owner=None, epoch=I.c.epoch + 1)
        for row in rows:
            if row.parent_pk is not None:
                _tell_parent(conn, row, now)
    elif action == "pause":
        many("waitingForPause", [r for r in rows if r.status == "running"])
        # SET reads the row as it was: a waiting instance keeps when it was due.
        due = sa.case((I.c.status == "waiting", I.c.due_at), else_=None)
        rest = [r for r in rows if r.status != "running"]
        many("paused", rest, paused_at=now, paused_due_at=due, due_at=None)
    elif action == "resume":
        many("running", [r for r in rows if r.status == "waitingForPause"])
        paused = [r for r in rows if r.status == "paused"]
        queued = [r for r in paused if r.paused_due_at is None]
        many("queued", queued, due_at=now, paused_at=None, waiting_reason=None)
        for row in paused:
            if row.paused_due_at is not None:  # its timers shift: one by one
                new[row.pk] = one._resume(conn, row, now)
    elif action == "restart":
        pks = [row.pk for row in rows]
        if pks:
            consumed = sa.select(S.c.event_pk).where(
                S.c.instance_pk.in_(pks), S.c.event_pk.is_not(None)
            )
            conn.execute(sa.update(E).where(E.c.pk.in_(consumed)).values(consumed_at=None))
            conn.execute(sa.delete(S).where(S.c.instance_pk.in_(pks)))
        many(
            "queued",
            rows,
            due_at=now,
            lease_owner=None,
            epoch=I.c.epoch + 1,
            output=None,
            error=None,
            error_name=None,
            ended_at=None,
            paused_at=None,
            paused_due_at=None,
            rollback=None,
            waiting_reason=None,
        )
    else:
        raise AssertionError(action)
    return new


def _lock_with_parent(conn: sa.Connection, key: tuple[Any, ...]) -> None:
    """Lock the instance row and its parent's (a terminated child tells its parent), in
    ascending pk order as step commits lock theirs, so the two never deadlock."""
    own = sa.select(I.c.pk).where(*key).scalar_subquery()
    parent = sa.select(I.c.parent_pk).where(*key).scalar_subquery()
    rows = sa.select(I.c.pk).where(sa.or_(I.c.pk == own, I.c.pk == parent)).order_by(I.c.pk)
    conn.execute(rows.with_for_update(key_share=True))


def _update(conn: sa.Connection, pk: int, **values: Any) -> None:
    conn.execute(sa.update(I).where(I.c.pk == pk).values(**values))


def _step_seq(conn: sa.Connection, pk: int, step: JSONObject) -> int:
    name, count = step.get("name"), step.get("count", 1)
    if not isinstance(name, str) or not isinstance(count, int) or isinstance(count, bool):
        raise InvalidInput('"from" must be {"name": <step name>, "count"?: <occurrence>}')
    seq = conn.execute(
        sa.select(S.c.seq).where(S.c.instance_pk == pk, S.c.name == name, S.c.count == count)
    ).scalar()
    if seq is None:
        raise NotFound(
            f"the instance has no step {name!r} (occurrence {count}) to restart from",
            code="instance.step_not_found",
        )
    return int(seq)


def _tell_parent(conn: sa.Connection, row: Any, now: float) -> None:
    payload = {"status": "terminated", "output": None, "error": None}
    conn.execute(
        E.insert().values(
            instance_pk=row.parent_pk, type=f"child.{row.id}", payload=payload, created_at=now
        )
    )
    conn.execute(
        sa.update(I).where(I.c.pk == row.parent_pk, I.c.status == "waiting").values(due_at=now)
    )
