"""The messages a replay sends to the parent, and the replies it gets back, as JSON objects.

A replay (``_journal``) talks to whoever runs it through a channel: the sandbox's parent
process, or the local test harness. Each message names its kind in ``t`` and carries the log
lines printed since the previous one. The parent checks every field of what a sandbox worker
sends (``sandbox._untrusted``) before it trusts any of it; these are the shapes it checks for.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict, final

from treadle.runtime._logbook import LogLine
from treadle.runtime._records import ErrorValue, EventRecord, StepRecord
from treadle.runtime._retries import RetryPolicy, StepConfig
from treadle.runtime._values import JSONObject, JSONValue


class RollbackOutcome(TypedDict):
    """How the rollback handlers ended: ``error`` of the first one that failed for good."""

    outcome: Literal["complete", "failed"]
    error: ErrorValue | None


class BeginMessage(TypedDict):
    """A step body is about to run (attempt number ``attempt``); ``type`` only for rollbacks."""

    t: Literal["begin"]
    name: str
    count: int
    attempt: int
    timeout: float
    retries: RetryPolicy
    type: NotRequired[Literal["rollback"]]
    logs: NotRequired[list[LogLine]]


class RecordMessage(TypedDict):
    """A step's new record, to be committed before the next step body runs."""

    t: Literal["record"]
    record: StepRecord
    logs: NotRequired[list[LogLine]]


class CallMessage(TypedDict):
    """A host call (``env.fetch``, ``env.workflows.create``) of a running step body."""

    t: Literal["call"]
    id: int
    method: str
    args: JSONObject
    logs: NotRequired[list[LogLine]]


class SuspendMessage(TypedDict):
    """The replay cannot go on before ``wake_at`` or an event of ``event_type``."""

    t: Literal["suspend"]
    wake_at: float | None
    event_type: str | None
    logs: NotRequired[list[LogLine]]


class Reply(TypedDict):
    """The answer to host call ``id``: its ``result``, or its ``error`` (``retryable``: a
    retry of the step may help)."""

    t: Literal["reply"]
    id: int
    result: NotRequired[JSONObject]
    error: NotRequired[ErrorValue]
    retryable: NotRequired[bool]


# -- the outcome of a replay: its last message -------------------------------------------------
# ``recycle`` is the sandbox worker's, added on the way out: the worker is spent.


class Done(TypedDict):
    """``run()`` returned ``output``."""

    t: Literal["done"]
    output: JSONValue
    logs: NotRequired[list[LogLine]]
    recycle: NotRequired[bool]


class Failed(TypedDict):
    """The instance fails with ``error``, after its rollback handlers ran (``rollback``)."""

    t: Literal["failed"]
    error: ErrorValue
    rollback: NotRequired[RollbackOutcome]
    logs: NotRequired[list[LogLine]]
    recycle: NotRequired[bool]


class Suspended(TypedDict):
    """The replay ended waiting for ``wake_at`` and/or an event of ``event_type``."""

    t: Literal["suspended"]
    wake_at: float | None
    event_type: str | None
    logs: NotRequired[list[LogLine]]
    recycle: NotRequired[bool]


Outcome = Done | Failed | Suspended
Message = BeginMessage | RecordMessage | CallMessage | SuspendMessage | Outcome


class ReplayInput(TypedDict):
    """What one execution of ``run()`` starts from: the instance, its records, its events."""

    instance_id: str
    workflow: str
    created_at: float
    params: JSONValue
    journal: list[StepRecord]
    events: list[EventRecord]
    now: float


# The Python-in-Wasm guest asks the host to begin, end and fail each step; these are the answers.


class AttemptInfo(TypedDict):
    """The host began an attempt of the step: what its body's ``ctx`` says."""

    number: int
    name: str
    count: int
    config: StepConfig
    idempotency_key: str


@final
class NextAttempt(TypedDict):
    """Run the step's body (again): attempt ``attempt``."""

    attempt: AttemptInfo


@final
class Settled(TypedDict):
    """The step is complete: its output, and its occurrence (the count of its key)."""

    output: JSONValue
    count: int


# ``final`` lets a reader tell them apart by ``"attempt" in progress``.
Progress = NextAttempt | Settled
