"""Checks on the names, ids and values users send, with the limits the API reference gives."""

from __future__ import annotations

import json
import re
from typing import Any

from treadle.errors import InvalidInput, TooLarge
from treadle.runtime import check_storable

_PATTERN = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9_-]*")
MAX_INSTANCE_ID = 100
MAX_EVENT_TYPE = 100
MAX_PAYLOAD_BYTES = 1 << 20
# Event ids and list cursors are row ids: BIGINT on PostgreSQL, which refuses anything larger.
MAX_ROW_ID = (1 << 63) - 1

STATUSES = (
    "queued",
    "running",
    "waiting",
    "paused",
    "waitingForPause",
    "complete",
    "errored",
    "terminated",
)
FINISHED = ("complete", "errored", "terminated")
LIVE = ("queued", "running", "waiting", "paused", "waitingForPause")  # not finished


def check_instance_id(value: Any) -> str:
    return _check(value, "instance id", MAX_INSTANCE_ID, "instance.invalid_id")


def check_event_type(value: Any) -> str:
    return _check(value, "event type", MAX_EVENT_TYPE, "event.invalid_type")


def check_status(value: str) -> str:
    if value not in STATUSES:
        raise InvalidInput(
            f"unknown status {value!r}; one of: {', '.join(STATUSES)}",
            code="instance.invalid_status",
        )
    return value


def encode_payload(value: Any, what: str, limit: int = MAX_PAYLOAD_BYTES) -> str:
    """``value`` as JSON text, refusing values that are not JSON, exceed ``limit`` bytes or
    cannot be stored (:class:`~treadle.errors.ValueNotStorable`, naming where in ``value``)."""
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"{what} is not JSON-serializable: {exc}") from None
    if len(text.encode()) > limit:
        raise TooLarge(f"{what} is {len(text.encode())} bytes; the limit is {limit}")
    check_storable(value, what)
    return text


def _check(value: Any, what: str, limit: int, code: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{what} must be a non-empty string", code=code)
    if len(value) > limit:
        raise InvalidInput(f"{what} is longer than {limit} characters", code=code)
    if not _PATTERN.fullmatch(value):
        raise InvalidInput(f"{what} {value!r} must match ^[a-zA-Z0-9_][a-zA-Z0-9_-]*$", code=code)
    return value
