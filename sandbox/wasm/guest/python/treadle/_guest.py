"""The step API inside the Python-in-Wasm guest, a thin client of the host's step runtime.

Every step operation is one host call with JSON arguments. The host keeps the journal and
applies the retry, timer and event rules (the same code as the restricted sandbox); step
bodies run here. A suspend never comes back: the host traps the guest, which cannot catch it.
"""

import builtins
import datetime
import inspect
import json
import random
import sys
from types import MappingProxyType

from treadle.runtime._entrypoint import WorkflowEntrypoint
from treadle.runtime.errors import InvalidDuration, NonRetryableError, StepError, WaitTimeout

_KNOWN = {
    "InvalidDuration": InvalidDuration,
    "NonRetryableError": NonRetryableError,
    "WaitTimeout": WaitTimeout,
}
_host_call = None
_host_log = None
_STOP_KIND = "treadle.stop"
# (name, count) of each completed step with a rollback handler -> the handler.
_rollbacks = {}


class _Stopped(BaseException):
    """A terminate-with-rollback replay reached a step without a final record: run() ends."""


def bind(call, log):
    """Connect the runtime to the host's imports (the component's ``host`` interface)."""
    global _host_call, _host_log
    _host_call, _host_log = call, log


def _call(op, **args):
    reply = json.loads(_host_call(op, json.dumps(args, separators=(",", ":"))))
    if "raise" in reply:
        raise _exception(reply["raise"])
    return reply.get("ok")


def _exception(info):
    kind, message = info.get("kind", "Exception"), info.get("message", "")
    if kind == "StepError":
        return StepError(message, name=info.get("name", "Error"))
    if kind == _STOP_KIND:
        return _Stopped(message)
    if info.get("final"):  # a platform error that retrying cannot help
        return type(kind, (NonRetryableError,), {})(message)
    known = _KNOWN.get(kind) or getattr(builtins, kind, None)
    if isinstance(known, type) and issubclass(known, Exception):
        return known(message)
    return type(kind, (Exception,), {})(message)


def _seconds(value):
    """A duration as JSON: timedeltas become seconds, the rest is checked by the host."""
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    return value


def _instant(value):
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return value


def _retries(config):
    if isinstance(config, dict) and isinstance(config.get("delay"), datetime.timedelta):
        return {**config, "delay": config["delay"].total_seconds()}
    return config


class Step:
    """The ``step`` argument of ``run(self, event, step)`` (DESIGN §2)."""

    __slots__ = ()

    def __repr__(self):
        return "<step>"

    def do(
        self, name, fn=None, *, retries=None, timeout=None, concurrent=False, depends=(),
        rollback=None, rollback_config=None,
    ):  # fmt: skip
        """Run ``fn`` once, durably; without ``fn``, a decorator that returns a step handle.

        ``concurrent`` is accepted as in the restricted sandbox: dependencies resolve one
        after the other. ``rollback`` undoes the completed step if the instance fails.
        """
        options = _Options(
            name, retries, timeout, _handles(depends), concurrent, rollback, rollback_config
        )
        if fn is None:
            return _Decorator(self, options)
        if not callable(fn):
            raise TypeError(f"step.do({name!r}, fn): fn must be callable")
        return self._run(options, fn)

    def sleep(self, name, duration):
        _call("sleep", name=name, duration=_seconds(duration))

    def sleep_until(self, name, when):
        _call("sleep-until", name=name, when=_instant(when))

    def wait_for_event(self, name, *, type, timeout="24 hours"):
        return _call("wait-for-event", name=name, type=type, timeout=_seconds(timeout))

    def _run(self, options, fn):
        arguments = {_function_name(h._fn): h() for h in options.depends}
        if _accepts_ctx(fn):
            invoke = lambda attempt: fn(**arguments, ctx=Context(attempt))  # noqa: E731
        else:
            invoke = lambda attempt: fn(**arguments)  # noqa: E731
        args = {
            "name": options.name,
            "retries": _retries(options.retries),
            "timeout": _seconds(options.timeout),
        }
        if options.rollback is not None:
            config = options.rollback_config or {}
            if isinstance(config, dict):
                config = {**config, "timeout": _seconds(config.get("timeout"))}
                config["retries"] = _retries(config.get("retries"))
                config = {k: v for k, v in config.items() if v is not None}
            args.update(rollback=True, rollback_config=config)
        began = _call("step-begin", **args)
        while "attempt" in began:
            began = _attempt(options.name, invoke, began["attempt"])
        if options.rollback is not None and "count" in began:
            _rollbacks[(options.name, began["count"])] = options.rollback
        return began["output"]


