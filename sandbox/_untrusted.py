"""Checks on what a worker sends. The worker runs tenant code, so it may be compromised.

Each function returns a clean copy holding only the expected fields, or raises
:class:`ProtocolError`; the engine only ever sees values that passed through here. What the
platform could not store never gets through (see ``treadle.runtime._values``): text has U+0000 and
surrogates replaced, and a step result or output that cannot be stored becomes the error
``ValueNotStorable``, as the worker itself should have made it.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any, Literal, overload

from sandbox._messages import Begin, HostCall
from sandbox._types import Limits
from sandbox._wire import ProtocolError
from treadle.runtime import (
    BACKOFFS,
    CHILD_EVENT_PREFIX,
    MAX_DURATION_SECONDS,
    MAX_ERROR_MESSAGE_CHARS,
    MAX_ERROR_NAME_CHARS,
    MAX_FRAME_FILE_CHARS,
    MAX_FRAME_LINE,
    MAX_FRAMES,
    MAX_FUNCTION_CHARS,
    MAX_ID_CHARS,
    MAX_NAME_CHARS,
    MAX_RETRIES,
    MAX_SOURCE_CHARS,
    MAX_TRACED_ATTEMPTS,
    STEP_STATUSES,
    STEP_TYPES,
    AttemptRecord,
    ErrorValue,
    Frame,
    JSONValue,
    LogLine,
    RollbackOutcome,
    StepRecord,
    check_args,
    clean_text,
    storable_error,
)
from treadle.runtime.errors import Problem

_MAX_COUNT = 10**7
_MAX_LOG_LINES = 1100
_MAX_LOG_CHARS = 4096
_MAX_PROBLEMS = 1000
_MAX_CALL_ID = 2**31
# Waits on a child's outcome use the platform's own type, child.<id>, longer than the 100
# characters of a tenant's event types.
_MAX_EVENT_TYPE_CHARS = len(CHILD_EVENT_PREFIX) + MAX_ID_CHARS
_ROLLBACK_OUTCOMES = ("complete", "failed")


def _fail(what: str) -> ProtocolError:
    return ProtocolError(f"invalid {what} from the sandbox worker")


def _int(value: Any, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(what)
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(what)
    return float(value)


def _number_or_none(value: Any, what: str) -> float | None:
    return None if value is None else _number(value, what)


def _text(value: Any, limit: int, what: str) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise _fail(what)
    return clean_text(value)


def _text_or_none(value: Any, limit: int, what: str) -> str | None:
    return None if value is None else _text(value, limit, what)


@overload
def error(value: Any, *, optional: Literal[False] = False) -> ErrorValue: ...


@overload
def error(value: Any, *, optional: bool) -> ErrorValue | None: ...


def error(value: Any, *, optional: bool = False) -> ErrorValue | None:
    if value is None and optional:
        return None
    if not isinstance(value, dict):
        raise _fail("error")
    checked: ErrorValue = {
        "name": _text(value.get("name"), MAX_ERROR_NAME_CHARS, "error name"),
        "message": _text(value.get("message"), MAX_ERROR_MESSAGE_CHARS, "error message"),
    }
    if "traceback" in value:
        checked["traceback"] = _traceback(value["traceback"])
    return checked


def _traceback(value: Any) -> list[Frame]:
    """Frames of tenant code: a worker clips them to their bounds, so more is a violation."""
    if not isinstance(value, list) or not 0 < len(value) <= MAX_FRAMES:
        raise _fail("traceback")
    return [_frame(f) for f in value]


def _frame(value: Any) -> Frame:
    if not isinstance(value, dict):
        raise _fail("traceback frame")
    return {
        "file": _text(value.get("file"), MAX_FRAME_FILE_CHARS, "frame file"),
        "line": _int(value.get("line"), 1, MAX_FRAME_LINE, "frame line"),
        "function": _text(value.get("function"), MAX_FUNCTION_CHARS, "frame function"),
        "source": _text(value.get("source"), MAX_SOURCE_CHARS, "frame source"),
    }


def _attempt(value: Any) -> AttemptRecord:
    if not isinstance(value, dict) or not isinstance(value.get("success"), bool):
        raise _fail("attempt")
    return {
        "started_at": _number(value.get("started_at"), "attempt start"),
        "ended_at": _number_or_none(value.get("ended_at"), "attempt end"),
        "success": value["success"],
        "error": error(value.get("error"), optional=True),
    }


def record(value: Any, event_pks: Collection[int]) -> StepRecord:
    """A step record; ``event_pk`` must name one of this instance's events."""
    if not isinstance(value, dict) or value.get("type") not in STEP_TYPES:
        raise _fail("step record")
    if value.get("status") not in STEP_STATUSES or not isinstance(value.get("attempts"), list):
        raise _fail("step record")
    event_pk = value.get("event_pk")
    if event_pk is not None and (isinstance(event_pk, bool) or event_pk not in event_pks):
        raise _fail("event_pk")
    if len(value["attempts"]) > MAX_RETRIES + 1:
        raise _fail("attempts")
    if _traced(value["attempts"]) > MAX_TRACED_ATTEMPTS:
        raise _fail("attempts")  # a worker keeps the tracebacks of the latest attempts only
    checked: StepRecord = {
        "name": _step_name(value.get("name"), value["type"]),
        "count": _int(value.get("count"), 1, _MAX_COUNT, "step count"),
        "type": value["type"],
        "status": value["status"],
        "output": value.get("output"),
        "error": error(value.get("error"), optional=True),
        "attempts": [_attempt(a) for a in value["attempts"]],
        "wake_at": _number_or_none(value.get("wake_at"), "wake_at"),
        "event_pk": event_pk,
    }
    failure = storable_error(checked["output"], f"the result of step {checked['name']!r}")
    if failure is not None:
        _fail_step(checked, failure)
    return checked


