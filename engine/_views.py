"""Instances as the HTTP API shows them (``docs/api.md``, Instances)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NotRequired, TypedDict

from engine._rows import InstanceRow, LogEntry
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
    steps: NotRequired[list[StepView]]
    steps_next_cursor: NotRequired[str]


class LogView(TypedDict):
    ts: str | None
    step: str | None
    message: str


def instance_view(row: InstanceRow, steps: Sequence[StepRecord] | None) -> InstanceView:
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
