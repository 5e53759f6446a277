"""What a run in the local test harness gives back: :class:`RunResult` and its parts."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, NotRequired, TypedDict

from treadle.runtime import ErrorValue, JSONValue, RollbackOutcome, StepRecord
from treadle.testing._host import FetchRequest


class LogLine(NamedTuple):
    """A line the workflow printed, and the step whose body printed it (None: outside)."""

    step: str | None
    message: str


@dataclass(frozen=True)
class StepResult:
    """One step as the instance API shows it (``record``), with the figures tests check."""

    record: StepRecord
    delays: tuple[float, ...] = ()  # the virtual seconds waited before each retry

    @property
    def name(self) -> str:
        return str(self.record["name"])

    @property
    def count(self) -> int:
        return int(self.record["count"])

    @property
    def type(self) -> str:
        return str(self.record["type"])

    @property
    def status(self) -> str:
        return str(self.record["status"])

    @property
    def output(self) -> Any:
        return self.record["output"]

    @property
    def error(self) -> ErrorValue | None:
        """``{"name", "message"}`` of a step that failed for good."""
        return self.record["error"]

    @property
    def attempts(self) -> int:
        """How many times the body ran (0 for a sleep or a wait)."""
        return len(self.record["attempts"])

    @property
    def errors(self) -> list[ErrorValue | None]:
        """The errors of the failed attempts, in order."""
        return [a["error"] for a in self.record["attempts"] if not a["success"]]


class Steps(Mapping[Any, StepResult]):
    """The steps of a run: ``steps["name"]`` is the first occurrence of a name,
    ``steps["name", 2]`` the second; iteration gives the names in the order they first ran."""

    def __init__(self, results: list[StepResult]) -> None:
        self._by_key = {(r.name, r.count): r for r in results}
        self._names = list(dict.fromkeys(r.name for r in results))

    def __getitem__(self, key: Any) -> StepResult:
        found = self._by_key.get(key if isinstance(key, tuple) else (key, 1))
        if found is None:
            known = ", ".join(repr(n) for n in self._names) or "none"
            raise KeyError(f"no step {key!r} in this run (steps: {known})")
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def all(self, name: str) -> list[StepResult]:
        """Every occurrence of step ``name``, in order."""
        return [r for (n, _), r in sorted(self._by_key.items()) if n == name]


@dataclass(frozen=True)
class RunResult:
    """The end of a run: ``status`` is ``"complete"`` or ``"errored"``, as on the platform."""

    status: str
    output: JSONValue
    error: ErrorValue | None
    records: list[StepResult]
    logs: list[LogLine]
    sleeps: list[tuple[str, float]]
    rollback: RollbackOutcome | None = None
    fetches: list[FetchRequest] = field(default_factory=list)
    children: list[ChildStart] = field(default_factory=list)
    replays: int = 0  # how many times run() executed, as the engine would have run it
    elapsed: float = 0.0  # virtual seconds from the start to the end

    @property
    def steps(self) -> Steps:
        return Steps(self.records)


class ChildStart(TypedDict):
    """A child instance the run started (``env.workflows.create``), and the result of its run
    in the harness (a registered workflow; a mocked one has none)."""

    workflow: str
    id: str
    params: JSONValue
    result: NotRequired[RunResult]
