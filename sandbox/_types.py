"""The values that cross the sandbox boundary: limits, artifacts, replay requests, outcomes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from sandbox._deadline import Deadline
from treadle.runtime import (
    ErrorValue,
    EventRecord,
    JSONObject,
    JSONValue,
    LogLine,
    RollbackOutcome,
    StepLimits,
    StepRecord,
)


@dataclass(frozen=True)
class Limits(StepLimits):
    """Resource limits of one tenant's sandbox workers (the tenant policy's fields, with the
    platform's defaults from ``treadle.runtime``)."""

    # Not a policy value: the pool sets it from the artifact. A worker serves one tenant and
    # one sandbox for its whole life, and loads that sandbox's runtime when it starts (a Wasm
    # runtime costs every worker that loads it address space under RLIMIT_AS).
    sandbox: str = "restricted"

    def __post_init__(self) -> None:
        for name in ("memory_mb", "step_cpu_ms", "max_step_result_bytes", "max_steps_per_instance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive integer, got {value!r}")
        if self.memory_mb < 64:
            # Below this the forked interpreter cannot even map what it already holds.
            raise ValueError(f"Limits.memory_mb must be at least 64, got {self.memory_mb}")

    @property
    def step_cpu_seconds(self) -> float:
        return self.step_cpu_ms / 1000.0


@dataclass(frozen=True)
class Artifact:
    """One version of a tenant's workflow code, as the loader stores it.

    ``sandbox`` names the backend: ``restricted`` and ``wasm`` take Python source;
    ``wasm-module`` takes a WebAssembly core module, base64-encoded, as its ``source``.
    """

    version: str
    sandbox: str
    source: str
    class_name: str | None = None


@dataclass
class ReplayRequest:
    """Everything one replay of an instance needs; the sandbox has no other input."""

    instance_id: str
    workflow: str
    created_at: float
    params: JSONValue
    journal: list[StepRecord]
    events: list[EventRecord]
    now: float
    vars: JSONObject = field(default_factory=dict)
    # "rollback": terminate with rollback. run() replays only as far as its records go (no
    # body runs, nothing suspends), then the rollback handlers run; the outcome is
    # Failed(Terminated) with its ``rollback``, or Suspended for a rollback's retry.
    mode: str = "run"

    def __post_init__(self) -> None:
        if self.mode not in ("run", "rollback"):
            raise ValueError(f"ReplayRequest.mode must be 'run' or 'rollback', got {self.mode!r}")


@dataclass(frozen=True)
class Spent:
    """What a replay's sandbox worker spent on it since the replay's previous commit: its CPU
    time (every thread of the worker process) and the wall time it ran, commits excluded."""

    cpu_ns: int = 0
    wall_ns: int = 0


NOTHING_SPENT = Spent()


@dataclass
class Done:
    """``run()`` returned: ``output`` is its JSON value."""

    output: JSONValue
    records: list[StepRecord]
    logs: list[LogLine]
    spent: Spent = field(default=NOTHING_SPENT, compare=False)  # since the last commit


@dataclass
class Suspended:
    """The run waits for ``wake_at`` (epoch seconds) and/or an event of ``event_type``."""

    wake_at: float | None
    event_type: str | None
    records: list[StepRecord]
    logs: list[LogLine]
    spent: Spent = field(default=NOTHING_SPENT, compare=False)


@dataclass
class Failed:
    """The instance ends in error: ``error`` is ``{"name", "message"}``.

    ``rollback`` is ``{"outcome": "complete" | "failed", "error": {"name", "message"} | None}``
    once rollback handlers ran (``error``: the first handler that failed for good), else None.
    """

    error: ErrorValue
    records: list[StepRecord]
    logs: list[LogLine]
    rollback: RollbackOutcome | None = None
    spent: Spent = field(default=NOTHING_SPENT, compare=False)


Outcome = Done | Suspended | Failed


class Host(Protocol):
    """The engine's side of a replay."""

    def commit(
        self,
        records: list[StepRecord],
        logs: list[LogLine],
        *,
        running: bool = False,
        spent: Spent = NOTHING_SPENT,
    ) -> None:
        """Make ``records`` and ``logs`` durable; return once committed.

        ``spent``: what the worker spent since the previous commit, to be metered with them.

        ``running``: other step bodies of the replay still run (a fan-out whose finished
        branches are made durable at once), so the replay cannot stop here for a pause.

        May raise (the instance's lease was lost; the engine stops the replay to pause or
        terminate the instance): the pool then kills the worker running the replay, reports no
        further records and re-raises — once the host calls in flight have returned.
        """
        ...

    def call(self, method: str, args: JSONObject, deadline: Deadline) -> object:
        """Do something for tenant code and return its JSON result; may run on several threads
        at once, and concurrently with ``commit``.

        ``deadline`` is the platform's: the call must be over by ``deadline.at``, and should
        register what it holds open (a connection) with ``deadline.on_expiry``, to be closed
        when the deadline passes or the replay ends.

        - ``"fetch"``, args ``{"url", "method", "headers", "body"}`` → ``{"status", "headers",
          "text"}``: an HTTP request under the tenant's egress policy.
        - ``"workflows.create"``, args ``{"workflow", "params", "id"}`` → ``{"id"}``: start an
          instance of the tenant's workflow as a child of this one. It must be idempotent by
          id: after a crash the step runs again with the same id.
        - ``"links.create"``, args ``{"step", "type", "ttl", "uses"}`` → ``{"url",
          "expires_at"}``: an approval link to this instance (``step.approval_link``), replacing
          the one the same step (``<name>#<count>``) minted before.

        Raise a ``treadle.runtime.errors.TreadleError`` to fail the call: tenant code gets its class
        name and message, and a ``NonRetryableError`` (subclass) makes the step fail for good.
        Any other exception is logged, and tenant code sees only that the call failed.
        """
        ...

    def on_stop(self, stop: Callable[[BaseException], None]) -> None:
        """Register how to stop the replay at once (the instance was terminated, restarted or
        deleted, or the process is shutting down): the engine calls ``stop`` with the exception
        the replay must end with, at most once, from another thread."""
        ...


class NotReady(RuntimeError):
    """The sandbox cannot take this code yet: the Python-in-Wasm runtime is being built
    (``seconds_left`` is the estimate of the time it still takes), or its build failed
    (``seconds_left`` is None; the message says why). Not the tenant's fault: the same code is
    taken once the runtime is there."""

    def __init__(self, message: str, *, seconds_left: float | None) -> None:
        super().__init__(message)
        self.seconds_left = seconds_left
