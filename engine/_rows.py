"""The shapes of the engine's rows, and the small helpers every engine store shares.

Rows are ``TypedDict``s: they are what SQLAlchemy reads and writes, and, for the tenant's
values in them (params, outputs, errors, event payloads), free-form JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict, TypeVar

import sqlalchemy as sa

from engine._usage import STORAGE_RETRY_AFTER
from storage import Database, tables
from treadle.errors import NotFound, StorageQuotaExceeded
from treadle.runtime import JSONObject, JSONValue, StepRecord

I, S, E, H = tables.instances, tables.steps, tables.events, tables.history  # noqa: E741
T = tables.tenants
_Put = TypeVar("_Put")
Write = Callable[[sa.Connection], Any]
"""A write to run in a transaction of the group committer (``storage.GroupCommitter``)."""

RUNNING = ("running", "waitingForPause")
"""The statuses of an instance that holds a worker (while its lease lasts)."""
WAKE_CHANNEL = "treadle_wake"


class NewInstanceRow(TypedDict):
    """An instance as a create inserts it."""

    tenant_id: int
    workflow: str
    id: str
    version: str
    status: str
    params: JSONValue
    output: JSONValue
    error: JSONValue
    created_at: float
    started_at: float | None
    ended_at: float | None
    due_at: float | None
    lease_owner: str | None
    epoch: int
    parent_pk: int | None
    trace_id: str | None
    span_id: str | None
    parent_span_id: str | None
    flow_key: str | None
    priority: int
    flow_mode: str | None
    waiting_reason: str | None
    tags: dict[str, str] | None


class StoredInstanceRow(NewInstanceRow):
    stored_bytes: int  # the bytes it stores, counted against the tenant's max_storage_mb


class InstanceRow(StoredInstanceRow):
    """Every column of an instance, as a read of the whole row gives it."""

    pk: int
    paused_at: float | None
    paused_due_at: float | None
    rollback: JSONValue  # {"requested": true} while it rolls back, then its saga's outcome
    log_bytes: int


class PagedStep(StepRecord):
    """A step record with its position among the instance's steps (a page's cursor)."""

    seq: int


class JournalEvent(TypedDict):
    """An event sent to an instance and not consumed yet, as its replay is given it."""

    pk: int
    type: str
    payload: JSONValue
    timestamp: float


class HistoryRow(TypedDict):
    """A history event as it is inserted: a log line, or an event of the live stream."""

    instance_pk: int
    ts: float
    type: str
    step: str | None
    data: JSONObject


class HistoryEvent(TypedDict):
    """A history event as it is read back; ``pk`` is its monotonic event id."""

    pk: int
    ts: float
    type: str
    step: str | None
    data: JSONObject


class WatchedEvent(HistoryEvent):
    instance_pk: int


class LogEntry(TypedDict):
    """A log line of an instance, with its event id."""

    pk: int
    ts: float
    step: str | None
    message: str


@dataclass(frozen=True)
class Final:
    """How a replay ended, as the instance row should record it."""

    status: str  # "complete" | "errored" | "waiting"
    output: Any = None
    error: Any = None
    wake_at: float | None = None
    event_type: str | None = None
    rollback: Any = None


def step_record(row: Any) -> StepRecord:
    """The record of a step row (or of a step as a commit writes it)."""
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


def workflow_event(pk: int, now: float, status: str, **data: JSONValue) -> HistoryRow:
    return {
        "instance_pk": pk,
        "ts": now,
        "type": f"workflow.{status}",
        "step": None,
        "data": {"status": status, **data},
    }


def instance_key(tenant_id: int, workflow: str, instance_id: str) -> tuple[Any, ...]:
    return (I.c.tenant_id == tenant_id, I.c.workflow == workflow, I.c.id == instance_id)


def lock_row(query: sa.Select[Any], postgresql: bool) -> sa.Select[Any]:
    """``query`` of one instance row, locking it on PostgreSQL (SQLite's write transactions
    lock the whole database). ``FOR NO KEY UPDATE``: rows of other tables that refer to the
    instance (steps, events, history) can still be inserted meanwhile."""
    return query.with_for_update(key_share=True) if postgresql else query


def notify(conn: sa.Connection, postgresql: bool) -> None:
    # Wakes `treadle worker` processes on other machines; SQLite has only this process.
    if postgresql:
        conn.execute(sa.text("SELECT pg_notify(:c, '')"), {"c": WAKE_CHANNEL})


def storage_full(max_bytes: int) -> StorageQuotaExceeded:
    return StorageQuotaExceeded(
        f"the tenant's storage is used up (max_storage_mb={max_bytes // (1024 * 1024)}); "
        "delete instances to make room",
        retry_after=STORAGE_RETRY_AFTER,
    )


def not_found(instance_id: str) -> NotFound:
    return NotFound(f"instance {instance_id!r} not found", code="instance.not_found")


def put_racing(db: Database, write: Callable[[sa.Connection], _Put]) -> _Put:
    """Run ``write``, a put that inserts its row or changes the one there, in a transaction
    of its own; if another put inserted the row meanwhile (a conflict), once more, which then
    finds it."""
    try:
        with db.begin() as conn:
            return write(conn)
    except sa.exc.IntegrityError:
        with db.begin() as conn:
            return write(conn)
