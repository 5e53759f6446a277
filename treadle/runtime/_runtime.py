"""What the step API needs from whoever drives a replay: the :class:`Runtime` protocol.

``step``, step handles, ``self.env``, fan-out and rollbacks are thin wrappers over these few
operations (the Temporal SDK's ``_Runtime`` pattern). Two implementations exist:

- :class:`~treadle.runtime._journal.Replay`, in the process that runs tenant code (the
  restricted sandbox, the local test harness): it keeps the journal itself and satisfies this
  protocol structurally;
- the Python-in-Wasm guest's runtime (``sandbox/wasm/guest/python/treadle_guest``), whose
  operations are calls to the host, which keeps the journal in a ``Replay`` of its own.

A runtime of the second kind learns a step's key and record only when the step begins on the
host: until then ``call.record`` is None, and the host stops or suspends the replay itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

if TYPE_CHECKING:
    from treadle.runtime._context import Attempt, Key
    from treadle.runtime._journal import Compensator, Limits, StepCall
    from treadle.runtime._records import StepRecord
    from treadle.runtime._retries import StepConfig
    from treadle.runtime._values import JSONObject

Body = Callable[["Attempt"], Any]


class Runtime(Protocol):
    """The operations of one replay that the step API calls."""

    saga: Compensator | None  # the rollback handlers, attached by ``Saga.of`` on first use

    @property
    def instance_id(self) -> str: ...

    @property
    def limits(self) -> Limits: ...

    @property
    def mode(self) -> str:
        """``"run"``, or ``"rollback"``: replay ``run()`` only as far as it is recorded."""
        ...

    @property
    def current_step(self) -> str | None:
        """The name of the step whose body runs on this thread, if any."""
        ...

    def now(self) -> float: ...

    def record(self, key: Key) -> StepRecord | None: ...

    def check_call(self, name: Any, kind: str) -> None:
        """Raise unless a step call may happen now (not inside a step body, say)."""

    def open_step(self, name: Any, retries: Any = None, timeout: Any = None) -> StepCall: ...

    def open_rollback(self, key: Key, config: StepConfig) -> StepCall: ...

    def run_call(self, call: StepCall, body: Body) -> Any:
        """The step's recorded output, or run ``body`` until it succeeds or fails for good
        (:class:`~treadle.runtime.errors.StepError`)."""

    def run_attempts(self, runs: Sequence[tuple[StepCall, Body]]) -> None:
        """One attempt of each of a batch of concurrent steps."""

    def suspend_until(self, wake_at: float) -> NoReturn: ...

    def stop(self) -> NoReturn:
        """Rollback mode: ``run()`` got as far as its records go."""
        ...

    def sleep(self, name: Any, duration: Any) -> None: ...

    def sleep_until(self, name: Any, when: Any) -> None: ...

    def wait_for_event(
        self, name: Any, event_type: Any, timeout: Any, *, internal: bool = False
    ) -> JSONObject: ...

    def call(self, method: str, args: JSONObject) -> Any:
        """Ask the platform to do ``method`` (``fetch``, ``workflows.create``)."""
