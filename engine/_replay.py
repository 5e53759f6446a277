"""Drive one replay of a claimed instance through its sandbox and record what it did."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast

from engine._commits import RecordWrite, StepRow, step_row
from engine._observe import Attempt, Ended, Observer, RunTrace, Waited
from engine._store import Claimed, EngineStore, Final, Journal
from engine._usage import Usage
from sandbox import NOTHING_SPENT, Done, Failed, Outcome, ReplayRequest, Spent, Suspended
from storage import Clock, GroupCommitter
from treadle.runtime import ErrorValue, JSONObject, LogLine, StepRecord


class Stopping(Exception):
    """The process is stopping: the replay was cut short, and its instance is given back to
    be run again (by another process, or this one once it is back)."""


@dataclass(frozen=True)
class InstanceRef:
    """What a loader needs to find an instance's code: routing kept outside the params."""

    pk: int
    tenant_id: int
    workflow: str
    version: str
    id: str
    trace: RunTrace | None = None  # the trace of its run


class Recorder(Protocol):
    """What the engine offers a replay: making its records durable, with what they cost.
    Tenant bindings (egress, child workflows) are added on top by whoever builds the runner."""

    def commit(
        self,
        records: list[StepRecord],
        logs: list[LogLine],
        *,
        running: bool = False,
        spent: Spent = NOTHING_SPENT,
    ) -> None: ...

    def meter(self, usage: Usage) -> None:
        """Count ``usage`` (e.g. an egress request) with the replay's next commit."""
        ...

    def on_stop(self, stop: Callable[[BaseException], None]) -> None: ...


class Runner(Protocol):
    """A tenant's compiled program of one version, ready to replay instances."""

    vars: JSONObject
    sandbox: str  # "restricted" or "wasm"

    def replay(self, request: ReplayRequest, host: Recorder) -> Outcome: ...


LoadRunner = Callable[[InstanceRef], Runner]


@dataclass
class Counters:
    replays: int = 0
    steps: int = 0


