"""Bulk actions: pause, resume, terminate, restart or delete every instance a filter matches.

A job (a ``bulk_jobs`` row) is created with the count of the instances its filter matches
(``matched``) and the largest of their pks (``high_pk``), in one transaction: it covers the
instances that existed then, never one created after. Every engine process runs a
:class:`BulkWorker` thread that takes a running job under a short lease and does one batch
of it: the next :data:`BATCH` instances that still match the filter, by ascending pk after
``cursor_pk``, each changed as a single status change or delete would change it
(``Lifecycle.change_rows``, ``Lifecycle.delete_rows``). The instances' changes, the new
``cursor_pk`` and the counts commit in ONE transaction, fenced by the lease and by the cursor
the batch started from: a process killed at any point leaves the job at the end of its last
committed batch, and whoever takes it next (this process after a restart, or another once
the lease has run out) does the next batch. No instance is counted twice, none is lost.

After each batch the job's lease is given back with ``lease_until`` = now, and the next pass
takes the running job whose lease ended longest ago: jobs take turns a batch at a time, so
one tenant's job over millions of instances does not hold back another's.

An instance whose status does not allow the action (resume of one not paused, terminate of
a finished one) is left as it is and counted ``failed``, under ``instance.invalid_transition``
in ``failures``, as a single change would answer 409. An instance that no longer matches the
filter when its batch comes (it finished, or was deleted, meanwhile) is not counted at all.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

import sqlalchemy as sa

from engine._background import Background
from engine._lifecycle import Lifecycle
from engine._observe import Ended, run_trace
from engine._rows import notify
from engine._search import InstanceFilter
from storage import Clock, Database, iso, tables
from treadle.errors import Conflict, InvalidInput, NotFound

_log = logging.getLogger("treadle.bulk")
B, I, W = tables.bulk_jobs, tables.instances, tables.workflows  # noqa: E741
ACTIONS = ("pause", "resume", "terminate", "restart", "delete")
BATCH = 500
LEASE_SECONDS = 30.0
POLL_SECONDS = 1.0
_INVALID = "instance.invalid_transition"


class BulkJobView(TypedDict):
    job: str
    action: str
    filter: dict[str, Any]
    status: str
    matched: int
    done: int
    failed: int
    failures: dict[str, int]
    created_at: str | None
    ended_at: str | None
    cursor: NotRequired[int]


@dataclass(frozen=True)
class Job:
    """A running job whose lease this process holds."""

    id: str
    tenant_id: int
    filter: InstanceFilter
    action: str
    high_pk: int
    cursor_pk: int


@dataclass(frozen=True)
class BatchDone:
    """What one batch did: the instances it counted, whether the job is over, the statuses
    it left (a status here: an instance that a worker may now take) and the instances it
    terminated (their runs end here, without a replay)."""

    counted: int
    finished: bool
    statuses: frozenset[str]
    ended: tuple[Ended, ...] = ()


def check_action(action: Any) -> str:
    if action not in ACTIONS:
        raise InvalidInput(
            f"unknown bulk action {action!r}; one of: {', '.join(ACTIONS)}",
            code="bulk.invalid_action",
        )
    return str(action)


def _not_found(job_id: str) -> NotFound:
    return NotFound(f"bulk job {job_id!r} not found", code="bulk.not_found")


class BulkStore:
    def __init__(self, db: Database, lifecycle: Lifecycle) -> None:
        self.db = db
        self._pg = db.dialect == "postgresql"
        self._lifecycle = lifecycle

    # -- the API ----------------------------------------------------------------------------

    def create(
        self, tenant_id: int, filter: InstanceFilter, action: str, now: float
    ) -> BulkJobView:
        """Start a job: count what the filter matches and store the job, in one transaction.
        A job that matches nothing is done at once."""
        check_action(action)
        job_id = "bj_" + secrets.token_hex(12)
        with self.db.begin() as conn:
            if filter.workflow is not None:
                found = conn.execute(
                    sa.select(W.c.name).where(
                        W.c.tenant_id == tenant_id, W.c.name == filter.workflow
                    )
                ).first()
                if found is None:
                    raise NotFound(
                        f"workflow {filter.workflow!r} not found", code="workflow.not_found"
                    )
            where = filter.where(tenant_id)
            matched, high = conn.execute(
                sa.select(sa.func.count(), sa.func.max(I.c.pk)).where(*where)
            ).one()
            running = bool(matched)
            conn.execute(
                B.insert().values(
                    id=job_id,
                    tenant_id=tenant_id,
                    filter=filter.to_json(),
                    action=action,
                    status="running" if running else "done",
                    matched=int(matched),
                    done=0,
                    failed=0,
                    failures={},
                    high_pk=int(high or 0),
                    cursor_pk=0,
                    lease_until=now if running else None,
                    created_at=now,
                    ended_at=None if running else now,
                )
            )
            row = conn.execute(sa.select(B).where(B.c.id == job_id)).one()
        return _view(row)

    def get(self, tenant_id: int, job_id: str) -> BulkJobView:
        with self.db.connect() as conn:
            row = conn.execute(
                sa.select(B).where(B.c.tenant_id == tenant_id, B.c.id == job_id)
            ).first()
        if row is None:
            raise _not_found(job_id)
        return _view(row)

    def listing(self, tenant_id: int, limit: int = 100) -> list[BulkJobView]:
        """The tenant's jobs, newest first (at most ``limit``)."""
        with self.db.connect() as conn:
            rows = conn.execute(
                sa.select(B)
                .where(B.c.tenant_id == tenant_id)
                .order_by(B.c.created_at.desc(), B.c.id)
                .limit(limit)
            ).all()
        return [_view(row) for row in rows]

    def cancel(self, tenant_id: int, job_id: str, now: float) -> BulkJobView:
        """Stop a running job after the batch in progress (if any): what is done stays done.
        A job already over: 409 ``bulk.finished``."""
        with self.db.begin() as conn:
            key = sa.and_(B.c.tenant_id == tenant_id, B.c.id == job_id)
            pick = sa.select(B).where(key)
            row = conn.execute(pick.with_for_update() if self._pg else pick).first()
            if row is None:
                raise _not_found(job_id)
            if row.status != "running":
                raise Conflict(f"bulk job {job_id!r} is {row.status}", code="bulk.finished")
            conn.execute(
                B.update()
                .where(key)
                .values(status="canceled", ended_at=now, lease_owner=None, lease_until=None)
            )
            return _view(conn.execute(pick).one())

    # -- the worker -------------------------------------------------------------------------

    def claim(self, owner: str, now: float, until: float) -> Job | None:
        """Take the lease of the running job whose lease ended longest ago, if any is free."""
        free = sa.and_(B.c.status == "running", B.c.lease_until <= now)
        pick = sa.select(B.c.id).where(free).order_by(B.c.lease_until).limit(1)
        if self._pg:
            pick = pick.with_for_update(skip_locked=True)
        take = (
            B.update()
            # ``=`` a scalar subquery: evaluated once (``IN`` may run it again per row).
            .where(B.c.id == pick.scalar_subquery(), free)
            .values(lease_owner=owner, lease_until=until)
            .returning(*B.c)
        )
        with self.db.begin() as conn:
            row = conn.execute(take).first()
        if row is None:
            return None
        try:
            flt = InstanceFilter.from_json(row.filter)
        except Exception:  # stored by an older server: the job cannot go on
            self._fail(row.id, owner, now)
            raise
        return Job(row.id, row.tenant_id, flt, row.action, row.high_pk, row.cursor_pk)

    def _fail(self, job_id: str, owner: str, now: float) -> None:
        with self.db.begin() as conn:
            conn.execute(
                B.update()
                .where(B.c.id == job_id, B.c.lease_owner == owner)
                .values(status="failed", ended_at=now, lease_owner=None, lease_until=None)
            )

    def run_batch(self, job: Job, owner: str, now: float, limit: int = BATCH) -> BatchDone | None:
        """Do the next batch of ``job`` and give its lease back, in one transaction; None
        when the job was taken over, canceled or moved on meanwhile (nothing written)."""
        with self.db.begin() as conn:
            mine = sa.and_(
                B.c.id == job.id,
                B.c.status == "running",
                B.c.lease_owner == owner,
                B.c.cursor_pk == job.cursor_pk,
            )
            check = sa.select(B.c.failures).where(mine)
            held = conn.execute(check.with_for_update() if self._pg else check).first()
            if held is None:
                return None
            where = job.filter.where(job.tenant_id)
            window = (I.c.pk > job.cursor_pk, I.c.pk <= job.high_pk)
            pick = sa.select(I.c.pk, I.c.parent_pk).where(*where, *window)
            batch = conn.execute(pick.order_by(I.c.pk).limit(limit)).all()
            pks = [row.pk for row in batch]
            parents = {row.parent_pk for row in batch if row.parent_pk is not None}
            finished = len(pks) < limit or pks[-1] >= job.high_pk
            done, failed, statuses, ended = self._apply(conn, job, pks, parents, now)
            failures = dict(held.failures or {})
            if failed:
                failures[_INVALID] = failures.get(_INVALID, 0) + failed
            values: dict[str, Any] = {
                "cursor_pk": job.high_pk if finished else pks[-1],
                "done": B.c.done + done,
                "failed": B.c.failed + failed,
                "failures": failures,
                "lease_owner": None,
                "lease_until": now,
            }
            if finished:
                values.update(status="done", ended_at=now, lease_until=None)
            conn.execute(B.update().where(mine).values(**values))
            if statuses & {"queued", "waiting", "running"}:
                notify(conn, self._pg)
        return BatchDone(done + failed, finished, frozenset(statuses), tuple(ended))

    def _apply(
        self, conn: sa.Connection, job: Job, pks: list[int], parents: set[int], now: float
    ) -> tuple[int, int, set[str], list[Ended]]:
        """Apply the job's action to the instances ``pks``: (done, failed, statuses left,
        instances terminated)."""
        if not pks:
            return 0, 0, set(), []
        if self._pg:
            # Locked with their parents (a terminated child tells its parent) in ascending pk
            # order, as step commits lock theirs.
            lock = sa.select(I.c.pk).where(I.c.pk.in_(sorted({*pks, *parents}))).order_by(I.c.pk)
            conn.execute(lock.with_for_update(key_share=True)).all()
        # Read again, locked: one may have been deleted or have changed status meanwhile.
        # Only the status and the error of an instance change; the rest of a filter holds.
        rows = [
            row
            for row in conn.execute(sa.select(I).where(I.c.pk.in_(pks)).order_by(I.c.pk))
            if _still_matches(job.filter, row)
        ]
        if not rows:
            return 0, 0, set(), []
        if job.action == "delete":
            pks = [row.pk for row in rows]
            deleted = self._lifecycle.delete_rows(conn, job.tenant_id, pks, now)
            return deleted, 0, set(), []
        statuses = self._lifecycle.change_rows(conn, job.tenant_id, rows, job.action, now)
        changed = {s for s in statuses if s is not None}
        done = sum(1 for s in statuses if s is not None)
        ended = [
            Ended(
                job.tenant_id,
                row.workflow,
                row.id,
                status,
                None,
                row.created_at,
                now,
                run_trace(row.trace_id, row.span_id, row.parent_span_id),
            )
            for row, status in zip(rows, statuses, strict=True)
            if status == "terminated"
        ]
        return done, len(statuses) - done, changed, ended

    def release_all(self) -> None:
        """Give back every job's lease (SQLite: the one process owning the file starts, and
        what a killed predecessor held is its own to go on with now)."""
        with self.db.begin() as conn:
            conn.execute(
                B.update()
                .where(B.c.status == "running", B.c.lease_owner.is_not(None))
                .values(lease_owner=None, lease_until=0.0)
            )


