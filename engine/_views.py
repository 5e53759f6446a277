"""Instances as the HTTP API shows them (DESIGN §6)."""

from __future__ import annotations

from typing import Any

from storage import iso


def instance_view(row: dict[str, Any], steps: list[dict[str, Any]] | None) -> dict[str, Any]:
    view = {
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


def step_view(step: dict[str, Any]) -> dict[str, Any]:
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


def log_view(line: dict[str, Any]) -> dict[str, Any]:
    return {"ts": iso(line["ts"]), "step": line["step"], "message": line["message"]}


def _rollback(value: Any) -> Any:
    """The saga outcome ``{"outcome", "error"}``; a pending request shows as running."""
    if value and value.get("requested"):
        return {"outcome": "running", "error": None}
    return value