class ReplayHost:
    """The engine's side of a replay: makes the sandbox's step records durable."""

    def __init__(
        self,
        store: EngineStore,
        committer: GroupCommitter,
        clock: Clock,
        claimed: Claimed,
        journal: Journal,
        lease_seconds: float,
        counters: Counters,
        observer: Observer | None = None,
    ) -> None:
        self._store = store
        self._observer = observer or Observer()
        self._committer = committer
        self._clock = clock
        self._claimed = claimed
        self._lease_seconds = lease_seconds
        self._counters = counters
        self._seq = {(s["name"], s["count"]): i for i, s in enumerate(journal.steps)}
        # Attempts of each step already committed: a commit meters only the new ones.
        self._attempts = {(s["name"], s["count"]): len(s["attempts"] or []) for s in journal.steps}
        self._usage = Usage()  # metered since the last commit
        self._trace = claimed.trace
        self._usage_lock = threading.Lock()
        self._stop_lock = threading.Lock()
        self._stoppers: list[Callable[[BaseException], None]] = []
        self._stopped_by: BaseException | None = None

    def on_stop(self, stop: Callable[[BaseException], None]) -> None:
        with self._stop_lock:
            if self._stopped_by is None:
                self._stoppers.append(stop)
                return
        stop(self._stopped_by)

    def stop(self, reason: BaseException) -> None:
        """End the replay at once with ``reason`` (from another thread; at most once)."""
        with self._stop_lock:
            if self._stopped_by is not None:
                return
            self._stopped_by = reason
            stoppers, self._stoppers = self._stoppers, []
        for stop in stoppers:
            stop(reason)

    def commit(
        self,
        records: list[StepRecord],
        logs: list[LogLine],
        *,
        running: bool = False,
        spent: Spent = NOTHING_SPENT,
    ) -> None:
        self.meter(_usage_of(spent))
        self._run(self._write(records, logs, None, pausable=not running))

    def meter(self, usage: Usage) -> None:
        with self._usage_lock:
            self._usage.add(usage)

    def finish(self, outcome: Outcome) -> None:
        final = _final(outcome, self._claimed.mode)
        self.meter(_usage_of(outcome.spent))
        self._run(self._write(outcome.records, outcome.logs, final))

    def _run(self, write: RecordWrite) -> None:
        self._committer.run(write)
        if write.attempts:
            self._observer.attempted(write.attempts)
        if write.waits:
            self._observer.waited(write.waits)
        final = write.final
        if final is not None and final.status != "waiting":
            claimed = self._claimed
            run = Ended(
                claimed.tenant_id,
                claimed.workflow,
                claimed.id,
                final.status,
                cast(ErrorValue | None, final.error),
                claimed.created_at,
                write.now,
                self._trace,
            )
            self._observer.ended(run)

    def fail(self, name: str, message: str) -> None:
        """End the instance as errored without replaying it (its code cannot be loaded)."""
        error: ErrorValue = {"name": name, "message": message}
        self._committer.run(self._write([], [], Final("errored", error=error)))

    def _write(
        self,
        records: list[StepRecord],
        logs: list[LogLine],
        final: Final | None,
        *,
        pausable: bool = True,
    ) -> RecordWrite:
        now = self._clock.now()
        rows = self._rows(records)
        with self._usage_lock:
            usage, self._usage = self._usage, Usage()
        ended: list[Attempt] = []
        waits: list[Waited] = []
        claimed = self._claimed
        for row in rows:
            if row["status"] in ("complete", "errored"):
                usage.steps += 1
                if row["type"] in ("sleep", "wait_for_event"):
                    waits.append(
                        Waited(
                            claimed.tenant_id,
                            claimed.workflow,
                            claimed.pk,
                            claimed.id,
                            row["name"],
                            row["count"],
                            row["type"],
                            row["status"],
                            now,
                            self._trace,
                        )
                    )
            key = (row["name"], row["count"])
            attempts = row["attempts"] or []
            done = self._attempts.get(key, 0)
            for number, a in enumerate(attempts[done:], start=done + 1):
                seconds = max(0.0, (a["ended_at"] or a["started_at"]) - a["started_at"])
                ended.append(
                    Attempt(
                        claimed.tenant_id,
                        claimed.workflow,
                        a["success"],
                        seconds,
                        instance_id=claimed.id,
                        step=row["name"],
                        count=row["count"],
                        kind=row["type"],
                        number=number,
                        started_at=a["started_at"],
                        error=a.get("error"),
                        trace=self._trace,
                    )
                )
            usage.step_attempts += max(0, len(attempts) - done)
            self._attempts[key] = len(attempts)
        self._counters.steps += usage.steps
        lease_until = now + self._lease_seconds
        write = RecordWrite(
            self._store,
            self._claimed,
            lease_until,
            rows,
            logs,
            now,
            final,
            pausable=pausable,
            usage=usage,
        )
        write.attempts = ended
        write.waits = waits
        return write

    def _rows(self, records: list[StepRecord]) -> list[StepRow]:
        # One row per step key: a batch may hold several records of one step (an attempt that
        # failed, then the retry that succeeded); the last one is the step's state.
        latest: dict[tuple[str, int], StepRecord] = {}
        for record in records:
            key = (record["name"], record["count"])
            if key not in self._seq:
                self._seq[key] = len(self._seq)
            latest[key] = record
        return [step_row(self._claimed.pk, self._seq[key], r) for key, r in latest.items()]


def _usage_of(spent: Spent) -> Usage:
    return Usage(cpu_us=spent.cpu_ns // 1000, wall_us=spent.wall_ns // 1000)


def _final(outcome: Outcome, mode: str) -> Final:
    if isinstance(outcome, Done):
        return Final("complete", output=outcome.output)
    if isinstance(outcome, Failed):
        if mode == "rollback":  # terminated with rollback: its handlers have now run
            return Final("terminated", rollback=outcome.rollback)
        return Final("errored", error=outcome.error, rollback=outcome.rollback)
    assert isinstance(outcome, Suspended)
    return Final("waiting", wake_at=outcome.wake_at, event_type=outcome.event_type)


def request_for(claimed: Claimed, journal: Journal, now: float, vars: JSONObject) -> ReplayRequest:
    return ReplayRequest(
        instance_id=claimed.id,
        workflow=claimed.workflow,
        created_at=claimed.created_at,
        params=claimed.params,
        journal=journal.steps,
        events=journal.events,
        now=now,
        vars=vars,
        mode=claimed.mode,
    )