def _attempt(name, invoke, attempt):
    """Run one attempt of a body; the host answers with the output or the next attempt."""
    try:
        value = invoke(attempt)
    except BaseException as exc:  # a body may raise anything; the host applies the retries
        final = isinstance(exc, NonRetryableError)
        return _call("step-fail", kind=type(exc).__name__, message=_message(exc), final=final)
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        message = f"the result of step {name!r} is not JSON-serializable: {_message(exc)}"
        return _call("step-fail", kind="TypeError", message=message, final=True)
    return _call("step-end", output=text)


class _Options:
    __slots__ = ("depends", "name", "retries", "rollback", "rollback_config", "timeout")

    def __init__(self, name, retries, timeout, depends, concurrent, rollback, rollback_config):
        if not isinstance(concurrent, bool):
            raise TypeError("step.do: concurrent must be True or False")
        if rollback is not None and not callable(rollback):
            raise TypeError("step.do: rollback must be callable")
        if rollback is None and rollback_config is not None:
            raise TypeError("step.do: rollback_config needs a rollback handler")
        self.name = name
        self.retries = retries
        self.timeout = timeout
        self.depends = depends
        self.rollback = rollback
        self.rollback_config = rollback_config


class _Decorator:
    __slots__ = ("_options", "_step")

    def __init__(self, step, options):
        self._step = step
        self._options = options

    def __repr__(self):
        return f"<step.do decorator {self._options.name!r}>"

    def __call__(self, fn):
        if not callable(fn):
            raise TypeError(f"@step.do({self._options.name!r}) must decorate a function")
        return StepHandle(self._step, self._options, fn)


class StepHandle:
    """A decorated step: calling it runs (or replays) the step once and remembers the result."""

    __slots__ = ("_error", "_fn", "_options", "_settled", "_step", "_value")

    def __init__(self, step, options, fn):
        self._step = step
        self._options = options
        self._fn = fn
        self._settled = False
        self._value = None
        self._error = None

    def __repr__(self):
        return f"<step handle {self._options.name!r}>"

    def __call__(self):
        if not self._settled:
            try:
                self._value = self._step._run(self._options, self._fn)
            except StepError as exc:
                self._error = exc
            self._settled = True
        if self._error is not None:
            raise self._error
        return self._value


class Context:
    """``ctx``: handed to a step function that has a parameter named ``ctx``."""

    __slots__ = ("attempt", "config", "idempotency_key", "step")

    def __init__(self, attempt):
        self.attempt = attempt["number"]
        self.step = StepInfo(attempt["name"], attempt["count"])
        self.config = attempt["config"]
        self.idempotency_key = attempt["idempotency_key"]

    def __repr__(self):
        return f"<ctx of step {self.step.name!r} attempt {self.attempt}>"


class RollbackContext(Context):
    """The ``ctx`` of a rollback handler: the step it undoes, that step's recorded ``output``,
    and the ``error`` (``{"name", "message"}``) the instance fails with."""

    __slots__ = ("error", "output")

    def __init__(self, attempt, step, error, output):
        super().__init__(attempt)
        self.step = StepInfo(*step)
        self.error = dict(error)
        self.output = output

    def __repr__(self):
        return f"<ctx of the rollback of step {self.step.name!r} attempt {self.attempt}>"