def _traced(attempts: list[Any]) -> int:
    return sum(
        1
        for a in attempts
        if isinstance(a, dict) and isinstance(a.get("error"), dict) and "traceback" in a["error"]
    )


def output(value: Any) -> tuple[JSONValue, ErrorValue | None]:
    """The output of ``run()``, or the error to fail the instance with instead."""
    failure = storable_error(value, "the value run() returned")
    return (None, failure) if failure is not None else (value, None)


def _fail_step(record: StepRecord, failure: ErrorValue) -> None:
    """Make ``record`` the step failed for good with ``failure`` (its last attempt with it)."""
    attempts = record["attempts"]
    if attempts and attempts[-1]["success"]:
        attempts[-1] = {**attempts[-1], "success": False, "error": failure}
    record["status"] = "errored"
    record["output"] = None
    record["error"] = failure
    record["wake_at"] = None
    record["event_pk"] = None


def begin(value: Mapping[str, Any]) -> Begin:
    """A ``begin`` message: the step about to run and the retry config it announced."""
    retries = value.get("retries")
    if not isinstance(retries, dict) or retries.get("backoff") not in BACKOFFS:
        raise _fail("retries")
    timeout = _number(value.get("timeout"), "timeout")
    if not 0 < timeout <= MAX_DURATION_SECONDS:
        raise _fail("timeout")
    delay = _number(retries.get("delay"), "retry delay")
    if not 0 <= delay <= MAX_DURATION_SECONDS:
        raise _fail("retry delay")
    kind = value.get("type", "do")
    if kind not in ("do", "rollback"):
        raise _fail("step type")
    return {
        "type": kind,
        "name": _step_name(value.get("name"), kind),
        "count": _int(value.get("count"), 1, _MAX_COUNT, "step count"),
        "attempt": _int(value.get("attempt"), 1, MAX_RETRIES + 1, "attempt"),
        "timeout": timeout,
        "retries": {
            "limit": _int(retries.get("limit"), 0, MAX_RETRIES, "retry limit"),
            "delay": delay,
            "backoff": retries["backoff"],
        },
    }


def _step_name(value: Any, kind: str) -> str:
    """A step name; ``rollback:<name>`` exactly for a rollback handler's records."""
    name = _text(value, MAX_NAME_CHARS, "step name")
    if name.startswith("rollback:") != (kind == "rollback"):
        raise _fail("step name")
    return name


def call(value: Mapping[str, Any], limits: Limits) -> HostCall:
    """A host call: ``{"id", "method", "args"}`` with the arguments checked for the method."""
    method = value.get("method")
    try:
        args = check_args(method, value.get("args"), limits.max_step_result_bytes)
    except (TypeError, ValueError, RecursionError):
        raise _fail("host call") from None
    call_id = _int(value.get("id"), 1, _MAX_CALL_ID, "call id")
    return {"id": call_id, "method": str(method), "args": args}


def rollback(value: Any) -> RollbackOutcome | None:
    """How the rollback handlers ended, on a ``failed`` outcome."""
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("outcome") not in _ROLLBACK_OUTCOMES:
        raise _fail("rollback")
    failure = error(value.get("error"), optional=True)
    if (failure is None) != (value["outcome"] == "complete"):
        raise _fail("rollback")
    return {"outcome": value["outcome"], "error": failure}


def logs(value: Any) -> list[LogLine]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > _MAX_LOG_LINES:
        raise _fail("logs")
    return [_log_line(line) for line in value]


def _log_line(value: Any) -> LogLine:
    if not isinstance(value, dict):
        raise _fail("log line")
    return {
        "ts": _number(value.get("ts"), "log time"),
        "step": _text_or_none(value.get("step"), MAX_NAME_CHARS, "log step"),
        "message": _text(value.get("message"), _MAX_LOG_CHARS + 200, "log message"),
    }


def suspension(value: Mapping[str, Any]) -> tuple[float | None, str | None]:
    wake_at = _number_or_none(value.get("wake_at"), "wake_at")
    event_type = _text_or_none(value.get("event_type"), _MAX_EVENT_TYPE_CHARS, "event type")
    if wake_at is None and event_type is None:
        raise _fail("suspend")
    return wake_at, event_type


def problems(value: Any) -> list[Problem]:
    if not isinstance(value, list) or not 0 < len(value) <= _MAX_PROBLEMS:
        raise _fail("problems")
    return [_problem(p) for p in value]


def _problem(value: Any) -> Problem:
    if not isinstance(value, dict):
        raise _fail("problem")
    return {
        "line": _int(value.get("line"), 1, 10**7, "problem line"),
        "column": _int(value.get("column"), 1, 10**7, "problem column"),
        "message": _text(value.get("message"), 2000, "problem message"),
    }


def class_name(value: Any) -> str:
    if not isinstance(value, str) or not value.isidentifier():
        raise _fail("class name")
    return value
