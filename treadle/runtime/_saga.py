"""Sagas: the rollback handlers of completed steps, run when the instance fails for good.

``step.do(..., rollback=fn)`` registers ``fn`` once the step is complete — when it completes
in this replay, and when a replay returns its recorded result — so a replay rebuilds the same
set. When ``run()`` ends in an uncaught error, the handlers run in reverse order of completion
(the ``ended_at`` of each step's successful attempt, as recorded: the same on every replay,
whichever thread finished first), each durably as a step of its own: key
``("rollback:<name>", count)``, type ``"rollback"``, with retries like a ``do``. They stop at
the first handler that fails for good.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from treadle.runtime._context import Attempt, Key, RollbackContext, accepts_arguments
from treadle.runtime._journal import ROLLBACK_PREFIX, StepCall
from treadle.runtime._messages import RollbackOutcome
from treadle.runtime._records import ErrorValue
from treadle.runtime._retries import StepConfig
from treadle.runtime._runtime import Runtime
from treadle.runtime._values import JSONValue
from treadle.runtime.errors import StepError


@dataclass(frozen=True)
class Entry:
    ended_at: float
    order: int
    key: Key
    handler: Callable[..., Any]
    config: StepConfig


class Saga:
    """The rollback handlers registered in one replay."""

    def __init__(self, replay: Runtime) -> None:
        self._replay = replay
        self._entries: list[Entry] = []

    @classmethod
    def of(cls, replay: Runtime) -> Saga:
        """The replay's saga, attached on first use (most workflows never register one)."""
        if not isinstance(replay.saga, Saga):
            replay.saga = cls(replay)
        return replay.saga

    def __len__(self) -> int:
        """How many handlers are registered."""
        return len(self._entries)

    def register(self, key: Key, handler: Callable[..., Any], config: StepConfig) -> None:
        """Step ``key`` is complete: ``handler`` undoes it if the instance fails."""
        record = self._replay.record(key)
        attempts = record["attempts"] if record else []
        ended_at = float((attempts[-1]["ended_at"] if attempts else None) or 0.0)
        self._entries.append(Entry(ended_at, len(self._entries), key, handler, config))

    def ordered(self) -> list[Entry]:
        """The handlers in the order they run: latest completion first."""
        return sorted(self._entries, key=lambda e: (e.ended_at, e.order), reverse=True)

    def open(self, entry: Entry) -> StepCall:
        """The durable call of ``entry``'s handler: ``("rollback:<name>", count)``."""
        name, count = entry.key
        return self._replay.open_rollback((ROLLBACK_PREFIX + name, count), entry.config)

    def output_of(self, entry: Entry) -> JSONValue:
        """What the undone step returned, as recorded (a copy: the handler may change it)."""
        record = self._replay.record(entry.key)
        output: JSONValue = json.loads(json.dumps(record["output"] if record else None))
        return output

    def unwind(self, failure: ErrorValue) -> RollbackOutcome | None:
        """Run the handlers, latest completion first; ``{"outcome", "error"}``, or None if
        there are none. A retry that is not due yet suspends (raises ``Suspend``)."""
        if not self._entries:
            return None
        for entry in self.ordered():
            call = self.open(entry)
            try:
                self._replay.run_call(call, self._body(entry, failure))
            except StepError:
                assert call.record is not None and call.record["error"] is not None
                return {"outcome": "failed", "error": call.record["error"].copy()}
        return {"outcome": "complete", "error": None}

    def _body(self, entry: Entry, failure: ErrorValue) -> Callable[[Attempt], Any]:
        output = self.output_of(entry)
        wants_ctx = accepts_arguments(entry.handler)

        def body(attempt: Attempt) -> Any:
            if wants_ctx:
                return entry.handler(RollbackContext(attempt, entry.key, failure, output))
            return entry.handler()

        return body
