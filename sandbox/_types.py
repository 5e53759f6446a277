"""The values that cross the sandbox boundary: limits, artifacts, replay requests, outcomes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Limits:
    """Resource limits of one tenant's sandbox workers (the tenant policy's fields)."""

    memory_mb: int = 256
    step_cpu_ms: int = 30000
    max_step_result_bytes: int = 1048576
    max_steps_per_instance: int = 10000

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
    """One version of a tenant's workflow code, as the loader stores it."""

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
    params: Any
    journal: list[dict[str, Any]]
    events: list[dict[str, Any]]
    now: float
    vars: dict[str, Any] = field(default_factory=dict)


@dataclass
class Done:
    """``run()`` returned: ``output`` is its JSON value."""

    output: Any
    records: list[dict[str, Any]]
    logs: list[dict[str, Any]]


@dataclass
class Suspended:
    """The run waits for ``wake_at`` (epoch seconds) and/or an event of ``event_type``."""

    wake_at: float | None
    event_type: str | None
    records: list[dict[str, Any]]
    logs: list[dict[str, Any]]


@dataclass
class Failed:
    """The instance ends in error: ``error`` is ``{"name", "message"}``."""

    error: dict[str, Any]
    records: list[dict[str, Any]]
    logs: list[dict[str, Any]]


Outcome = Done | Suspended | Failed


class Host(Protocol):
    """The engine's side of a replay."""

    def commit(self, records: list[dict[str, Any]], logs: list[dict[str, Any]]) -> None:
        """Make ``records`` and ``logs`` durable; return once committed.

        May raise (for instance when the instance's lease was lost): the pool then kills the
        worker running the replay and re-raises.
        """
        ...
