"""The requests of bulk actions (docs/bulk.md), shared by ``Client``, ``AsyncClient`` and the
CLI: a filter as the API takes it, start, read, list and cancel a job."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping

from treadle.client import _operations as op
from treadle.client._models import BulkJob, BulkStarted
from treadle.client._requests import Call, Instant, call, field, model

ACTIONS = ("pause", "resume", "terminate", "restart", "delete")


def bulk_filter(
    *,
    workflow: str | None = None,
    status: str | Iterable[str] | None = None,
    tags: Mapping[str, str] | None = None,
    key: str | None = None,
    created_after: Instant | None = None,
    created_before: Instant | None = None,
    id_prefix: str | None = None,
    error_name: str | None = None,
) -> dict[str, object]:
    """The ``filter`` of a bulk action: only the fields given (none: every instance)."""
    statuses = [status] if isinstance(status, str) else list(status or [])
    given: dict[str, object | None] = {
        "workflow": workflow,
        "status": statuses or None,
        "tags": dict(tags) if tags else None,
        "key": key,
        "created_after": _instant(created_after),
        "created_before": _instant(created_before),
        "id_prefix": id_prefix,
        "error_name": error_name,
    }
    return {name: value for name, value in given.items() if value is not None}


def _instant(value: Instant | None) -> float | str | None:
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.UTC)
        return value.timestamp()
    return value


def start(action: str, filter: Mapping[str, object]) -> Call[BulkStarted]:
    return call(op.START_BULK, model(BulkStarted), {"filter": dict(filter), "action": action})


def job(job_id: str) -> Call[BulkJob]:
    return call(op.GET_BULK, model(BulkJob), job=job_id)


def jobs() -> Call[list[BulkJob]]:
    return call(op.LIST_BULK, field("jobs", list[BulkJob]))


def cancel(job_id: str) -> Call[BulkJob]:
    return call(op.CANCEL_BULK, model(BulkJob), job=job_id)
