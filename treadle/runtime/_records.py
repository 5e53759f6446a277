"""Step records and error values: their types, and every transition of a record, in one place.

A record is the state of one step (its name and occurrence) as the engine stores it and the
HTTP API shows it. It is a JSON object on the wire and in the database, so it is typed as a
``TypedDict`` rather than a class: a dataclass would cost more per record on the replay's hot
path and would have to be turned back into this dict at every boundary. Records are made whole
by the functions below and never changed once sent; the replay (``_journal``), the sandbox
driver, the engine's commits and the local test harness all go through them, so every state a
step can be in is written down once.

Shared by the sandbox's step runtime and the local test harness (``treadle.testing``).
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence
from typing import Literal, NotRequired, TypedDict, TypeVar, cast

from treadle.runtime._tracebacks import MAX_TRACED_ATTEMPTS, Frame, TenantSource
from treadle.runtime._values import JSONObject, JSONValue, clean_text, unstorable

StepType = Literal["do", "sleep", "wait_for_event", "rollback"]
StepStatus = Literal["running", "complete", "errored", "waiting"]
STEP_TYPES: tuple[StepType, ...] = ("do", "sleep", "wait_for_event", "rollback")
STEP_STATUSES: tuple[StepStatus, ...] = ("running", "complete", "errored", "waiting")
MAX_NAME_CHARS = 256
MAX_ERROR_NAME_CHARS = 200
# An attempt keeps its error; 10,000 retries of long messages must still fit in one record.
MAX_ERROR_MESSAGE_CHARS = 1000


class ErrorValue(TypedDict):
    """How a failure is recorded and reported: the error's class name and its message, and
    the frames of tenant code it was raised in (``treadle.runtime._tracebacks``), if any."""

    name: str
    message: str
    traceback: NotRequired[list[Frame]]


class AttemptRecord(TypedDict):
    """One run of a step's body (``ended_at`` None: a record from before it ended)."""

    started_at: float
    ended_at: float | None
    success: bool
    error: ErrorValue | None


class StepRecord(TypedDict):
    """The state of step ``(name, count)``: its latest record replaces all earlier ones.

    ``wake_at`` is when a waiting step is due (a retry, the end of a sleep, the deadline of a
    wait for an event); ``event_pk`` the event a completed wait took.
    """

    name: str
    count: int
    type: StepType
    status: StepStatus
    output: JSONValue
    error: ErrorValue | None
    attempts: list[AttemptRecord]
    wake_at: float | None
    event_pk: int | None


class EventRecord(TypedDict):
    """An event sent to an instance, as a replay gets it: ``pk`` names it in the store."""

    pk: int
    type: str
    payload: JSONValue
    timestamp: float


_Key = tuple[str, int]
_Record = TypeVar("_Record", bound=StepRecord)


# -- transitions: every record is made by one of these -----------------------------------------


def new_record(name: str, count: int, type_: StepType) -> StepRecord:
    """A step that has begun and has no outcome yet."""
    return _record((name, count), type_, "running")


def attempt(started_at: float, ended_at: float, failure: ErrorValue | None = None) -> AttemptRecord:
    """An attempt that ended: successful unless it has a ``failure``."""
    return {
        "started_at": started_at,
        "ended_at": ended_at,
        "success": failure is None,
        "error": failure,
    }


def succeeded(
    previous: StepRecord | None, key: _Key, type_: StepType, done: AttemptRecord, output: JSONValue
) -> StepRecord:
    """The step's attempt ``done`` returned ``output``: the step is complete."""
    attempts = [*previous["attempts"], done] if previous else [done]
    return _record(key, type_, "complete", output=output, attempts=attempts)


def attempt_failed(
    previous: StepRecord | None,
    key: _Key,
    type_: StepType,
    failed: AttemptRecord,
    retry_at: float | None,
) -> StepRecord:
    """The step's attempt ``failed``: it waits for its retry at ``retry_at``, or, without
    one, it failed for good with the attempt's error."""
    attempts = _untraced_beyond([*previous["attempts"], failed] if previous else [failed])
    if retry_at is None:
        return _record(key, type_, "errored", error=failed["error"], attempts=attempts)
    return _record(key, type_, "waiting", attempts=attempts, wake_at=retry_at)


def _untraced_beyond(attempts: list[AttemptRecord]) -> list[AttemptRecord]:
    """``attempts`` with the traceback kept on the errors of the latest
    :data:`MAX_TRACED_ATTEMPTS` only."""
    older = len(attempts) - MAX_TRACED_ATTEMPTS
    if older <= 0:
        return attempts
    return [_untraced(a) if i < older else a for i, a in enumerate(attempts)]