def _unwind(error):
    """run() failed (or the replay terminates with rollback): run the rollback handlers of
    the completed steps, latest first, each durably; stop at the first that fails for good."""
    plan = _call("unwind", error=error)
    failure = plan["error"]
    for entry in plan["steps"]:
        key = (entry["name"], entry["count"])
        invoke = _rollback_invoker(_rollbacks[key], key, failure, entry["output"])
        name = "rollback:" + entry["name"]
        try:
            began = _call("rollback-begin", name=entry["name"], count=entry["count"])
            while "attempt" in began:
                began = _attempt(name, invoke, began["attempt"])
        except StepError:  # failed for good: the host reports it
            return


def _rollback_invoker(handler, key, failure, output):
    if _accepts_arguments(handler):
        return lambda attempt: handler(RollbackContext(attempt, key, failure, output))
    return lambda attempt: handler()


class StepInfo:
    __slots__ = ("count", "name")

    def __init__(self, name, count):
        self.name = name
        self.count = count

    def __repr__(self):
        return f"<step {self.name!r} #{self.count}>"


class Event:
    """The ``event`` argument of ``run()``: the instance's params and identity."""

    __slots__ = ("instance_id", "payload", "timestamp", "workflow")

    def __init__(self, request):
        self.payload = request["params"]
        self.instance_id = request["instance_id"]
        self.workflow = request["workflow"]
        self.timestamp = request["timestamp"]

    def __repr__(self):
        return f"<event of instance {self.instance_id!r}>"


class Env:
    """``self.env``: the tenant's bindings. ``vars`` is read-only."""

    __slots__ = ("vars", "workflows")

    def __init__(self, vars):
        self.vars = MappingProxyType(dict(vars))
        self.workflows = Workflows()

    def __repr__(self):
        return "<env>"

    def fetch(self, url, method="GET", headers=None, body=None):
        """An HTTP request through the platform, under the tenant's egress policy; only inside
        a step body, so that its result is recorded."""
        result = _call("fetch", url=url, method=method, headers=headers, body=body)
        return Response(result["status"], result["headers"], result["text"])


class Response:
    """What ``env.fetch`` returns: ``status``, ``headers``, ``text`` and ``json()``."""

    __slots__ = ("headers", "status", "text")

    def __init__(self, status, headers, text):
        self.status = status
        self.headers = dict(headers)
        self.text = text

    def __repr__(self):
        return f"<response {self.status}>"

    def json(self):
        return json.loads(self.text)


class Workflows:
    """``env.workflows``: start instances of the same tenant's workflows (host calls; the
    host runs the ``workflows.create:<name>`` step, as in the restricted sandbox)."""

    __slots__ = ()

    def __repr__(self):
        return "<env.workflows>"

    def create(self, name, params=None, id=None):
        """Start an instance of workflow ``name`` once, whatever the replays; its handle."""
        try:
            json.dumps(params, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError, RecursionError) as exc:
            what = "the params of workflows.create"
            raise TypeError(f"{what} is not JSON-serializable: {_message(exc)}") from None
        created = _call("workflows-create", name=name, params=params, id=id)
        return ChildInstance(created["id"])


class ChildInstance:
    """A child instance started by ``env.workflows.create``: its ``id`` and ``result()``."""

    __slots__ = ("_outcome", "id")

    def __init__(self, id):
        self._outcome = None
        self.id = id

    def __repr__(self):
        return f"<child instance {self.id!r}>"

    def result(self, name=None, timeout="24 hours"):
        """Wait for the child to end: its output, or ``StepError`` if it did not complete."""
        if self._outcome is None:
            try:
                value = _call("workflows-result", id=self.id, name=name, timeout=_seconds(timeout))
                self._outcome = (value, None)
            except StepError as exc:
                self._outcome = (None, exc)
        value, error = self._outcome
        if error is not None:
            raise error
        return value


def _handles(depends):
    handles = tuple(depends)
    for handle in handles:
        if not isinstance(handle, StepHandle):
            raise TypeError(
                "step.do: depends must list step handles (functions decorated with @step.do)"
            )
    return handles


