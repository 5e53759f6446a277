"""``self.env``: the tenant's bindings — ``vars``, ``fetch`` and ``workflows`` (see
``docs/workflows.md``).

``fetch`` and ``workflows.create`` are host calls: the worker asks the parent, which asks the
engine (egress policy, the HTTP request, creating the instance). ``fetch`` is allowed only
inside a step body, so that its result is recorded and a replay does not fetch again.
``workflows.create`` is a step of its own, ``workflows.create:<workflow>``, whose body is the
host call: the child starts exactly once across replays, under an id that is the same on every
replay. A child's outcome comes back as an event of type ``child.<id>``, which ``result()``
waits for.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from treadle.runtime._calls import (
    CHILD_EVENT_PREFIX,
    Response,
    check_instance_id,
    check_workflow_name,
    child_id,
    child_outcome,
    fetch_args,
)
from treadle.runtime._context import Attempt
from treadle.runtime._records import encode_json
from treadle.runtime._runtime import Runtime
from treadle.runtime._values import JSONObject
from treadle.runtime.errors import LimitExceeded, NonRetryableError, StepError, ValueNotStorable

_PARAMS_ERRORS: dict[str, type[Exception]] = {
    "LimitExceeded": LimitExceeded,
    "ValueNotStorable": ValueNotStorable,
}
FETCH_OUTSIDE_A_BODY = (
    "env.fetch is only allowed inside a step body, so that its result is recorded"
)


class Env:
    """``self.env``: the tenant's bindings. ``vars`` is read-only."""

    __slots__ = ("_replay", "vars", "workflows")

    def __init__(self, vars: Mapping[str, Any], replay: Runtime | None = None) -> None:
        self.vars = MappingProxyType(dict(vars))
        self.workflows = Workflows(replay)
        self._replay = replay

    def __repr__(self) -> str:
        return "<env>"

    def fetch(
        self, url: Any, method: Any = "GET", headers: Any = None, body: Any = None
    ) -> Response:
        """An HTTP request through the platform, under the tenant's egress policy."""
        if self._replay is None or self._replay.current_step is None:
            raise NonRetryableError(FETCH_OUTSIDE_A_BODY)
        result = self._replay.call("fetch", fetch_args(url, method, headers, body))
        return Response(result["status"], result["headers"], result["text"])


class Workflows:
    """``env.workflows``: start instances of the same tenant's workflows."""

    __slots__ = ("_replay",)

    def __init__(self, replay: Runtime | None) -> None:
        self._replay = replay

    def __repr__(self) -> str:
        return "<env.workflows>"

    def create(self, name: Any, params: Any = None, id: Any = None) -> ChildInstance:
        """Start an instance of workflow ``name`` once, whatever the replays; its handle."""
        replay = self._replay
        if replay is None:
            raise NonRetryableError("env.workflows is not available here")
        replay.check_call(name, "env.workflows.create")
        check_workflow_name(name)  # refused here, not in every attempt of the step
        if id is not None:
            check_instance_id(id)
        limit = replay.limits.max_step_result_bytes
        values, problem = encode_json(params, "the params of workflows.create", limit)
        if problem is not None:
            error_class = _PARAMS_ERRORS.get(problem["name"], TypeError)
            raise error_class(problem["message"])
        call = replay.open_step(f"workflows.create:{name}")

        def body(attempt: Attempt) -> Any:
            # The step's occurrence (its key's count), known here to every runtime.
            new_id = id if id is not None else child_id(replay.instance_id, name, attempt.count)
            args: JSONObject = {"workflow": name, "params": values, "id": new_id}
            return {"id": replay.call("workflows.create", args)["id"]}

        created = replay.run_call(call, body)
        return ChildInstance(replay, str(created["id"]))


class ChildInstance:
    """A child instance started by ``env.workflows.create``: its ``id`` and ``result()``."""

    __slots__ = ("_outcome", "_replay", "id")

    def __init__(self, replay: Runtime, id: str) -> None:
        self._replay = replay
        self._outcome: tuple[Any, StepError | None] | None = None
        self.id = id

    def __repr__(self) -> str:
        return f"<child instance {self.id!r}>"

    def result(self, name: Any = None, timeout: Any = "24 hours") -> Any:
        """Wait for the child to end: its output, or ``StepError`` if it did not complete.

        A step of its own (``wait_for_event``, named ``workflows.result:<id>`` by default);
        raises ``WaitTimeout`` if the child has not ended within ``timeout``.
        """
        if self._outcome is None:
            step_name = f"workflows.result:{self.id}" if name is None else name
            event_type = CHILD_EVENT_PREFIX + self.id
            event = self._replay.wait_for_event(step_name, event_type, timeout, internal=True)
            self._outcome = child_outcome(self.id, event.get("payload"))
        value, error = self._outcome
        if error is not None:
            raise error
        return value
