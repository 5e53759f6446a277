"""Instances as the HTTP API shows them (``docs/api.md``, Instances)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NotRequired, TypedDict

from engine._rows import RUNNING, InstanceRow, LogEntry
from storage import iso
from treadle.runtime import ErrorValue, JSONValue, StepRecord


class AttemptView(TypedDict):
    started_at: str | None
    ended_at: str | None
    success: bool
    error: ErrorValue | None


class StepView(TypedDict):
    name: str
    count: int
    type: str
    status: str
    output: JSONValue
    error: ErrorValue | None
    wake_at: str | None  # only while it waits
    attempts: list[AttemptView]


class StalledView(TypedDict):
    since: str | None
    reason: str


class InstanceView(TypedDict):
    id: str
    workflow: str
    version: str
    status: str
    params: JSONValue
    output: JSONValue
    error: JSONValue
    rollback: JSONValue
    created_at: str | None
    started_at: str | None
    ended_at: str | None
    stalled: StalledView | None
    trace_id: str | None
    key: str | None
    priority: int
    waiting_reason: str | None
    start_at: str | None  # a queued instance held back by start_at, delay or debounce: until
    tags: dict[str, str]
    steps: NotRequired[list[StepView]]
    steps_next_cursor: NotRequired[str]


class LogView(TypedDict):
    ts: str | None
    step: str | None
    message: str


STALL_GRACE_SECONDS = 5.0
"""How long past its lease an instance holding a worker counts as stalled: a heartbeat comes
every third of the lease, so a live process never lets one run out by this much."""
_STALLED = (
    "its lease ran out and no process has taken it over: the process running it stopped "
    "(it crashed, hangs or lost the database), and no other could run it (none is running, "
    "or the tenant is at max_running_instances)"
)


def stalled_view(row: InstanceRow, now: float) -> StalledView | None:
    """Why the instance is stalled, if it is: it holds a worker and its lease ran out over
    :data:`STALL_GRACE_SECONDS` ago."""
    due = row["due_at"]
    if row["status"] not in RUNNING or due is None or due >= now - STALL_GRACE_SECONDS:
        return None
    return {"since": iso(due), "reason": _STALLED}


def instance_view(
    row: InstanceRow,
    steps: Sequence[StepRecord] | None,
    now: float,
    waiting_reason: str | None = None,
) -> InstanceView:
    """The instance as the API shows it. A queued instance's ``waiting_reason`` is the one
    stored (``start_at``, ``debounce``) while its time has not come, else ``waiting_reason``
    as worked out by the caller (a key or the tenant at its limit), if any."""
    stored, start_at = row.get("waiting_reason"), None
    if row["status"] != "queued":
        waiting_reason = None
    elif stored is not None and (row["due_at"] or 0.0) > now:
        waiting_reason, start_at = stored, row["due_at"]
    view: InstanceView = {
        "id": row["id"],
        "workflow": row["workflow"],
        "version": row["version"],
        "status": row["status"],
        "params": row["params"],
        "output": row["output"],
        "error": row["error"],
        "rollback": _rollback(row["rollback"]),
        "created_at": iso(row["created_at"]),
        "started_at": iso(row["started_at"]),
        "ended_at": iso(row["ended_at"]),
        "stalled": stalled_view(row, now),
        "trace_id": row.get("trace_id"),
        "key": row.get("flow_key"),
        "priority": int(row.get("priority", 5)),
        "waiting_reason": waiting_reason,
        "start_at": iso(start_at),
        "tags": row.get("tags") or {},
    }
    if steps is not None:
        view["steps"] = [step_view(s) for s in steps]
    return view


def step_view(step: StepRecord) -> StepView:
    return {
        "name": step["name"],
        "count": step["count"],
        "type": step["type"],
        "status": step["status"],
        "output": step["output"],
        "error": step["error"],
        "wake_at": iso(step["wake_at"]) if step["status"] == "waiting" else None,
        "attempts": [
            {
                "started_at": iso(a.get("started_at")),
                "ended_at": iso(a.get("ended_at")),
                "success": bool(a.get("success")),
                "error": a.get("error"),
            }
            for a in step["attempts"]
        ],
    }


def log_view(line: LogEntry) -> LogView:
    return {"ts": iso(line["ts"]), "step": line["step"], "message": line["message"]}


def _rollback(value: JSONValue) -> JSONValue:
    """The saga outcome ``{"outcome", "error"}``; a pending request shows as running."""
    if isinstance(value, dict) and value.get("requested"):
        return {"outcome": "running", "error": None}
    return value
