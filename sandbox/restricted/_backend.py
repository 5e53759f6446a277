"""The ``restricted`` backend: tenant Python compiled by RestrictedPython, run in this process.

"This process" is always a sandbox worker (or a unit test): the pool never loads this module
into the engine. The compiled code object is cached per artifact version; every replay executes
the module afresh from it, so module-level state cannot leak from one replay into the next.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sandbox._compile import FILENAME, Compiled, compile_workflow, problem
from sandbox._threads import run_all
from sandbox._types import Limits
from sandbox.restricted._policy import module_globals, reset_module_state
from treadle.runtime import (
    Abort,
    Channel,
    CodeInvalid,
    Env,
    Event,
    Replay,
    Step,
    Suspend,
    TenantSource,
    WorkflowEntrypoint,
    message_of,
)
from treadle.runtime._messages import Outcome

MODULE_NAME = "workflow"


class RestrictedBackend:
    name = "restricted"

    def compile(self, source: str, class_name: str | None) -> RestrictedProgram:
        return RestrictedProgram(compile_workflow(source, class_name))


class RestrictedProgram:
    def __init__(self, compiled: Compiled) -> None:
        self._code = compiled.code
        self.class_name = compiled.class_name
        self._source = compiled.source

    def check(self) -> None:
        """Execute the module once, as every replay will; raise CodeInvalid if that fails."""
        try:
            self._workflow_class(module_globals(MODULE_NAME, lambda text: None))
        except CodeInvalid:
            raise
        except BaseException as exc:
            line = _tenant_line(exc)
            message = f"running the module failed: {type(exc).__name__}: {message_of(exc)}"
            raise CodeInvalid(message, problems=[problem(line, 1, message)]) from None

    def replay(
        self, request: Mapping[str, Any], limits: Limits, channel: Channel
    ) -> tuple[Outcome, bool]:
        """Run ``run()`` once; return the outcome message and whether the worker is spent."""
        replay = Replay(request, limits, channel, parallel=run_all, source=self._source)
        reset_module_state()
        try:
            workflow = self._workflow_class(module_globals(MODULE_NAME, replay.log))()
            workflow.env = Env(request.get("vars") or {}, replay)
            output = workflow.run(Event(request), Step(replay))
        except (Suspend, Abort):
            return replay.finish(), replay.out_of_memory
        except BaseException as exc:  # tenant code may raise anything, SystemExit included
            return replay.finish(exc=exc), replay.out_of_memory
        return replay.finish(output), replay.out_of_memory

    def _workflow_class(self, namespace: dict[str, object]) -> type[WorkflowEntrypoint]:
        exec(self._code, namespace)
        found = namespace.get(self.class_name)
        if not (isinstance(found, type) and issubclass(found, WorkflowEntrypoint)):
            # The static check saw the class; only code that rebinds its name gets here.
            message = f"{self.class_name!r} is not a WorkflowEntrypoint subclass when run"
            raise CodeInvalid(message, problems=[problem(1, 1, message)])
        return found


def _tenant_line(exc: BaseException) -> int | None:
    """The line of tenant code where ``exc`` was raised (its innermost tenant frame)."""
    frames = TenantSource(FILENAME, ()).frames(exc)
    if frames:
        return frames[-1]["line"]
    return getattr(exc, "lineno", None) if isinstance(exc, SyntaxError) else None