def _accepts_ctx(fn):
    try:
        return "ctx" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _accepts_arguments(fn):
    """Whether ``fn`` takes any parameter (a rollback handler's ``ctx``, whatever its name)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind != p.VAR_POSITIONAL for p in parameters)


def _function_name(fn):
    return str(getattr(fn, "__name__", "value"))


def _message(exc):
    try:
        return str(exc)
    except Exception:
        return "<exception message could not be rendered>"


def _print(*objects, sep=" ", end="\n", file=None, flush=False):
    """``print`` of workflow code: one log line per call, as in the restricted sandbox."""
    if file is not None:
        builtins.print(*objects, sep=sep, end=end, file=file, flush=flush)
        return
    if not isinstance(sep, str) or not isinstance(end, str):
        raise TypeError("print: sep and end must be strings")
    _host_log(sep.join(str(o) for o in objects))


# -- the module, its entry class, and one run -------------------------------------------------

FILENAME = "<workflow>"


def _namespace():
    return {
        "__name__": "workflow",
        "__builtins__": {**builtins.__dict__, "print": _print},
    }


def _workflow_classes(namespace):
    return [
        value
        for name, value in namespace.items()
        if isinstance(value, type)
        and issubclass(value, WorkflowEntrypoint)
        and value is not WorkflowEntrypoint
        and value.__module__ == "workflow"
        and getattr(value, "run", None) is not WorkflowEntrypoint.run
    ]


def entry_class(namespace, class_name):
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


def _takes_event_and_step(cls):
    try:
        parameters = list(inspect.signature(cls.run).parameters.values())
    except (TypeError, ValueError):
        return True
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    variadic = any(p.kind == p.VAR_POSITIONAL for p in parameters)
    required = [p for p in positional if p.default is p.empty]
    return (len(positional) >= 3 or variadic) and len(required) <= 3


def _problem(line, column, message):
    return {"line": max(int(line or 1), 1), "column": max(int(column or 1), 1), "message": message}


def _tenant_line(exc):
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def check(source, class_name):
    """Compile and execute the module once; the entry class name, or the problems."""
    try:
        code = compile(source, FILENAME, "exec")
    except SyntaxError as exc:
        return {"problems": [_problem(exc.lineno, exc.offset, f"SyntaxError: {exc.msg}")]}
    except (ValueError, RecursionError, MemoryError) as exc:
        message = f"the source cannot be parsed: {type(exc).__name__}: {_message(exc)}"
        return {"problems": [_problem(1, 1, message)]}
    namespace = _namespace()
    try:
        exec(code, namespace)
    except BaseException as exc:
        message = f"running the module failed: {type(exc).__name__}: {_message(exc)}"
        return {"problems": [_problem(_tenant_line(exc), 1, message)]}
    try:
        cls = entry_class(namespace, class_name)
    except ValueError as exc:
        return {"problems": [_problem(1, 1, str(exc))]}
    if not _takes_event_and_step(cls):
        return {"problems": [_problem(1, 1, "run must be defined as run(self, event, step)")]}
    return {"class_name": cls.__name__}


def run(source, class_name, request):
    """One replay of ``run()``: {"output"}, or {"error"} for what ``run()`` raised."""
    random.seed(request["instance_id"])
    _rollbacks.clear()
    failure = text = None
    try:
        namespace = _namespace()
        exec(compile(source, FILENAME, "exec"), namespace)
        workflow = entry_class(namespace, class_name)()
        workflow.env = Env(request.get("vars") or {})
        output = workflow.run(Event(request), Step())
    except BaseException as exc:
        failure = _error(exc)
    if failure is None:
        try:
            text = json.dumps(output, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError, RecursionError) as exc:
            message = f"the value run() returned is not JSON-serializable: {_message(exc)}"
            failure = {"kind": "TypeError", "name": "TypeError", "message": message}
    if _rollbacks and (failure is not None or request.get("mode") == "rollback"):
        _unwind(failure)
    if failure is not None:
        return {"error": failure}
    return {"output_json": text}


def _error(exc):
    if isinstance(exc, StepError):
        return {"kind": "StepError", "name": exc.name, "message": exc.message}
    kind = type(exc).__name__
    return {"kind": kind, "name": kind, "message": _message(exc)}


sys.setrecursionlimit(1000)
