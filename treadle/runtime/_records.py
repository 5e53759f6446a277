"""Step records and error values: the shapes the engine stores, built in one place.

Shared by the sandbox's step runtime and the local test harness (``treadle.testing``).
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

from treadle.runtime._values import clean_text, unstorable

STEP_TYPES = ("do", "sleep", "wait_for_event", "rollback")
STEP_STATUSES = ("running", "complete", "errored", "waiting")
MAX_NAME_CHARS = 256
MAX_ERROR_NAME_CHARS = 200
# An attempt keeps its error; 10,000 retries of long messages must still fit in one record.
MAX_ERROR_MESSAGE_CHARS = 1000


def new_record(name: str, count: int, type_: str) -> dict[str, Any]:
    return {
        "name": name,
        "count": count,
        "type": type_,
        "status": "running",
        "output": None,
        "error": None,
        "attempts": [],
        "wake_at": None,
        "event_pk": None,
    }


def error(name: str, message: str) -> dict[str, str]:
    """An error value; characters that cannot be stored (U+0000, surrogates) become U+FFFD."""
    return {
        "name": clean_text(name[:MAX_ERROR_NAME_CHARS]),
        "message": clean_text(_truncate(message, MAX_ERROR_MESSAGE_CHARS)),
    }


def error_of(exc: BaseException) -> dict[str, str]:
    """``{"name", "message"}`` of an exception raised by tenant code."""
    return error(type(exc).__name__, message_of(exc))


def message_of(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        # str() of a tenant exception runs tenant code; it must not take the replay down.
        return "<exception message could not be rendered>"


def encode_json(value: Any, what: str, max_bytes: int) -> tuple[Any, dict[str, str] | None]:
    """Return ``(value as JSON would give it back, None)`` or ``(None, error)``.

    The round trip makes a first run return exactly what a replay will (tuples become lists).
    A value the platform cannot store (see ``treadle.runtime._values``) is an error
    ``ValueNotStorable`` that says where in the value the problem is.
    """
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        return None, error("TypeError", f"{what} is not JSON-serializable: {message_of(exc)}")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        message = f"{what} is {size} bytes, over the limit of {max_bytes} (max_step_result_bytes)"
        return None, error("LimitExceeded", message)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return None, error("TypeError", f"{what} is not valid JSON text: {message_of(exc)}")
    failure = storable_error(value, what)
    return (None, failure) if failure is not None else (value, None)


def storable_error(value: Any, what: str) -> dict[str, str] | None:
    """The error ``ValueNotStorable`` saying where in ``value`` and why the platform cannot
    store it (see ``treadle.runtime._values``); None if it can."""
    found = unstorable(value)
    if found is None:
        return None
    at, problem = found
    where = f"at {at}, " if at else ""
    return error("ValueNotStorable", f"{what} cannot be stored: {where}{problem}")


def iso(ts: float) -> str:
    """Epoch seconds as the ISO 8601 UTC string the HTTP API uses (millisecond precision)."""
    moment = _dt.datetime.fromtimestamp(ts, tz=_dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def seconds_text(seconds: float) -> str:
    """``30`` -> ``"30 s"``, ``0.25`` -> ``"0.25 s"``: durations in messages tenants read."""
    return f"{seconds:g} s"


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
