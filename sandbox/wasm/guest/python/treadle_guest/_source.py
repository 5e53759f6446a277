"""Tenant source in the guest: compile and execute it, find its workflow class, run it once.

The step API is ``treadle.runtime``'s, over :class:`~._runtime.HostRuntime`; what is here is
how the component loads tenant code and reports the outcome to the host.
"""

from __future__ import annotations

import builtins
import inspect
import json
import random
from collections.abc import Mapping
from typing import Any, TypedDict

from treadle.runtime import (
    Env,
    Event,
    Frame,
    Step,
    StepError,
    TenantSource,
    WorkflowEntrypoint,
    clipped_traceback,
    message_of,
)
from treadle.runtime._tracebacks import joined

from . import _host
from ._runtime import HostRuntime, HostSaga

FILENAME = "<workflow>"
MODULE_NAME = "workflow"


class Problem(TypedDict):
    line: int
    column: int
    message: str


class Failure(TypedDict, total=False):
    """What ``run()`` raised: the host names the instance's error after it, with the frames of
    tenant code it went through (``traceback``)."""

    kind: str
    name: str
    message: str
    traceback: list[Frame]


class Checked(TypedDict, total=False):
    class_name: str
    problems: list[Problem]


class Ran(TypedDict, total=False):
    output_json: str | None
    error: Failure


def check(source: str, class_name: str | None) -> Checked:
    """Compile and execute the module once; the entry class name, or the problems."""
    try:
        code = compile(source, FILENAME, "exec")
    except SyntaxError as exc:
        return {"problems": [_problem(exc.lineno, exc.offset, f"SyntaxError: {exc.msg}")]}
    except (ValueError, RecursionError, MemoryError) as exc:
        message = f"the source cannot be parsed: {type(exc).__name__}: {message_of(exc)}"
        return {"problems": [_problem(1, 1, message)]}
    namespace = _namespace()
    try:
        exec(code, namespace)
    except BaseException as exc:
        message = f"running the module failed: {type(exc).__name__}: {message_of(exc)}"
        return {"problems": [_problem(_tenant_line(exc), 1, message)]}
    try:
        cls = entry_class(namespace, class_name)
    except ValueError as exc:
        return {"problems": [_problem(1, 1, str(exc))]}
    if not _takes_event_and_step(cls):
        return {"problems": [_problem(1, 1, "run must be defined as run(self, event, step)")]}
    return {"class_name": cls.__name__}


def run(source: str, class_name: str | None, request: Mapping[str, Any]) -> Ran:
    """One replay of ``run()``: {"output_json"}, or {"error"} for what ``run()`` raised."""
    random.seed(request["instance_id"])
    tenant = TenantSource.of(source, FILENAME)
    runtime = HostRuntime(request, tenant)
    failure: Failure | None = None
    text = output = None
    try:
        namespace = _namespace()
        exec(compile(source, FILENAME, "exec"), namespace)
        workflow = entry_class(namespace, class_name)()
        workflow.env = Env(request.get("vars") or {}, runtime)
        output = workflow.run(Event(request), Step(runtime))
    except BaseException as exc:
        failure = _failure(exc, tenant)
    if failure is None:
        try:
            text = json.dumps(output, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError, RecursionError) as exc:
            message = f"the value run() returned is not JSON-serializable: {message_of(exc)}"
            failure = {"kind": "TypeError", "name": "TypeError", "message": message}
    saga = runtime.saga
    if isinstance(saga, HostSaga) and len(saga) and (failure or runtime.mode == "rollback"):
        saga.unwind_with_host(failure)
    if failure is not None:
        return {"error": failure}
    return {"output_json": text}


def entry_class(namespace: Mapping[str, object], class_name: str | None) -> type[Any]:
    """The workflow class to run; ValueError with the restricted sandbox's wording otherwise."""
    if class_name:
        found = namespace.get(class_name)
        if found is None:
            raise ValueError(f"class {class_name!r} not found")
        if not (isinstance(found, type) and issubclass(found, WorkflowEntrypoint)):
            message = f"class {class_name!r} does not derive from treadle.WorkflowEntrypoint"
            raise ValueError(message)
        return found
    candidates = _workflow_classes(namespace)
    if not candidates:
        raise ValueError(
            "no workflow class found: define a class deriving from treadle.WorkflowEntrypoint "
            "with a method run(self, event, step)"
        )
    if len(candidates) > 1:
        names = ", ".join(c.__name__ for c in candidates)
        raise ValueError(f"several workflow classes ({names}): set class_name to one")
    return candidates[0]


def _namespace() -> dict[str, object]:
    return {"__name__": MODULE_NAME, "__builtins__": {**builtins.__dict__, "print": _print}}


def _print(
    *objects: object, sep: Any = " ", end: Any = "\n", file: Any = None, flush: bool = False
) -> None:
    """``print`` of workflow code: one log line per call, as in the restricted sandbox."""
    if file is not None:
        builtins.print(*objects, sep=sep, end=end, file=file, flush=flush)
        return
    if not isinstance(sep, str) or not isinstance(end, str):
        raise TypeError("print: sep and end must be strings")
    _host.log(sep.join(str(o) for o in objects))


def _workflow_classes(namespace: Mapping[str, object]) -> list[type[Any]]:
    return [
        value
        for value in namespace.values()
        if isinstance(value, type)
        and issubclass(value, WorkflowEntrypoint)
        and value is not WorkflowEntrypoint
        and value.__module__ == MODULE_NAME
        and getattr(value, "run", None) is not WorkflowEntrypoint.run
    ]


def _takes_event_and_step(cls: type[Any]) -> bool:
    try:
        parameters = list(inspect.signature(cls.run).parameters.values())
    except (TypeError, ValueError):
        return True
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    variadic = any(p.kind == p.VAR_POSITIONAL for p in parameters)
    required = [p for p in positional if p.default is p.empty]
    return (len(positional) >= 3 or variadic) and len(required) <= 3


def _problem(line: int | None, column: int | None, message: str) -> Problem:
    return {"line": max(int(line or 1), 1), "column": max(int(column or 1), 1), "message": message}


def _tenant_line(exc: BaseException) -> int | None:
    frames = TenantSource(FILENAME, ()).frames(exc)
    return frames[-1]["line"] if frames else None


def _failure(exc: BaseException, tenant: TenantSource) -> Failure:
    frames = tenant.frames(exc)
    if isinstance(exc, StepError):
        # Where run() called the step, then where its body raised (the host's record).
        frames = joined(frames, clipped_traceback(exc.traceback))
        return {"kind": "StepError", "name": exc.name, "message": exc.message, "traceback": frames}
    kind = type(exc).__name__
    return {"kind": kind, "name": kind, "message": message_of(exc), "traceback": frames}