def _still_matches(flt: InstanceFilter, row: Any) -> bool:
    if flt.statuses and row.status not in flt.statuses:
        return False
    return flt.error_name is None or row.error_name == flt.error_name


def _view(row: Any) -> BulkJobView:
    return {
        "job": row.id,
        "action": row.action,
        "filter": row.filter,
        "status": row.status,
        "matched": int(row.matched),
        "done": int(row.done),
        "failed": int(row.failed),
        "failures": dict(row.failures or {}),
        "created_at": iso(row.created_at),
        "ended_at": iso(row.ended_at),
    }


class BulkWorker(Background):
    """The thread of an engine process that works on bulk jobs, a batch at a time;
    ``changed(batch)`` after each batch that changed instances (to wake the scheduler and
    tell the observer of the runs it ended)."""

    name = "treadle-bulk"
    what = "working on bulk jobs"

    def __init__(
        self,
        store: BulkStore,
        clock: Clock,
        owner: str,
        changed: Callable[[BatchDone], None],
        batch: int = BATCH,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        super().__init__(_log)
        self.store = store
        self._lease = lease_seconds
        self._clock = clock
        self._owner = owner
        self._changed = changed
        self._batch = batch

    def start(self) -> None:
        if self.store.db.dialect == "sqlite":
            self.store.release_all()
        super().start()

    def run_pass(self) -> float:
        return 0.0 if self.work_once() else POLL_SECONDS

    def work_once(self) -> bool:
        """Take a job and do one batch of it; False when no job was free."""
        now = self._clock.now()
        job = self.store.claim(self._owner, now, now + self._lease)
        if job is None:
            return False
        result = self.store.run_batch(job, self._owner, self._clock.now(), self._batch)
        if result is not None and (result.statuses or result.ended):
            self._changed(result)
        return True


class Bulk:
    """The engine's face for bulk jobs: create, read, list and cancel them, and the worker
    thread that does them."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        owner: str,
        lifecycle: Lifecycle,
        changed: Callable[[BatchDone], None],
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self._clock = clock
        self.store = BulkStore(db, lifecycle)
        self.worker = BulkWorker(self.store, clock, owner, changed, lease_seconds=lease_seconds)

    def start(self) -> None:
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop()

    def create(self, tenant_id: int, filter: Any, action: str) -> BulkJobView:
        """Start a job of ``action`` over what ``filter`` (the JSON of an instance search:
        ``InstanceFilter.from_json``) matches; bad input raises before anything is written."""
        check_action(action)
        view = self.store.create(
            tenant_id, InstanceFilter.from_json(filter), action, self._clock.now()
        )
        self.worker.wake()
        return view

    def get(self, tenant_id: int, job_id: str) -> BulkJobView:
        return self.store.get(tenant_id, job_id)

    def listing(self, tenant_id: int) -> list[BulkJobView]:
        return self.store.listing(tenant_id)

    def cancel(self, tenant_id: int, job_id: str) -> BulkJobView:
        return self.store.cancel(tenant_id, job_id, self._clock.now())