def _untraced(attempt: AttemptRecord) -> AttemptRecord:
    failure = attempt["error"]
    if failure is None or "traceback" not in failure:
        return attempt
    return {**attempt, "error": error(failure["name"], failure["message"])}


def sleeping(key: _Key, wake_at: float) -> StepRecord:
    """A ``step.sleep`` that ends at ``wake_at``."""
    return _record(key, "sleep", "waiting", wake_at=wake_at)


def slept(key: _Key, wake_at: float) -> StepRecord:
    """A ``step.sleep`` that ended (at ``wake_at``)."""
    return _record(key, "sleep", "complete", wake_at=wake_at)


def waiting_for_event(key: _Key, deadline: float) -> StepRecord:
    """A ``step.wait_for_event`` that times out at ``deadline``."""
    return _record(key, "wait_for_event", "waiting", wake_at=deadline)


def event_taken(key: _Key, deadline: float, event_type: str, event: EventRecord) -> StepRecord:
    """A ``step.wait_for_event`` that took ``event`` (see :func:`wait_output`)."""
    output: JSONObject = {
        "type": event_type,
        "payload": event["payload"],
        "timestamp": iso(event["timestamp"]),
    }
    return _record(
        key, "wait_for_event", "complete", output=output, wake_at=deadline, event_pk=event["pk"]
    )


def wait_timed_out(key: _Key, deadline: float, failure: ErrorValue) -> StepRecord:
    """A ``step.wait_for_event`` whose ``deadline`` passed before an event came."""
    return _record(key, "wait_for_event", "errored", error=failure, wake_at=deadline)


def wait_output(record: StepRecord) -> JSONObject:
    """What a completed ``step.wait_for_event`` returns: ``{"type", "payload", "timestamp"}``
    of the event it took (a copy: tenant code may change it)."""
    return dict(cast("JSONObject", record["output"]))


def result_refused(record: _Record, failure: ErrorValue) -> _Record:
    """``record`` failed for good with ``failure`` because its result cannot be kept: no
    output, and its last attempt fails with ``failure`` too. The event it took stays named."""
    attempts = list(record["attempts"] or [])
    if attempts:
        attempts[-1] = {**attempts[-1], "success": False, "error": failure}
    refused = record.copy()
    refused["status"] = "errored"
    refused["output"] = None
    refused["error"] = failure
    refused["wake_at"] = None
    refused["attempts"] = attempts
    return refused


def _record(
    key: _Key,
    type_: StepType,
    status: StepStatus,
    *,
    output: JSONValue = None,
    error: ErrorValue | None = None,
    attempts: list[AttemptRecord] | None = None,
    wake_at: float | None = None,
    event_pk: int | None = None,
) -> StepRecord:
    # The keys in this order, always: records are compared and stored as JSON text.
    return {
        "name": key[0],
        "count": key[1],
        "type": type_,
        "status": status,
        "output": output,
        "error": error,
        "attempts": [] if attempts is None else attempts,
        "wake_at": wake_at,
        "event_pk": event_pk,
    }


def as_json(record: StepRecord) -> JSONObject:
    """``record`` as the JSON object it is (every value of a record is JSON)."""
    return cast("JSONObject", record)


# -- error values ------------------------------------------------------------------------------


def error(name: str, message: str, traceback: Sequence[Frame] = ()) -> ErrorValue:
    """An error value; characters that cannot be stored (U+0000, surrogates) become U+FFFD.

    ``traceback`` (frames already bounded) is kept only when it has frames: an error of the
    platform's own has none, and its JSON stays ``{"name", "message"}``.
    """
    value: ErrorValue = {
        "name": clean_text(name[:MAX_ERROR_NAME_CHARS]),
        "message": clean_text(_truncate(message, MAX_ERROR_MESSAGE_CHARS)),
    }
    if traceback:
        value["traceback"] = list(traceback)
    return value


def error_of(exc: BaseException, source: TenantSource | None = None) -> ErrorValue:
    """``{"name", "message", "traceback"?}`` of an exception raised by tenant code; its frames
    in ``source`` when the caller knows the tenant's source."""
    frames = source.frames(exc) if source is not None else ()
    return error(type(exc).__name__, message_of(exc), frames)


def message_of(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        # str() of a tenant exception runs tenant code; it must not take the replay down.
        return "<exception message could not be rendered>"


def encode_json(value: object, what: str, max_bytes: int) -> tuple[JSONValue, ErrorValue | None]:
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
        loaded: JSONValue = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return None, error("TypeError", f"{what} is not valid JSON text: {message_of(exc)}")
    failure = storable_error(loaded, what)
    return (None, failure) if failure is not None else (loaded, None)


def storable_error(value: object, what: str) -> ErrorValue | None:
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
