"""One replay of an instance: step keys, recorded results, retries, timers, events, suspend.

This is the backend-independent half of the step API. It knows nothing about how tenant code is
run: a backend hands it step bodies as callables (Python) or drives it from host imports (Wasm).
Every record it creates is sent to the parent at once; before any step body runs it sends
``begin`` and, when it has sent records since the last acknowledgement, waits for ``ack`` — the
parent commits those records first, which is the durability rule (``docs/durability.md``).

It lives in the SDK, not in ``sandbox``, because the local test harness (``treadle.testing``)
runs tenant workflows on it too — in the tenant's own process, with a channel that answers
from the test's mocks and a clock that stands still — so a unit test gets the platform's step
semantics by construction. The sandbox backends hand it their thread runner (``parallel``).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol, cast

from treadle.runtime._calls import check_event_type
from treadle.runtime._context import Attempt, Key
from treadle.runtime._durations import MAX_DURATION_SECONDS, parse_duration, parse_instant
from treadle.runtime._logbook import Logbook
from treadle.runtime._messages import (
    BeginMessage,
    Failed,
    Message,
    Outcome,
    Reply,
    RollbackOutcome,
    Suspended,
)
from treadle.runtime._records import (
    MAX_NAME_CHARS,
    AttemptRecord,
    ErrorValue,
    EventRecord,
    StepRecord,
    StepType,
    attempt,
    attempt_failed,
    encode_json,
    error,
    error_of,
    event_taken,
    sleeping,
    slept,
    succeeded,
    wait_output,
    wait_timed_out,
    waiting_for_event,
)
from treadle.runtime._retries import StepConfig, next_retry, resolve_step_config
from treadle.runtime._tracebacks import Frame, TenantSource, clipped_traceback, joined
from treadle.runtime._values import JSONObject, JSONValue, text_problem
from treadle.runtime.errors import NonRetryableError, StepError, TreadleError, WaitTimeout

ROLLBACK_PREFIX = "rollback:"


Parallel = Callable[
    [Sequence["tuple[StepCall, Callable[[Attempt], Any]]"], Callable[[Any], Callable[[], None]]],
    None,
]


class Limits(Protocol):
    """The limits a replay enforces (``sandbox.Limits`` has them, from the tenant policy)."""

    @property
    def memory_mb(self) -> int: ...

    @property
    def max_step_result_bytes(self) -> int: ...

    @property
    def max_steps_per_instance(self) -> int: ...


def run_in_order(items: Sequence[Any], start: Callable[[Any], Callable[[], None]]) -> None:
    """Run the bodies of a batch of concurrent steps one after the other, in program order."""
    for item in items:
        start(item)()


class Suspend(BaseException):
    """Unwinds ``run()`` when a blocking step cannot proceed yet.

    A ``BaseException`` so that ``except Exception`` in tenant code lets it through; tenant code
    that catches it anyway gains nothing, because the replay stays suspended (sticky).
    """


class Abort(BaseException):
    """Unwinds ``run()`` when the instance must fail whatever the code does (a limit)."""


class HostError(TreadleError):
    """A call to the platform (``env.fetch``, ``env.workflows.create``) failed.

    ``name`` is the platform's name for the error (``EgressDenied``, ``NotFound``, ...); a
    failed step body records it under that name.
    """

    code: str = "host.failed"

    def __init__(self, message: str | None = None, *, name: str = "HostError") -> None:
        super().__init__(message)
        self.name = name


class PermanentHostError(HostError, NonRetryableError):
    """A call to the platform failed, and retrying the step cannot help."""


class Channel(Protocol):
    """How a replay talks to the parent: fire-and-forget messages and the ``ack`` it awaits."""

    def send(self, message: Message) -> None: ...

    def wait_ack(self) -> None: ...


class CallChannel(Channel, Protocol):
    """A channel that also carries host calls: ``wait_reply`` returns the ``reply`` message of
    call ``call_id``. Both waits may happen on several threads at once."""

    def wait_reply(self, call_id: int) -> Reply: ...


class Compensator(Protocol):
    """Runs rollback handlers when the instance fails (see ``treadle/runtime/_saga.py``)."""

    def unwind(self, failure: ErrorValue) -> RollbackOutcome | None: ...


@dataclass
class StepCall:
    """One ``step.do`` call in progress: its key, resolved options and latest record."""

    key: Key
    config: StepConfig
    record: StepRecord | None
    started: float = 0.0
    kind: StepType = "do"  # or "rollback": a rollback handler's record

    @property
    def attempts(self) -> list[AttemptRecord]:
        return list(self.record["attempts"]) if self.record else []

    @property
    def output(self) -> JSONValue:
        return self.record["output"] if self.record else None


class Replay:
    def __init__(
        self,
        request: Mapping[str, Any],
        limits: Limits,
        channel: Channel,
        clock: Callable[[], float] = time.monotonic,
        parallel: Parallel = run_in_order,
        source: TenantSource | None = None,
    ) -> None:
        self.limits = limits
        # Tenant code that runs in this process: its errors carry the frames of its source.
        self.source = source
        self._parallel = parallel
        self.instance_id: str = request["instance_id"]
        self._channel = channel
        self._clock = clock
        self._started = clock()
        self._now0 = float(request["now"])
        self._journal: dict[Key, StepRecord] = {
            (r["name"], r["count"]): r for r in request["journal"]
        }
        self._events: list[EventRecord] = list(request["events"])
        self._counts: dict[str, int] = {}
        self._steps = 0
        self._unacked = False
        self._logbook = Logbook()
        # Concurrent step bodies run in threads: what goes to the parent goes under this lock,
        # and "the step whose body is running" is per thread.
        self._lock = threading.Lock()
        self._local = threading.local()
        self._call_ids = itertools.count(1)
        # "rollback": replay run() only as far as it is recorded, then run the rollbacks.
        self.mode: str = request.get("mode") or "run"
        self.stopped = False
        self.saga: Compensator | None = None
        self.suspended: tuple[float | None, str | None] | None = None
        self.failure: ErrorValue | None = None
        self.out_of_memory = False

    @property
    def current_step(self) -> str | None:
        """The name of the step whose body runs on this thread, if any."""
        step: str | None = getattr(self._local, "step", None)
        return step

    @current_step.setter
    def current_step(self, name: str | None) -> None:
        self._local.step = name

    def record(self, key: Key) -> StepRecord | None:
        """The latest record of step ``key``, from the journal or made in this replay."""
        return self._journal.get(key)

    def now(self) -> float:
        """The engine's clock at the start of the replay plus the time since (monotonic)."""
        return self._now0 + (self._clock() - self._started)

    def log(self, message: str) -> None:
        with self._lock:
            self._logbook.write(self.now(), self.current_step, message)

    # -- step.do --------------------------------------------------------------------------------

    def do(
        self, name: Any, body: Callable[[Attempt], Any], retries: Any = None, timeout: Any = None
    ) -> Any:
        """Return the step's recorded output, or run ``body`` until it succeeds or fails for good.

        A failed step raises :class:`StepError` carrying the original error's name and message.
        """
        return self.run_call(self.open_step(name, retries, timeout), body)

    def run_call(self, call: StepCall, body: Callable[[Attempt], Any]) -> Any:
        """The step's recorded output, or run ``body`` until it succeeds or fails for good."""
        try:
            while (attempt := self.next_attempt(call)) is not None:
                self._run_body(call, attempt, body)
        finally:
            self.current_step = None
        return call.output

    def run_attempts(self, runs: Sequence[tuple[StepCall, Callable[[Attempt], Any]]]) -> None:
        """One attempt of each step, the bodies in parallel threads (``concurrent=True``).

        Each ``begin`` goes out from this thread, in order, before its body starts, so the
        durability rule holds as for one body. The steps must be due (see ``next_attempt``).
        """

        def start(run: tuple[StepCall, Callable[[Attempt], Any]]) -> Callable[[], None]:
            call, body = run
            attempt = self.next_attempt(call)
            self.current_step = None  # the body runs on a thread of its own
            if attempt is None:
                return lambda: None
            return lambda: self._run_body(call, attempt, body)

        self._parallel(runs, start)

    def _run_body(self, call: StepCall, attempt: Attempt, body: Callable[[Attempt], Any]) -> None:
        self.current_step = attempt.name
        try:
            value = body(attempt)
        except (Suspend, Abort):
            self.current_step = None
            raise
        except BaseException as exc:
            self.attempt_raised(call, exc)
        else:
            self.attempt_returned(call, value)

    def open_rollback(self, key: Key, config: StepConfig) -> StepCall:
        """The call of a rollback handler; ``key`` is ``("rollback:<step name>", count)``."""
        return StepCall(key, config, self._recorded(key, "rollback"), kind="rollback")

    # The pieces of ``do``, for backends whose step bodies run elsewhere (Wasm guests call
    # them from host imports): open the call, then alternate next_attempt and attempt_*.

    def open_step(self, name: Any, retries: Any = None, timeout: Any = None) -> StepCall:
        key = self._enter(name, "do")
        config = resolve_step_config(retries, timeout)
        return StepCall(key, config, self._recorded(key, "do"))

    def next_attempt(self, call: StepCall) -> Attempt | None:
        """Begin the step's next attempt; None once it is complete (see ``call.output``).

        Raises :class:`StepError` once the step has failed for good, and suspends while a
        retry is not due yet.
        """
        record = call.record
        if record is not None:
            status = record["status"]
            if status == "complete":
                return None
            if status == "errored":
                raise _step_error(record["error"])
        if self.mode == "rollback" and call.kind == "do":
            self.stop()
        if record is not None:
            wake_at = record.get("wake_at")
            if record["status"] == "waiting" and wake_at is not None and wake_at > self.now():
                self._suspend(wake_at, None)
        name, count = call.key
        number = len(record["attempts"]) + 1 if record else 1
        ikey = f"{self.instance_id}:{name}:{count}"
        attempt = Attempt(name, count, number, call.config, ikey)
        self._begin(attempt, call.kind)
        call.started = self.now()
        self.current_step = name
        return attempt

    def attempt_returned(self, call: StepCall, value: Any) -> None:
        """The running attempt's body returned ``value``: record it (if it is JSON)."""
        self.current_step = None
        what = f"the result of step {call.key[0]!r}"
        output, problem = encode_json(value, what, self.limits.max_step_result_bytes)
        if problem is not None:
            self.attempt_failed(call, problem, final=True)
            return
        done = attempt(call.started, self.now())
        call.record = self._emit(succeeded(call.record, call.key, call.kind, done, output))

    def attempt_raised(self, call: StepCall, exc: BaseException) -> None:
        """The running attempt's body raised ``exc``: a failed attempt."""
        if isinstance(exc, MemoryError):
            self.out_of_memory = True
            failure = error("MemoryError", f"out of memory (memory_mb={self.limits.memory_mb})")
            self.attempt_failed(call, failure, final=False)
        else:
            final = isinstance(exc, NonRetryableError)
            if isinstance(exc, HostError):
                failure = error(exc.name, exc.message, self._frames(exc))
            else:
                failure = error_of(exc, self.source)
            self.attempt_failed(call, failure, final=final)

    def attempt_failed(self, call: StepCall, failure: ErrorValue, *, final: bool) -> None:
        """Record the running attempt as failed; a retry is scheduled unless ``final``."""
        self.current_step = None
        ended = self.now()
        number = len(call.attempts) + 1
        retry_at = None if final else next_retry(call.config["retries"], number, ended)
        failed = attempt(call.started, ended, failure)
        call.record = self._emit(attempt_failed(call.record, call.key, call.kind, failed, retry_at))

    def _begin(self, attempt: Attempt, kind: StepType = "do") -> None:
        message: BeginMessage = {
            "t": "begin",
            "name": attempt.name,
            "count": attempt.count,
            "attempt": attempt.number,
            "timeout": attempt.config["timeout"],
            "retries": attempt.config["retries"],
        }
        if kind == "rollback":
            message["type"] = kind
        with self._lock:
            # Both sides know whether an ack is due: records went out since the last one.
            self._transmit(message)
            due, self._unacked = self._unacked, False
        if due:
            self._channel.wait_ack()

    # -- host calls (env.fetch, env.workflows.create) ---------------------------------------------

    def call(self, method: str, args: JSONObject) -> Any:
        """Ask the platform to do ``method``; only inside a step body, so its result is recorded.

        Raises :class:`HostError` (:class:`PermanentHostError` when retrying cannot help).
        """
        if self.current_step is None:
            raise NonRetryableError(f"{method} is only allowed inside a step body")
        channel = self._channel
        if not hasattr(channel, "wait_reply"):
            raise NonRetryableError(f"{method} is not available in this sandbox")
        call_id = next(self._call_ids)
        self._send({"t": "call", "id": call_id, "method": method, "args": args})
        reply = cast(CallChannel, channel).wait_reply(call_id)
        failure = reply.get("error")
        if failure is None:
            return reply.get("result")
        kind = HostError if reply.get("retryable", True) else PermanentHostError
        raise kind(str(failure.get("message")), name=str(failure.get("name")))

    # -- step.sleep / step.sleep_until ----------------------------------------------------------

    def sleep(self, name: Any, duration: Any) -> None:
        key = self._enter(name, "sleep")
        seconds = parse_duration(duration, what="sleep duration")
        self._sleep(key, lambda now: now + seconds)

    def sleep_until(self, name: Any, when: Any) -> None:
        key = self._enter(name, "sleep")
        instant = parse_instant(when, what="sleep_until time")
        self._sleep(key, lambda now: instant)

    def _sleep(self, key: Key, wake_at_from: Callable[[float], float]) -> None:
        record = self._recorded(key, "sleep")
        if record is not None and record["status"] == "complete":
            return
        if self.mode == "rollback":
            self.stop()
        now = self.now()
        if record is None:
            wake_at = wake_at_from(now)
            if wake_at - now > MAX_DURATION_SECONDS:
                raise ValueError(f"step {key[0]!r}: cannot sleep for more than 365 days")
        else:
            recorded = record["wake_at"]
            wake_at = recorded if recorded is not None else now
        if wake_at > now:
            if record is None:
                self._emit(sleeping(key, wake_at))
            self._suspend(wake_at, None)
        self._emit(slept(key, wake_at))

    # -- step.wait_for_event --------------------------------------------------------------------

    def wait_for_event(
        self, name: Any, event_type: Any, timeout: Any, *, internal: bool = False
    ) -> JSONObject:
        """``internal``: a type of the platform's own (``child.<id>``), dots allowed."""
        key = self._enter(name, "wait_for_event")
        if not internal:
            check_event_type(event_type)
        seconds = parse_duration(timeout, what="wait_for_event timeout")
        record = self._recorded(key, "wait_for_event")
        if record is not None and record["status"] == "complete":
            return wait_output(record)
        if record is not None and record["status"] == "errored":
            failure = record["error"]
            assert failure is not None  # an errored record has its error
            raise WaitTimeout(failure["message"])
        if self.mode == "rollback":
            self.stop()
        now = self.now()
        deadline = now + seconds if record is None else float(record["wake_at"] or now)
        event = self._take_event(event_type, deadline)
        if event is not None:
            return wait_output(self._emit(event_taken(key, deadline, event_type, event)))
        if now >= deadline:
            message = f"step {key[0]!r}: no {event_type!r} event arrived before the timeout"
            self._emit(wait_timed_out(key, deadline, error("WaitTimeout", message)))
            raise WaitTimeout(message)
        if record is None:
            self._emit(waiting_for_event(key, deadline))
        self._suspend(deadline, event_type)

    def _take_event(self, event_type: str, deadline: float) -> EventRecord | None:
        """The oldest buffered event of this type, if it came before the wait's deadline."""
        for index, event in enumerate(self._events):
            if event["type"] == event_type:
                if float(event["timestamp"]) > deadline:
                    return None
                return self._events.pop(index)
        return None

    # -- shared machinery -----------------------------------------------------------------------

    def check_call(self, name: Any, kind: str) -> None:
        """Raise unless a step call may happen now: not after a suspend or an abort, and not
        inside a step body."""
        if self.suspended is not None or self.stopped:
            raise Suspend()
        if self.failure is not None:
            raise Abort()
        if self.current_step is not None:
            what = kind if kind.startswith("env.") else f"step.{kind}"
            raise NonRetryableError(
                f"steps cannot be nested: {what}({name!r}) was called inside the body "
                f"of step {self.current_step!r}"
            )

    def _enter(self, name: Any, kind: str) -> Key:
        """Check that a step call may happen now; return its key (name, occurrence)."""
        self.check_call(name, kind)
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
            raise ValueError(
                f"a step name must be a non-empty string of at most {MAX_NAME_CHARS} characters"
            )
        problem = text_problem(name, "a step name")
        if problem is not None:
            raise ValueError(problem)
        if name.startswith(ROLLBACK_PREFIX):
            raise ValueError(
                f"step names starting with {ROLLBACK_PREFIX!r} are reserved for the records of "
                "rollback handlers"
            )
        count = self._counts.get(name, 0) + 1
        self._counts[name] = count
        self._steps += 1
        if self._steps > self.limits.max_steps_per_instance:
            limit = self.limits.max_steps_per_instance
            self._abort(
                "LimitExceeded",
                f"the workflow ran more than {limit} steps (max_steps_per_instance)",
            )
        return name, count

    def _recorded(self, key: Key, kind: StepType) -> StepRecord | None:
        record = self._journal.get(key)
        if record is not None and record.get("type") != kind:
            name, count = key
            self._abort(
                "NondeterminismError",
                f"step {name!r} (occurrence {count}) was recorded as {record.get('type')} but is "
                f"now called as {kind}: run() must make the same step calls on every replay",
            )
        return record

    def _emit(self, record: StepRecord) -> StepRecord:
        """Keep ``record`` as the latest of its step and send it to the parent."""
        with self._lock:
            self._journal[record["name"], record["count"]] = record
            self._transmit({"t": "record", "record": record})
            self._unacked = True
        return record

    def _suspend(self, wake_at: float | None, event_type: str | None) -> NoReturn:
        self.suspended = (wake_at, event_type)
        self._send({"t": "suspend", "wake_at": wake_at, "event_type": event_type})
        raise Suspend()

    def suspend_until(self, wake_at: float) -> NoReturn:
        """Suspend for a retry that is not due yet (of one of several concurrent steps)."""
        self._suspend(wake_at, None)

    def stop(self) -> NoReturn:
        """Rollback mode: run() got as far as its records go; unwind it (sticky, like Suspend)."""
        self.stopped = True
        raise Suspend()

    def _abort(self, name: str, message: str) -> NoReturn:
        self.failure = error(name, message)
        raise Abort()

    def _send(self, message: Message) -> None:
        with self._lock:
            self._transmit(message)

    def _transmit(self, message: Message) -> None:
        """Send with the log lines printed since the last message (the caller holds the lock)."""
        message["logs"] = self._logbook.take()
        self._channel.send(message)

    # -- the end of run() -----------------------------------------------------------------------

    def finish(self, output: object = None, exc: BaseException | None = None) -> Outcome:
        """The outcome message, given what ``run()`` returned or raised.

        After a suspend or an abort, whatever ``run()`` did afterwards is ignored.
        """
        message: Outcome
        if self.failure is not None:
            message = {"t": "failed", "error": self.failure}
        elif self.mode == "rollback":
            message = self._unwind(error("Terminated", "terminated with rollback"))
        elif self.suspended is not None:
            message = self._suspended()
        elif exc is not None:
            message = self._unwind(self._run_error(exc))
        else:
            value, problem = encode_json(
                output, "the value run() returned", self.limits.max_step_result_bytes
            )
            message = self._unwind(problem) if problem else {"t": "done", "output": value}
        message["logs"] = self._logbook.close(self.now())
        return message

    def _suspended(self) -> Suspended:
        assert self.suspended is not None
        wake_at, event_type = self.suspended
        return {"t": "suspended", "wake_at": wake_at, "event_type": event_type}

    def _unwind(self, failure: ErrorValue) -> Outcome:
        """The instance fails with ``failure``: run the rollback handlers first
        (``docs/workflows.md``, "Sagas").

        A rollback's retry that is not due yet suspends the replay; the next one raises the same
        failure again (run() is deterministic) and resumes the rollbacks from their records.
        """
        message: Failed = {"t": "failed", "error": failure}
        if self.saga is None:
            return message
        try:
            rollback = self.saga.unwind(failure)
        except Suspend:
            return self._suspended()
        except Abort:
            assert self.failure is not None  # what aborts sets it first
            return {"t": "failed", "error": self.failure}
        if rollback is not None:
            message["rollback"] = rollback
        return message

    def _run_error(self, exc: BaseException) -> ErrorValue:
        if isinstance(exc, StepError):
            # Where run() called the step, then where the step's body raised, as Python
            # would show a step body called directly.
            return error(
                exc.name, exc.message, joined(self._frames(exc), clipped_traceback(exc.traceback))
            )
        if isinstance(exc, MemoryError):
            self.out_of_memory = True
            return error("MemoryError", f"out of memory (memory_mb={self.limits.memory_mb})")
        return error_of(exc, self.source)

    def _frames(self, exc: BaseException) -> list[Frame]:
        return self.source.frames(exc) if self.source is not None else []


def _step_error(failure: ErrorValue | None) -> StepError:
    """What ``run()`` gets from a step that failed for good: its error, frames included."""
    assert failure is not None  # an errored record has its error
    exc = StepError(str(failure.get("message", "")), name=str(failure.get("name", "Error")))
    exc.traceback = clipped_traceback(failure.get("traceback"))
    return exc
