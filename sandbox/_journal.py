"""One replay of an instance: step keys, recorded results, retries, timers, events, suspend.

This is the backend-independent half of the step API. It knows nothing about how tenant code is
run: a backend hands it step bodies as callables (Python) or drives it from host imports (Wasm).
Every record it creates is sent to the parent at once; before any step body runs it sends
``begin`` and, when it has sent records since the last acknowledgement, waits for ``ack`` — the
parent commits those records first, which is the durability rule of DESIGN §3.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from sandbox._logbook import Logbook
from sandbox._records import (
    MAX_NAME_CHARS,
    encode_json,
    error,
    error_of,
    iso,
    new_record,
)
from sandbox._retries import next_retry, resolve_retries, resolve_timeout
from sandbox._types import Limits
from treadle import MAX_DURATION_SECONDS, parse_duration, parse_instant
from treadle.errors import NonRetryableError, StepError, WaitTimeout

EVENT_TYPE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9_-]*$")
Key = tuple[str, int]


class Suspend(BaseException):
    """Unwinds ``run()`` when a blocking step cannot proceed yet.

    A ``BaseException`` so that ``except Exception`` in tenant code lets it through; tenant code
    that catches it anyway gains nothing, because the replay stays suspended (sticky).
    """


class Abort(BaseException):
    """Unwinds ``run()`` when the instance must fail whatever the code does (a limit)."""


class Channel(Protocol):
    """How a replay talks to the parent: fire-and-forget messages and the ``ack`` it awaits."""

    def send(self, message: dict[str, Any]) -> None: ...

    def wait_ack(self) -> None: ...


@dataclass(frozen=True)
class Attempt:
    """What a step body may know about the attempt it runs in (``ctx``)."""

    name: str
    count: int
    number: int
    config: dict[str, Any]
    idempotency_key: str


class Replay:
    def __init__(
        self,
        request: Mapping[str, Any],
        limits: Limits,
        channel: Channel,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.instance_id: str = request["instance_id"]
        self._channel = channel
        self._clock = clock
        self._started = clock()
        self._now0 = float(request["now"])
        self._journal: dict[Key, dict[str, Any]] = {
            (r["name"], r["count"]): r for r in request["journal"]
        }
        self._events: list[dict[str, Any]] = list(request["events"])
        self._counts: dict[str, int] = {}
        self._steps = 0
        self._unacked = False
        self._logbook = Logbook()
        self.current_step: str | None = None
        self.suspended: tuple[float | None, str | None] | None = None
        self.failure: dict[str, str] | None = None
        self.out_of_memory = False

    def now(self) -> float:
        """The engine's clock at the start of the replay plus the time since (monotonic)."""
        return self._now0 + (self._clock() - self._started)

    def log(self, message: str) -> None:
        self._logbook.write(self.now(), self.current_step, message)

    # -- step.do --------------------------------------------------------------------------------

    def do(
        self, name: Any, body: Callable[[Attempt], Any], retries: Any = None, timeout: Any = None
    ) -> Any:
        """Return the step's recorded output, or run ``body`` until it succeeds or fails for good.

        A failed step raises :class:`StepError` carrying the original error's name and message.
        """
        key = self._enter(name, "do")
        config = {"retries": resolve_retries(retries), "timeout": resolve_timeout(timeout)}
        record = self._recorded(key, "do")
        while True:
            if record is not None:
                status = record["status"]
                if status == "complete":
                    return record["output"]
                if status == "errored":
                    raise _step_error(record["error"])
                wake_at = record.get("wake_at")
                if status == "waiting" and wake_at is not None and wake_at > self.now():
                    self._suspend(wake_at, None)
            record = self._attempt(key, record, config, body)

    def _attempt(
        self,
        key: Key,
        record: dict[str, Any] | None,
        config: dict[str, Any],
        body: Callable[[Attempt], Any],
    ) -> dict[str, Any]:
        attempts = list(record["attempts"]) if record else []
        name, count = key
        ikey = f"{self.instance_id}:{name}:{count}"
        attempt = Attempt(name, count, len(attempts) + 1, config, ikey)
        self._begin(attempt)
        started = self.now()
        self.current_step = name
        try:
            value = body(attempt)
        except (Suspend, Abort):
            raise
        except MemoryError:
            self.out_of_memory = True
            failure = error("MemoryError", f"out of memory (memory_mb={self.limits.memory_mb})")
            return self._failed(key, attempts, attempt, started, failure, final=False)
        except BaseException as exc:
            final = isinstance(exc, NonRetryableError)
            return self._failed(key, attempts, attempt, started, error_of(exc), final=final)
        finally:
            self.current_step = None
        what = f"the result of step {name!r}"
        output, problem = encode_json(value, what, self.limits.max_step_result_bytes)
        if problem is not None:
            return self._failed(key, attempts, attempt, started, problem, final=True)
        done = {"started_at": started, "ended_at": self.now(), "success": True, "error": None}
        return self._emit(key, "do", status="complete", output=output, attempts=[*attempts, done])

    def _failed(
        self,
        key: Key,
        attempts: list[dict[str, Any]],
        attempt: Attempt,
        started: float,
        failure: dict[str, str],
        *,
        final: bool,
    ) -> dict[str, Any]:
        ended = self.now()
        entry = {"started_at": started, "ended_at": ended, "success": False, "error": failure}
        retry_at = None if final else next_retry(attempt.config["retries"], attempt.number, ended)
        if retry_at is None:
            return self._emit(
                key, "do", status="errored", error=failure, attempts=[*attempts, entry]
            )
        return self._emit(
            key, "do", status="waiting", wake_at=retry_at, attempts=[*attempts, entry]
        )

    def _begin(self, attempt: Attempt) -> None:
        self._send(
            {
                "t": "begin",
                "name": attempt.name,
                "count": attempt.count,
                "attempt": attempt.number,
                "timeout": attempt.config["timeout"],
                "retries": attempt.config["retries"],
            }
        )
        if self._unacked:
            self._channel.wait_ack()
            self._unacked = False

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
        now = self.now()
        if record is None:
            wake_at = wake_at_from(now)
            if wake_at - now > MAX_DURATION_SECONDS:
                raise ValueError(f"step {key[0]!r}: cannot sleep for more than 365 days")
        else:
            wake_at = record["wake_at"] if record.get("wake_at") is not None else now
        if wake_at > now:
            if record is None:
                self._emit(key, "sleep", status="waiting", wake_at=wake_at)
            self._suspend(wake_at, None)
        self._emit(key, "sleep", status="complete", wake_at=wake_at)

    # -- step.wait_for_event --------------------------------------------------------------------

    def wait_for_event(self, name: Any, event_type: Any, timeout: Any) -> dict[str, Any]:
        key = self._enter(name, "wait_for_event")
        _check_event_type(event_type)
        seconds = parse_duration(timeout, what="wait_for_event timeout")
        record = self._recorded(key, "wait_for_event")
        if record is not None and record["status"] == "complete":
            return dict(record["output"])
        if record is not None and record["status"] == "errored":
            raise WaitTimeout(record["error"]["message"])
        now = self.now()
        deadline = now + seconds if record is None else float(record["wake_at"] or now)
        event = self._take_event(event_type, deadline)
        if event is not None:
            output = {
                "type": event_type,
                "payload": event["payload"],
                "timestamp": iso(event["timestamp"]),
            }
            self._emit(
                key, "wait_for_event", status="complete", output=output,
                wake_at=deadline, event_pk=event["pk"],
            )  # fmt: skip
            return dict(output)
        if now >= deadline:
            message = f"step {key[0]!r}: no {event_type!r} event arrived before the timeout"
            failure = error("WaitTimeout", message)
            self._emit(key, "wait_for_event", status="errored", error=failure, wake_at=deadline)
            raise WaitTimeout(message)
        if record is None:
            self._emit(key, "wait_for_event", status="waiting", wake_at=deadline)
        self._suspend(deadline, event_type)

    def _take_event(self, event_type: str, deadline: float) -> dict[str, Any] | None:
        """The oldest buffered event of this type, if it came before the wait's deadline."""
        for index, event in enumerate(self._events):
            if event["type"] == event_type:
                if float(event["timestamp"]) > deadline:
                    return None
                return self._events.pop(index)
        return None

    # -- shared machinery -----------------------------------------------------------------------

    def _enter(self, name: Any, kind: str) -> Key:
        """Check that a step call may happen now; return its key (name, occurrence)."""
        if self.suspended is not None:
            raise Suspend()
        if self.failure is not None:
            raise Abort()
        if self.current_step is not None:
            raise NonRetryableError(
                f"steps cannot be nested: step.{kind}({name!r}) was called inside the body "
                f"of step {self.current_step!r}"
            )
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
            raise ValueError(
                f"a step name must be a non-empty string of at most {MAX_NAME_CHARS} characters"
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

    def _recorded(self, key: Key, kind: str) -> dict[str, Any] | None:
        record = self._journal.get(key)
        if record is not None and record.get("type") != kind:
            name, count = key
            self._abort(
                "NondeterminismError",
                f"step {name!r} (occurrence {count}) was recorded as {record.get('type')} but is "
                f"now called as {kind}: run() must make the same step calls on every replay",
            )
        return record

    def _emit(self, key: Key, kind: str, **fields: Any) -> dict[str, Any]:
        record = {**new_record(key[0], key[1], kind), **fields}
        self._journal[key] = record
        self._send({"t": "record", "record": record})
        self._unacked = True
        return record

    def _suspend(self, wake_at: float | None, event_type: str | None) -> NoReturn:
        self.suspended = (wake_at, event_type)
        self._send({"t": "suspend", "wake_at": wake_at, "event_type": event_type})
        raise Suspend()

    def _abort(self, name: str, message: str) -> NoReturn:
        self.failure = error(name, message)
        raise Abort()

    def _send(self, message: dict[str, Any]) -> None:
        message["logs"] = self._logbook.take()
        self._channel.send(message)

    # -- the end of run() -----------------------------------------------------------------------

    def finish(self, output: Any = None, exc: BaseException | None = None) -> dict[str, Any]:
        """The outcome message, given what ``run()`` returned or raised.

        After a suspend or an abort, whatever ``run()`` did afterwards is ignored.
        """
        message: dict[str, Any]
        if self.failure is not None:
            message = {"t": "failed", "error": self.failure}
        elif self.suspended is not None:
            wake_at, event_type = self.suspended
            message = {"t": "suspended", "wake_at": wake_at, "event_type": event_type}
        elif exc is not None:
            message = {"t": "failed", "error": self._run_error(exc)}
        else:
            value, problem = encode_json(
                output, "the value run() returned", self.limits.max_step_result_bytes
            )
            message = (
                {"t": "failed", "error": problem} if problem else {"t": "done", "output": value}
            )
        message["logs"] = self._logbook.close(self.now())
        return message

    def _run_error(self, exc: BaseException) -> dict[str, str]:
        if isinstance(exc, StepError):
            return error(exc.name, exc.message)
        if isinstance(exc, MemoryError):
            self.out_of_memory = True
            return error("MemoryError", f"out of memory (memory_mb={self.limits.memory_mb})")
        return error_of(exc)


def _step_error(failure: Mapping[str, Any]) -> StepError:
    return StepError(str(failure.get("message", "")), name=str(failure.get("name", "Error")))


def _check_event_type(event_type: Any) -> None:
    if not isinstance(event_type, str) or len(event_type) > 100 or not EVENT_TYPE.match(event_type):
        raise ValueError(
            "an event type must be at most 100 characters of letters, digits, '_' and '-', "
            "not starting with '-'"
        )
