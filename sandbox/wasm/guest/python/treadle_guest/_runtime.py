"""The :class:`~treadle.runtime._runtime.Runtime` of the guest: the step API of
``treadle.runtime`` runs here unchanged, and each replay operation is a call to the host.

The host keeps the journal (a ``Replay`` of its own) and applies the retry, timer, event and
determinism rules; step bodies and rollback handlers run here. A step's key and record are the
host's to give: a step opened here learns them when it begins there, so until then its record is
None and the host, not the step API, stops or suspends the replay.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from treadle.runtime import (
    ROLLBACK_PREFIX,
    Attempt,
    Entry,
    ErrorValue,
    JSONObject,
    JSONValue,
    Key,
    NonRetryableError,
    RollbackOutcome,
    Saga,
    StepCall,
    StepConfig,
    StepError,
    StepRecord,
    TenantSource,
    error,
    message_of,
    new_record,
)
from treadle.runtime._journal import Compensator
from treadle.runtime._messages import AttemptInfo, Progress
from treadle.runtime._retries import resolve_step_config

from . import _host

Body = Callable[[Attempt], Any]
# The host operation of each host call (``Runtime.call``).
_CALLS = {
    "fetch": "fetch",
    "workflows.create": "workflows-create",
    "links.create": "links-create",
}


# A pending step's ``config`` until the host resolves its options (never read meanwhile).
_DEFAULTS = resolve_step_config(None, None)


@dataclass
class PendingCall(StepCall):
    """A step opened in the guest: its options as tenant code wrote them, which the host
    resolves when the step begins (``config`` holds the defaults until then)."""

    retries: object = None
    timeout: object = None


@dataclass(frozen=True)
class GuestLimits:
    memory_mb: int
    max_step_result_bytes: int
    max_steps_per_instance: int


class HostRuntime:
    """One replay of ``run()`` in the guest, its journal kept by the host."""

    def __init__(self, request: Mapping[str, Any], source: TenantSource) -> None:
        self.source = source  # the tenant's: a body's error carries its frames
        self.instance_id: str = request["instance_id"]
        self.mode: str = request.get("mode") or "run"
        self.limits = GuestLimits(**request["limits"])
        self.saga: Compensator | None = HostSaga(self)
        self.current_step: str | None = None  # the step whose body runs here
        self._records: dict[Key, StepRecord] = {}

    def now(self) -> float:
        """The guest's clock: it reads the instance's creation time on every replay."""
        return time.time()

    def record(self, key: Key) -> StepRecord | None:
        return self._records.get(key)

    def check_call(self, name: Any, kind: str) -> None:
        # Outside a body the host checks at the step's begin; inside one it says why not.
        if self.current_step is not None:
            _host.call("check-call", name=name, kind=kind)

    def open_step(self, name: Any, retries: Any = None, timeout: Any = None) -> StepCall:
        return PendingCall((name, 0), _DEFAULTS, None, retries=retries, timeout=timeout)

    def open_rollback(self, key: Key, config: StepConfig) -> StepCall:
        return PendingCall(key, config, None, kind="rollback")

    def run_call(self, call: StepCall, body: Body) -> Any:
        name = call.key[0]
        try:
            began = self._begin(call)
            while "attempt" in began:
                began = self._attempt(name, self._attempt_of(call, began["attempt"]), body)
        except StepError as exc:
            failure = error(exc.name, exc.message, exc.traceback)
            self._settle(call, call.key[1], failure=failure)
            raise
        self._settle(call, int(began["count"]), output=began["output"])
        return call.output

    def run_attempts(self, runs: Sequence[tuple[StepCall, Body]]) -> None:
        """The guest has no threads: concurrent steps run one after the other, in order."""
        for call, body in runs:
            try:
                self.run_call(call, body)
            except StepError:  # recorded: the step API settles it from the record
                pass

    def suspend_until(self, wake_at: float) -> NoReturn:
        # The guest never holds a waiting record, so the step API never waits on one here.
        raise NonRetryableError("the host suspends the replay of a guest, not the guest")

    def stop(self) -> NoReturn:
        raise _host.Stopped("stopped")

    def sleep(self, name: Any, duration: Any) -> None:
        _host.call("sleep", name=name, duration=_seconds(duration))

    def sleep_until(self, name: Any, when: Any) -> None:
        instant = when.isoformat() if isinstance(when, datetime.datetime) else when
        _host.call("sleep-until", name=name, when=instant)

    def wait_for_event(
        self, name: Any, event_type: Any, timeout: Any, *, internal: bool = False
    ) -> JSONObject:
        args: dict[str, object] = {"name": name, "type": event_type, "timeout": _seconds(timeout)}
        if internal:
            args["internal"] = True
        event: JSONObject = _host.call("wait-for-event", **args)
        return event

    def call(self, method: str, args: JSONObject) -> Any:
        if method not in _CALLS:
            raise NonRetryableError(f"{method} is not available in this sandbox")
        return _host.call(_CALLS[method], **args)

    # -- one step on the host --------------------------------------------------------------------

    def _begin(self, call: StepCall) -> Progress:
        name, count = call.key
        if call.kind == "rollback":
            began: Progress = _host.call(
                "rollback-begin", name=name[len(ROLLBACK_PREFIX) :], count=count
            )
            return began
        assert isinstance(call, PendingCall)
        retries = call.retries
        if isinstance(retries, dict) and isinstance(retries.get("delay"), datetime.timedelta):
            retries = {**retries, "delay": retries["delay"].total_seconds()}
        began = _host.call("step-begin", name=name, retries=retries, timeout=_seconds(call.timeout))
        return began

    def _attempt_of(self, call: StepCall, attempt: AttemptInfo) -> Attempt:
        call.key = (call.key[0], int(attempt["count"]))
        call.config = attempt["config"]
        return Attempt(
            attempt["name"], call.key[1], attempt["number"], call.config, attempt["idempotency_key"]
        )

    def _attempt(self, name: str, attempt: Attempt, body: Body) -> Progress:
        """Run one attempt of a body; the host answers with the output or the next attempt."""
        self.current_step = attempt.name
        try:
            value = body(attempt)
        except BaseException as exc:  # a body may raise anything; the host applies the retries
            self.current_step = None
            final = isinstance(exc, NonRetryableError)
            kind = type(exc).__name__
            return _fail(kind, message_of(exc), final, self.source.frames(exc))
        self.current_step = None
        try:
            text = json.dumps(value, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError, RecursionError) as exc:
            message = f"the result of step {name!r} is not JSON-serializable: {message_of(exc)}"
            return _fail("TypeError", message, True)
        ended: Progress = _host.call("step-end", output=text)
        return ended

    def _settle(
        self,
        call: StepCall,
        count: int,
        *,
        output: JSONValue = None,
        failure: ErrorValue | None = None,
    ) -> None:
        """The step is complete or failed for good: its record, as far as the guest needs it
        (a step that failed at its begin keeps count 0: nothing registers it)."""
        name = call.key[0]
        call.key = (name, count)
        record = new_record(name, count, call.kind)
        if failure is None:
            record["status"], record["output"] = "complete", output
            self._records[call.key] = record
        else:
            record["status"], record["error"] = "errored", failure
        call.record = record


def _fail(kind: str, message: str, final: bool, traceback: object = ()) -> Progress:
    failed: Progress = _host.call(
        "step-fail", kind=kind, message=message, final=final, traceback=traceback
    )
    return failed


def _seconds(value: object) -> object:
    """A duration as JSON: timedeltas become seconds, the rest is checked by the host."""
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    return value


class HostSaga(Saga):
    """The rollback handlers of the guest's steps. The host keeps their registrations and
    records, and says in which order they run (``unwind``)."""

    def __init__(self, runtime: HostRuntime) -> None:
        super().__init__(runtime)
        self._order: list[Key] = []

    def register(self, key: Key, handler: Callable[..., Any], config: StepConfig) -> None:
        _host.call("rollback-register", name=key[0], count=key[1], config=config)
        super().register(key, handler, config)

    def unwind_with_host(self, failure: Mapping[str, object] | None) -> RollbackOutcome | None:
        """run() failed with ``failure`` (None: the replay terminates with rollback): run the
        handlers in the host's order, each durably, against the host's view of the failure."""
        plan = _host.call("unwind", error=failure)
        self._order = [(str(step["name"]), int(step["count"])) for step in plan["steps"]]
        return self.unwind(plan["error"])

    def ordered(self) -> list[Entry]:
        entries = {entry.key: entry for entry in super().ordered()}
        return [entries[key] for key in self._order if key in entries]
