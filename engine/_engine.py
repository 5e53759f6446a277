"""The engine's face to the dispatcher: create, inspect and signal instances; run them."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import NotRequired, TypedDict

from engine._bulk import BatchDone, Bulk
from engine._flow import DEFAULT_PRIORITY, Flow, check_key, check_priority
from engine._instances import CreateWrite
from engine._lifecycle import Lifecycle
from engine._links import Links
from engine._names import (
    MAX_PAYLOAD_BYTES,
    check_event_type,
    check_instance_id,
    check_status,
    encode_payload,
)
from engine._observe import Ended, Observer, Waited, run_trace
from engine._quotas import Admission, Quota
from engine._reads import Page, Stalled
from engine._replay import LoadRunner
from engine._rows import (
    HistoryEvent,
    InstanceRow,
    NewInstanceRow,
    PagedStep,
    WatchedEvent,
    Write,
)
from engine._scheduler import Scheduler
from engine._search import InstanceFilter, check_tags
from engine._store import EngineStore
from engine._timetable import Schedules
from engine._traces import TraceParent, new_span_id, new_trace_id
from engine._usage import StorageLimits, UsageReport
from engine._views import (
    STALL_GRACE_SECONDS,
    InstanceView,
    LogView,
    StepView,
    instance_view,
    log_view,
    step_view,
)
from storage import Clock, Database, GroupCommitter, decode_cursor, encode_cursor
from treadle.errors import (
    AlreadyExists,
    InvalidInput,
    QuotaExceeded,
    StorageQuotaExceeded,
    TreadleError,
)
from treadle.runtime import JSONObject, JSONValue


@dataclass(frozen=True)
class NewInstance:
    """One instance to create. ``key`` and ``priority`` are its flow control
    (``engine._flow``); it starts no earlier than ``start_at`` (epoch seconds) or ``delay``
    seconds from the create, whichever is given."""

    id: str | None = None
    params: JSONValue = None
    key: str | None = None
    priority: int = 5
    start_at: float | None = None
    delay: float | None = None
    tags: dict[str, str] | None = None  # checked by ``engine._search.check_tags``


class CreatedItem(TypedDict):
    id: str
    status: str
    version: str
    debounced: NotRequired[bool]  # merged into the pending instance of its key, ``id``


class ItemError(TypedDict):
    """Why one item of a batch create was not created (its ``index`` in the batch)."""

    index: int
    id: str
    code: str
    message: str
    existing_id: NotRequired[str]  # instance.singleton: the live instance of the key


class Engine:
    """Durable execution of workflow instances on one database.

    ``running_cap(tenant_id)`` is how many of a tenant's instances may hold a worker at once,
    across every process of the database (the tenant's ``max_running_instances``), and
    ``per_tenant`` how many in this process (as many as it may have sandbox workers). On
    :meth:`stop`, replays in progress get ``shutdown_grace_seconds`` to end before they are cut
    short and their instances given back.

    ``load_runner`` is handed in by the composition root: the engine never loads tenant code
    itself, it asks for a runner of the exact version an instance is pinned to.
    """

    def __init__(
        self,
        db: Database,
        committer: GroupCommitter,
        *,
        load_runner: LoadRunner,
        clock: Clock,
        owner: str,
        running_cap: Callable[[int], int] = lambda tenant_id: 1_000_000,
        storage: Callable[[int], StorageLimits] | None = None,
        concurrency: int = 8,
        per_tenant: int | None = None,
        lease_seconds: float = 30.0,
        poll_seconds: float = 1.0,
        shutdown_grace_seconds: float = 10.0,
        observer: Observer | None = None,
        tenant_name: Callable[[int], str] = str,
        quota: Callable[[int], Quota | None] = lambda tenant_id: None,
    ) -> None:
        self.db = db
        self._committer = committer
        self._clock = clock
        self._store = EngineStore(db)
        if storage is not None:
            self._store.usage.limits = storage
        self._store.usage.attach(committer)
        self._lifecycle = Lifecycle(db.dialect == "postgresql")
        self._running_cap = running_cap
        self._scheduler = Scheduler(
            self._store,
            committer,
            load_runner,
            clock,
            owner=owner,
            running_cap=running_cap,
            concurrency=concurrency,
            per_tenant=per_tenant,
            lease_seconds=lease_seconds,
            poll_seconds=poll_seconds,
            shutdown_grace_seconds=shutdown_grace_seconds,
            observer=observer or Observer(),
            tenant_name=tenant_name,
        )
        self._observer = observer or Observer()
        # Approval links (``engine._links``): a send wakes the scheduler as any event does.
        self.links = Links(self._store, committer, clock, lambda: self._scheduler.wake())
        # Bulk actions (``engine._bulk``): a batch that changed instances stops their replays
        # here and wakes the scheduler, as a single change does.
        self.bulk = Bulk(db, clock, owner, self._lifecycle, self._bulk_changed, lease_seconds)
        # Schedules fire as ordinary creates, under the tenant's quota (``quota``).
        self.schedules = Schedules(
            db,
            clock,
            owner,
            lambda t, w, v, items, q: self.create_instances(
                t, w, v, [NewInstance(i, p) for i, p in items], q
            ),
            quota,
        )

    def start(self) -> None:
        if self.db.dialect == "sqlite":
            # One process owns a SQLite file: whatever it was running when it stopped is ours
            # to resume now, without waiting for the leases to expire.
            self._committer.run(self._store.recover_all(self._clock.now()))
        self._scheduler.start()
        self.schedules.start()
        self.bulk.start()

    def stop(self) -> None:
        self.bulk.stop()
        self.schedules.stop()
        self._scheduler.stop()

    def create_instances(
        self,
        tenant_id: int,
        workflow: str,
        version: str,
        items: list[NewInstance],
        quota: Quota | None = None,
        caller: TraceParent | None = None,
        flow: Flow | None = None,
        wrap: Callable[[CreateWrite], Write] | None = None,
    ) -> tuple[list[CreatedItem], list[ItemError]]:
        """Create instances; return (created, errors) with per-item errors as ``docs/api.md``
        describes them. With ``caller`` (a request's ``traceparent``), each instance's trace
        is the caller's, its run a child of the caller's span. ``flow`` is the workflow's
        flow control (``engine._flow``): a debounced create comes back as the instance it was
        merged into (``"debounced": true``), a singleton refused as ``instance.singleton``
        with the live instance's id in ``existing_id``. ``wrap`` makes the write that commits
        the create (a webhook's delivery row in the same transaction: ``engine._hooks``).

        Under a ``quota``, what it refuses are per-item ``quota.rate_limited`` or
        ``quota.queue_full`` errors, and nothing of them is written; raises
        :class:`QuotaExceeded` when it refuses every valid item.
        """
        now = self._clock.now()
        rows: list[NewInstanceRow] = []
        errors: list[ItemError] = []
        seen: dict[str, int] = {}
        for index, item in enumerate(items):
            instance_id = item.id if item.id is not None else uuid.uuid4().hex
            try:
                check_instance_id(instance_id)
                encode_payload(item.params, "params")
                check_key(item.key)
                check_priority(item.priority)
                tags = check_tags(item.tags)
                if instance_id in seen:
                    raise InvalidInput(
                        f"instance id {instance_id!r} appears twice in this batch",
                        code="instance.already_exists",
                    )
            except TreadleError as exc:
                errors.append(_item_error(index, instance_id, exc))
                continue
            seen[instance_id] = index
            row = _new_row(tenant_id, workflow, version, instance_id, item.params, now, caller)
            _flow_row(row, item, flow, now)
            row["tags"] = tags or None
            rows.append(row)
        if not rows:
            errors.sort(key=lambda e: e["index"])
            return [], errors
        write = self._store.create(tenant_id, rows, quota, now, flow)
        result = self._committer.run(write if wrap is None else wrap(write))
        admission, inserted = result.admission, result.ids
        if admission.admitted == 0 and quota is not None:
            refused = StorageQuotaExceeded if admission.refused == "storage" else QuotaExceeded
            raise refused(_refusal(admission, quota), retry_after=admission.retry_after)
        for row in rows[admission.admitted :]:
            errors.append(
                {
                    "index": seen[row["id"]],
                    "id": row["id"],
                    "code": _REFUSED_CODES[admission.refused or "rate"],
                    "message": _refusal(admission, quota),
                }
            )
        created: list[CreatedItem] = []
        for row in rows[: admission.admitted]:
            if row["id"] in inserted:
                created.append({"id": row["id"], "status": "queued", "version": version})
            elif row["id"] in result.debounced:
                survivor = result.debounced[row["id"]]
                created.append(
                    {"id": survivor, "status": "queued", "version": version, "debounced": True}
                )
            elif row["id"] in result.singleton:
                live = result.singleton[row["id"]]
                errors.append(
                    {
                        "index": seen[row["id"]],
                        "id": row["id"],
                        "code": "instance.singleton",
                        "message": f"key {row['flow_key']!r} has a live instance: {live!r}",
                        "existing_id": live,
                    }
                )
            else:
                errors.append(
                    {
                        "index": seen[row["id"]],
                        "id": row["id"],
                        "code": "instance.already_exists",
                        "message": f"instance {row['id']!r} already exists",
                    }
                )
        if created:
            self._scheduler.wake()
        errors.sort(key=lambda e: e["index"])
        return created, errors

    def create_child(
        self,
        tenant_id: int,
        workflow: str,
        version: str,
        instance_id: str,
        params: JSONValue,
        parent_pk: int,
    ) -> str:
        """Start a child instance of a parent, exactly once: a parent replayed after a crash
        asks again with the same id and gets the same child."""
        check_instance_id(instance_id)
        encode_payload(params, "params")
        row = _new_row(tenant_id, workflow, version, instance_id, params, self._clock.now())
        row["parent_pk"] = parent_pk
        created = self._committer.run(self._store.create(tenant_id, [row], None, row["created_at"]))
        if instance_id not in created.ids:
            if self._store.parent_of(tenant_id, workflow, instance_id) != parent_pk:
                raise AlreadyExists(
                    f"instance {instance_id!r} of {workflow!r} already exists",
                    code="instance.already_exists",
                )
        self._scheduler.wake()
        return instance_id

    def get_instance(self, tenant_id: int, workflow: str, instance_id: str) -> InstanceView:
        """The instance with its steps: all of them, unless there are more than a page holds
        (``DEFAULT_PAGE``, ``PAGE_BYTES``); then ``steps_next_cursor`` reads on from where
        the embedded list stops (``steps()``)."""
        row, page = self._store.instance(tenant_id, workflow, instance_id, *_page_of(None))
        return self._view(row, page)

    def _view(self, row: InstanceRow, page: Page[PagedStep]) -> InstanceView:
        now = self._clock.now()
        reasons = self._waiting_reasons([row], now)
        view = instance_view(row, page.rows, now, reasons.get(row["pk"]))
        if page.more:
            view["steps_next_cursor"] = encode_cursor(page.rows[-1]["seq"])
        return view

    def steps(
        self,
        tenant_id: int,
        workflow: str,
        instance_id: str,
        *,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> tuple[list[StepView], str | None]:
        """A page of the instance's steps, in order, and the cursor of the next (None: none)."""
        after = decode_cursor(cursor)
        page = self._store.steps(
            tenant_id, workflow, instance_id, -1 if after is None else after, *_page_of(limit)
        )
        next_cursor = encode_cursor(page.rows[-1]["seq"]) if page.more else None
        return [step_view(s) for s in page.rows], next_cursor

    def log_page(
        self,
        tenant_id: int,
        workflow: str,
        instance_id: str,
        *,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> tuple[list[LogView], str | None]:
        """A page of the instance's log lines, oldest first, and the cursor of the next."""
        after = decode_cursor(cursor) or 0
        page = self._store.logs(tenant_id, workflow, instance_id, after, *_page_of(limit))
        next_cursor = encode_cursor(page.rows[-1]["pk"]) if page.more else None
        return [log_view(x) for x in page.rows], next_cursor

    def storage_used(self, tenant_id: int) -> int:
        """The bytes the tenant stores, as counted against ``max_storage_mb``."""
        with self.db.connect() as conn:
            return self._store.usage.used(conn, [tenant_id])[tenant_id]

    def list_instances(
        self,
        tenant_id: int,
        workflow: str | None,
        *,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        match: InstanceFilter | None = None,
    ) -> tuple[list[InstanceView], str | None]:
        """The tenant's instances newest first: of ``workflow`` (None: of every workflow),
        with ``status`` and matching ``match`` (``engine._search``), a page and its cursor."""
        if status is not None:
            check_status(status)
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit must be between 1 and 1000")
        before = decode_cursor(cursor)
        found = replace(
            match or InstanceFilter(),
            workflow=workflow,
            statuses=(status,) if status is not None else (match.statuses if match else ()),
        )
        page = self._store.instances(tenant_id, found, before, limit, PAGE_BYTES)
        next_cursor = encode_cursor(page.rows[-1]["pk"]) if page.more else None
        now = self._clock.now()
        reasons = self._waiting_reasons(page.rows, now)
        views = [instance_view(r, None, now, reasons.get(r["pk"])) for r in page.rows]
        return views, next_cursor

    def _waiting_reasons(self, rows: Sequence[InstanceRow], now: float) -> dict[int, str]:
        """Why each queued instance of ``rows`` that is due has not started, where something
        holds it back (``FlowStore.waiting_reasons``)."""
        due = [r for r in rows if r["status"] == "queued" and (r["due_at"] or 0.0) <= now]
        if not due:
            return {}
        cap = self._running_cap(due[0]["tenant_id"])
        return self._store.claims.flow.waiting_reasons(self.db, due, now, cap)

    def send_event(
        self,
        tenant_id: int,
        workflow: str,
        instance_id: str,
        event_type: str,
        payload: JSONValue,
        *,
        max_bytes: int = MAX_PAYLOAD_BYTES,
        max_storage_bytes: int | None = None,
    ) -> None:
        check_event_type(event_type)
        encode_payload(payload, "event payload", max_bytes)
        now = self._clock.now()
        # On PostgreSQL on this thread, not queued behind the batches of step commits.
        self._committer.run_alone(
            self._store.send_event(
                tenant_id, workflow, instance_id, event_type, payload, now, max_storage_bytes
            )
        )
        self._scheduler.wake()

    def change_status(
        self,
        tenant_id: int,
        workflow: str,
        instance_id: str,
        action: str,
        *,
        from_step: JSONObject | None = None,
        version: str | None = None,
        rollback: bool = False,
    ) -> InstanceView:
        """Pause, resume, terminate or restart an instance (see ``engine._lifecycle``);
        return the instance as this change left it (a worker may claim it a moment later)."""
        write = self._lifecycle.change(
            tenant_id,
            workflow,
            instance_id,
            action,
            self._clock.now(),
            from_step=from_step,
            version=version,
            rollback=rollback,
        )
        status = self._committer.run(write)
        self._scheduler.look()  # a replay of it here stops at once
        row, page = self._store.instance(tenant_id, workflow, instance_id, *_page_of(None))
        view = self._view(row, page)
        view["status"] = status
        trace = run_trace(row["trace_id"], row["span_id"], row["parent_span_id"])
        if status == "terminated" and trace is not None:
            # Ended without a replay: the run's span ends here.
            ended = row["ended_at"] or self._clock.now()
            self._observer.ended(
                Ended(
                    tenant_id, workflow, instance_id, status, None, row["created_at"], ended, trace
                )
            )
        self._scheduler.wake()
        return view

    def _bulk_changed(self, batch: BatchDone) -> None:
        self._scheduler.look()  # replays of what it terminated or restarted here stop at once
        self._scheduler.wake()
        for ended in batch.ended:  # ended without a replay: the run's span ends here
            self._observer.ended(ended)

    def delete_instance(self, tenant_id: int, workflow: str, instance_id: str) -> None:
        now = self._clock.now()
        self._committer.run(self._lifecycle.delete(tenant_id, workflow, instance_id, now))
        self._scheduler.look()

    def purge_finished(self, tenant_id: int, retention_days: float) -> int:
        """Delete the tenant's instances that finished more than ``retention_days`` ago."""
        before = self._clock.now() - retention_days * 86400.0
        purged = 0
        while True:
            purge = self._lifecycle.purge(tenant_id, before, self._clock.now())
            count: int = self._committer.run(purge)
            purged += count
            if count == 0:
                return purged

    def history(
        self, tenant_id: int, workflow: str, instance_id: str, after: int = 0, limit: int = 500
    ) -> tuple[list[HistoryEvent], str]:
        """The instance's history events after event id ``after``, oldest first (each with
        ``pk``, ``ts``, ``type``, ``step``, ``data``), and its current status."""
        return self._store.history(tenant_id, workflow, instance_id, after, limit)

    def instance_history(
        self, tenant_id: int, workflow: str, instance_id: str, after: int = 0, limit: int = 500
    ) -> tuple[int, list[HistoryEvent], str]:
        """:meth:`history`, with the instance's pk first: its key in :meth:`watched_history`."""
        return self._store.instance_history(tenant_id, workflow, instance_id, after, limit)

    def watched_history(
        self, cursors: Mapping[int, int], limit: int = 500
    ) -> tuple[dict[int, str], list[WatchedEvent]]:
        """The statuses of the instances ``cursors`` names (by pk; a deleted one is missing)
        and their history events after each one's cursor (an event id), oldest first, at most
        ``limit``: one read for every live stream of a process."""
        return self._store.watched_history(cursors, limit)

    def logs(self, tenant_id: int, workflow: str, instance_id: str) -> list[LogView]:
        """Every log line of the instance (for in-process callers; the API pages them)."""
        lines, cursor = self.log_page(tenant_id, workflow, instance_id, limit=MAX_PAGE)
        while cursor is not None:
            more, cursor = self.log_page(
                tenant_id, workflow, instance_id, limit=MAX_PAGE, cursor=cursor
            )
            lines += more
        return lines

    def delete_workflow(self, tenant_id: int, workflow: str) -> None:
        now = self._clock.now()
        self._committer.run(self._store.delete_workflow(tenant_id, workflow, now))

    def usage(self, tenant_id: int, start: float, end: float) -> UsageReport:
        """What the tenant used from ``start`` to ``end``, hour by hour (``engine._usage``)."""
        with self.db.connect() as conn:
            return self._store.usage.report(conn, tenant_id, start, end)

    def instance_counts(self) -> dict[tuple[int, str, str], int]:
        """Instances of the whole database by (tenant id, workflow, status)."""
        return self._store.counts()

    def stalled(self, limit: int = 100, grace: float = STALL_GRACE_SECONDS) -> list[Stalled]:
        """Up to ``limit`` instances, of every tenant, holding a worker whose lease ran out
        over ``grace`` seconds ago: the longest stalled first."""
        return self._store.stalled(self._clock.now(), grace, limit)

    def waited_since(self, waited: Waited) -> float | None:
        """When a sleep or wait began: its ``sleep.started`` or ``wait.started`` event."""
        kind = "sleep.started" if waited.kind == "sleep" else "wait.started"
        return self._store.event_time(waited.instance_pk, waited.step, kind)

    def stalled_count(self, grace: float = STALL_GRACE_SECONDS) -> int:
        return self._store.stalled_count(self._clock.now(), grace)

    def counters(self) -> dict[str, int]:
        """This process's counts since it started: commits, replays, step results."""
        counters = self._scheduler.counters
        return {"commits": self.db.commits, "replays": counters.replays, "steps": counters.steps}


def _new_row(
    tenant_id: int,
    workflow: str,
    version: str,
    instance_id: str,
    params: JSONValue,
    now: float,
    caller: TraceParent | None = None,
) -> NewInstanceRow:
    return {
        "tenant_id": tenant_id,
        "workflow": workflow,
        "id": instance_id,
        "version": version,
        "status": "queued",
        "params": params,
        "output": None,
        "error": None,
        "created_at": now,
        "started_at": None,
        "ended_at": None,
        "due_at": now,
        "lease_owner": None,
        "epoch": 0,
        "parent_pk": None,
        "trace_id": caller.trace_id if caller else new_trace_id(),
        "span_id": new_span_id(),
        "parent_span_id": caller.span_id if caller else None,
        "flow_key": None,
        "priority": DEFAULT_PRIORITY,
        "flow_mode": None,
        "waiting_reason": None,
        "tags": None,
    }


def _flow_row(row: NewInstanceRow, item: NewInstance, flow: Flow | None, now: float) -> None:
    """Give a new row its key, priority and start: no earlier than ``start_at`` or ``delay``,
    and under a debounce no earlier than the debounce after now."""
    row["flow_key"], row["priority"] = item.key, item.priority
    start, reason = now, None
    if item.start_at is not None and item.start_at > now:
        start, reason = item.start_at, "start_at"
    elif item.delay is not None and item.delay > 0:
        start, reason = now + item.delay, "start_at"
    if item.key is not None and flow is not None and flow.mode is not None:
        row["flow_mode"] = flow.mode
        if flow.debounce is not None and now + flow.debounce >= start:
            start, reason = now + flow.debounce, "debounce"
    row["due_at"], row["waiting_reason"] = start, reason


_REFUSED_CODES = {
    "rate": "quota.rate_limited",
    "queue": "quota.queue_full",
    "storage": StorageQuotaExceeded.code,
}
# A page of a read holds at most this many items (without ``limit``: DEFAULT_PAGE), and about
# PAGE_BYTES of their values — at least one item, which max_step_result_bytes bounds: so no
# response is much larger than PAGE_BYTES, and no read holds much more in memory.
DEFAULT_PAGE, MAX_PAGE = 1000, 10_000
PAGE_BYTES = 4 * 1024 * 1024


def _page_of(limit: int | None) -> tuple[int, int]:
    if limit is None:
        return DEFAULT_PAGE, PAGE_BYTES
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
    return limit, PAGE_BYTES


def _refusal(admission: Admission, quota: Quota | None) -> str:
    if quota is None:
        return "refused"
    if admission.refused == "storage":
        assert quota.max_storage_bytes is not None
        return (
            f"the tenant's storage is used up (max_storage_mb="
            f"{quota.max_storage_bytes // (1024 * 1024)}); delete instances to make room"
        )
    if admission.refused == "queue":
        return f"max_queued_instances of {quota.max_queued_instances} reached; retry later"
    return (
        f"creates_per_second of {quota.creates_per_second} reached; "
        f"retry in {admission.retry_after:.2f} s"
    )


def _item_error(index: int, instance_id: str, exc: TreadleError) -> ItemError:
    return {"index": index, "id": instance_id, "code": exc.code, "message": exc.message}
