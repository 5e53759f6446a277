"""The ``wasm`` sandbox for Python source: CPython compiled to a Wasm component.

One component (built by :mod:`sandbox.wasm._build`) serves every tenant; the tenant's source
is data that the guest compiles and executes on every replay, in a fresh Store. The guest runs
the SDK's step API (``treadle.runtime``) over a runtime whose replay operations call the host
through one JSON import, and the host answers with the same
:class:`~treadle.runtime._journal.Replay` as every other backend.

The guest sees WASI without preopened directories, environment, arguments or network, and a
clock and random source of our own: the wall clock reads the instance's creation time, the
monotonic clock advances a microsecond per read, and random bytes derive from the instance id,
so every replay of an instance computes the same values outside its step bodies.
"""

from __future__ import annotations

import atexit
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from sandbox._compile import problem
from sandbox._threads import run_all
from sandbox._types import Limits
from sandbox._untrusted import problems as checked_problems
from sandbox._wire import ProtocolError
from sandbox.wasm import _build as _wasm_build
from sandbox.wasm import _engine as _wasm_engine
from sandbox.wasm._guest import GuestRun, MeteredChannel, NullChannel, Stop, check_request
from treadle.runtime import (
    CHILD_EVENT_PREFIX,
    FETCH_OUTSIDE_A_BODY,
    ROLLBACK_PREFIX,
    Abort,
    Channel,
    CodeInvalid,
    Entry,
    ErrorValue,
    Frame,
    HostError,
    JSONObject,
    JSONValue,
    NonRetryableError,
    Replay,
    RollbackOutcome,
    Saga,
    StepCall,
    StepError,
    Suspend,
    check_args,
    check_instance_id,
    clipped_traceback,
    error,
    fetch_args,
    message_of,
    resolve_rollback_config,
)
from treadle.runtime._calls import link_args
from treadle.runtime._messages import Outcome, Progress

KIND = "python"  # its engine configuration (see _wasm_engine.KINDS)

if TYPE_CHECKING:
    import wasmtime
    from wasmtime import component

HOST_INTERFACE = "treadle:guest/host@0.1.0"
_MAX_REPLY = 64 << 20
_INSTANCES = 64  # a component is a handful of core instances, memories and tables
_TABLES = 64
_MEMORIES = 16
_TABLE_ELEMENTS = 200_000

_component: component.Component | None = None
_linker: component.Linker | None = None
_preload_error: str | None = None
_current: PythonRun | None = None
# The guest's host operations -> the PythonRun methods that serve them.
_OPERATIONS = {
    "step-begin": "_step_begin",
    "step-end": "_step_end",
    "step-fail": "_step_fail",
    "sleep": "_sleep",
    "sleep-until": "_sleep_until",
    "wait-for-event": "_wait_for_event",
    "fetch": "_fetch",
    "workflows-create": "_workflows_create",
    "links-create": "_links_create",
    "check-call": "_check_call",
    "rollback-register": "_rollback_register",
    "unwind": "_unwind",
    "rollback-begin": "_rollback_begin",
}
# The kinds of step call the guest's step API checks (``check-call``), as the replay names them.
_CALL_KINDS = frozenset({"do", "env.workflows.create", "approval_link"})
# Raised in the guest when a terminate-with-rollback replay reaches a step without a final
# record: run() ends there and the guest runs the rollback handlers.
STOP_KIND = "treadle.stop"


def preload() -> None:
    """In a new worker, before it drops privileges: load the compiled runtime and link it."""
    global _component, _linker, _preload_error
    try:
        from wasmtime.component import Component

        _wasm_engine.limit_malloc_arenas()
        _wasm_engine.install_fast_bytes()
        engine = _wasm_engine.engine(KIND)
        path = _wasm_build.runtime_path()
        if not path.exists():
            raise _wasm_build.BuildError(f"it is not built yet ({path} is missing)")
        _component = Component.deserialize_file(engine, str(path))
        _linker = _link(engine, _component)
        atexit.register(_unload)  # before interpreter teardown leaves wasmtime's FFI half gone
    except Exception as exc:  # the worker still starts, and says why it cannot run Python
        _preload_error = f"{type(exc).__name__}: {str(exc)[:300]}"


def _unload() -> None:
    global _component, _linker
    _component = _linker = None


def _link(engine: wasmtime.Engine, runtime: component.Component) -> component.Linker:
    from wasmtime.component import Linker

    versions = {name.partition("@")[0]: name for name in runtime.type.imports(engine)}
    linker = Linker(engine)
    linker.add_wasip2()
    linker.allow_shadowing = True
    shadows: dict[str, dict[str, Callable[..., Any]]] = {
        HOST_INTERFACE: {"call": _host("host_call"), "log": _host("host_log")},
        "wasi:clocks/wall-clock": {"now": _host("wall_clock"), "resolution": _microsecond},
        "wasi:clocks/monotonic-clock": {
            "now": _host("monotonic"),
            "resolution": lambda store: 1000,
            "subscribe-duration": _host("blocking_wait"),
            "subscribe-instant": _host("blocking_wait"),
        },
        "wasi:random/random": {
            "get-random-bytes": _host("random_bytes"),
            "get-random-u64": _host("random_u64"),
        },
    }
    with linker.root() as root:
        for interface, functions in shadows.items():
            with root.add_instance(versions.get(interface, interface)) as instance:
                for name, function in functions.items():
                    instance.add_func(name, function)
    return linker


def _host(name: str) -> Callable[..., Any]:
    def call(store: Any, *args: Any) -> Any:
        run = _current
        if run is None:
            raise Stop()
        method: Callable[..., Any] = getattr(run, name)
        return method(*args)

    return call


def _microsecond(store: Any) -> Any:
    return _datetime(0, 1000)


def _datetime(seconds: int, nanoseconds: int) -> Any:
    from wasmtime.component import Record

    value = Record()
    value.seconds = seconds  # type: ignore[attr-defined]
    value.nanoseconds = nanoseconds  # type: ignore[attr-defined]
    return value


class WasmPythonBackend:
    name = "wasm"

    def compile(self, source: str, class_name: str | None) -> WasmPythonProgram:
        if _preload_error is not None or _component is None:
            reason = _preload_error or "this worker did not load it"
            raise _unavailable(f"the Python-in-Wasm runtime is not available: {reason}")
        if not isinstance(source, str):
            raise CodeInvalid("the source must be text", problems=[problem(1, 1, "not text")])
        room = _wasm_engine.room_problem()
        if room is not None:
            raise _unavailable(room)
        return WasmPythonProgram(source, class_name)

    @staticmethod
    def preload() -> None:
        preload()


def _unavailable(reason: str) -> CodeInvalid:
    # Short: the worker reports "<message>: line 1: <problem>" as the instance's error.
    return CodeInvalid("the wasm sandbox cannot run it", problems=[problem(1, 1, reason[:500])])


class WasmPythonProgram:
    def __init__(self, source: str, class_name: str | None) -> None:
        self._source = source
        self.class_name = class_name or ""

    def check(self) -> None:
        """Compile and execute the module once in the guest, and find its entry class."""
        request = check_request()
        limits = Limits()
        run = PythonRun(Replay(request, limits, NullChannel(), parallel=run_all), limits, request)
        reply = run.invoke("check", self._source, self.class_name)
        if not isinstance(reply, dict):
            message = f"the code could not be checked in the sandbox: {reply}"
            raise CodeInvalid(message, problems=[problem(1, 1, message[:1000])])
        if "problems" in reply:
            try:
                found = checked_problems(reply["problems"])
            except ProtocolError:
                found = [problem(1, 1, "the guest reported malformed problems")]
            noun = "problem" if len(found) == 1 else "problems"
            raise CodeInvalid(f"the workflow code has {len(found)} {noun}", problems=found)
        self.class_name = str(reply.get("class_name") or "")

    def replay(
        self, request: Mapping[str, Any], limits: Limits, channel: Channel
    ) -> tuple[Outcome, bool]:
        metered = MeteredChannel(channel)
        replay = Replay(request, limits, metered, parallel=run_all)
        run = PythonRun(replay, limits, request)
        metered.meter = run.meter
        guest_request: GuestRequest = {
            "instance_id": request["instance_id"],
            "workflow": request["workflow"],
            "created_at": float(request["created_at"]),
            "params": request["params"],
            "vars": request.get("vars") or {},
            "mode": replay.mode,
            "limits": {
                "memory_mb": limits.memory_mb,
                "max_step_result_bytes": limits.max_step_result_bytes,
                "max_steps_per_instance": limits.max_steps_per_instance,
            },
        }
        reply = run.invoke("run", self._source, self.class_name, json.dumps(guest_request))
        return run.outcome(reply), replay.out_of_memory


class GuestLimits(TypedDict):
    memory_mb: int
    max_step_result_bytes: int
    max_steps_per_instance: int


class GuestRequest(TypedDict):
    """What the guest's ``run`` export is given: the replay's identity, input and limits."""

    instance_id: str
    workflow: str
    created_at: float
    params: JSONValue
    vars: JSONObject
    mode: str
    limits: GuestLimits


class PlannedRollback(TypedDict):
    name: str
    count: int
    output: JSONValue


class RollbackPlan(TypedDict):
    """The rollback handlers the guest runs, in order, and the failure they undo."""

    error: ErrorValue
    steps: list[PlannedRollback]


class PythonRun(GuestRun):
    """One execution of the component: its Store, and the host side of the guest's imports."""

    def __init__(self, replay: Replay, limits: Limits, request: Mapping[str, Any]) -> None:
        import wasmtime

        store = wasmtime.Store(_wasm_engine.engine(KIND))
        store.set_limits(
            memory_size=_wasm_engine.guest_memory_bytes(limits),
            table_elements=_TABLE_ELEMENTS,
            instances=_INSTANCES,
            tables=_TABLES,
            memories=_MEMORIES,
        )
        store.set_wasi(wasmtime.WasiConfig())  # no preopens, no environment, no stdio
        super().__init__(replay, limits, store)
        self._created_at = float(request["created_at"])
        self._seed = hashlib.sha256(f"treadle:{request['instance_id']}".encode()).digest()
        self._draws = 0
        self._ticks = 0
        self._unwinding = False

    def invoke(self, export: str, *args: str) -> Any:
        """Instantiate the runtime in this run's Store and call ``export``; its JSON reply,
        or the exception that stopped the guest."""
        global _current
        assert _component is not None and _linker is not None and self.store is not None
        _current = self
        try:
            with _wasm_engine.guest_running(KIND):
                self.meter.arm()
                instance = _linker.instantiate(self.store, _component)
                function = instance.get_func(self.store, export)
                if function is None:
                    raise Stop()
                text = function(self.store, *args)
        except Exception as exc:
            return exc
        finally:
            _current = None
            self.close()
        if not isinstance(text, str) or len(text) > _MAX_REPLY:
            return Stop()
        try:
            return json.loads(text)
        except ValueError:
            return Stop()

    def outcome(self, reply: Any) -> Outcome:
        if isinstance(reply, BaseException):
            return self.stopped(reply)
        if not isinstance(reply, dict):
            return self.stopped(Stop())
        if "error" in reply:
            return self._raised(reply["error"])
        try:
            output = json.loads(str(reply.get("output_json")))
        except ValueError:
            return self.stopped(Stop())
        return self.returned(output)

    def _raised(self, info: Any) -> Outcome:
        """``run()`` raised: the instance fails, as with an uncaught error in restricted code."""
        failure = self._run_failure(info)
        return self.failed(failure["name"], failure["message"], failure.get("traceback", []))

    def _run_failure(self, info: Any) -> ErrorValue:
        info = info if isinstance(info, dict) else {}
        kind = str(info.get("kind") or "Error")
        message = str(info.get("message") or "")
        frames = clipped_traceback(info.get("traceback"))
        if kind == "StepError":
            return error(str(info.get("name") or "Error"), message, frames)
        return self._error_of(kind, message, frames)

    def _error_of(self, kind: str, message: str, frames: list[Frame]) -> ErrorValue:
        """The error of what the guest raised; its frames were clipped to their bounds (the
        guest may send anything)."""
        if kind == "MemoryError":
            return error("MemoryError", f"out of memory (memory_mb={self.limits.memory_mb})")
        return error(kind, message, frames)

    # -- the guest's imports --------------------------------------------------------------------

    def host_call(self, op: str, text: str) -> str:
        operation = _OPERATIONS.get(op)
        try:
            if operation is None:
                raise NonRetryableError(f"unknown host operation {op!r}")
            value = getattr(self, operation)(_arguments(op, text))
        except Stop:
            raise
        except (Suspend, Abort):  # the replay holds why
            replay = self.replay
            if replay.stopped and replay.suspended is None and replay.failure is None:
                if not self._unwinding:  # terminate with rollback: run() ends here
                    return json.dumps({"raise": {"kind": STOP_KIND, "message": "stopped"}})
            raise Stop() from None
        except BaseException as exc:  # raised into the guest, as in restricted code
            return json.dumps({"raise": _raise_info(exc)})
        return json.dumps({"ok": value}, separators=(",", ":"))

    def host_log(self, message: str) -> None:
        self.replay.log(str(message))

    def _sleep(self, args: JSONObject) -> None:
        self.replay.sleep(args.get("name"), args.get("duration"))

    def _sleep_until(self, args: JSONObject) -> None:
        self.replay.sleep_until(args.get("name"), args.get("when"))

    def _wait_for_event(self, args: JSONObject) -> JSONObject:
        name, event_type, timeout = args.get("name"), args.get("type"), args.get("timeout")
        internal = args.get("internal") is True
        if internal:  # a child's outcome (``ChildInstance.result``), and nothing else
            if not isinstance(event_type, str) or not event_type.startswith(CHILD_EVENT_PREFIX):
                raise ValueError("an internal event type must be the outcome of a child")
            check_instance_id(event_type[len(CHILD_EVENT_PREFIX) :])
        return self.replay.wait_for_event(name, event_type, timeout, internal=internal)

    def _fetch(self, args: JSONObject) -> Any:
        if self.replay.current_step is None:
            raise NonRetryableError(FETCH_OUTSIDE_A_BODY)
        request = fetch_args(
            args.get("url"), args.get("method"), args.get("headers"), args.get("body")
        )
        return self.replay.call("fetch", request)

    def _workflows_create(self, args: JSONObject) -> Any:
        """The host call of a ``workflows.create:<workflow>`` step's body, and only of one."""
        call = self.call
        if call is None or call.key[0] != f"workflows.create:{args.get('workflow')}":
            raise NonRetryableError(
                "workflows.create is only allowed in the body of its own step (env.workflows)"
            )
        limit = self.replay.limits.max_step_result_bytes
        return self.replay.call("workflows.create", check_args("workflows.create", args, limit))

    def _links_create(self, args: JSONObject) -> Any:
        """The host call of a ``step.approval_link`` step's body: keyed by the step that runs
        it here, whatever key the guest says."""
        call = self.call
        if call is None:
            raise NonRetryableError("approval_link is only allowed in the body of its own step")
        name, count = call.key
        checked = link_args(f"{name}#{count}", args.get("type"), args.get("ttl"), args.get("uses"))
        return self.replay.call("links.create", checked)

    def _check_call(self, args: JSONObject) -> None:
        kind = args.get("kind")
        if kind not in _CALL_KINDS:
            raise NonRetryableError(f"unknown kind of step call {kind!r}")
        self.replay.check_call(args.get("name"), str(kind))

    def _step_begin(self, args: JSONObject) -> Progress:
        if self._unwinding and self.replay.current_step is None:
            raise NonRetryableError("steps cannot run after run() has ended")
        call = self.replay.open_step(args.get("name"), args.get("retries"), args.get("timeout"))
        return self._next(call)

    # Rollback handlers run in the guest, after run() ended; the host keeps the same Saga as
    # for restricted code (which handlers, in which order) and records them the same way.

    def _rollback_register(self, args: JSONObject) -> None:
        """Step ``(name, count)`` completed in the guest with a rollback handler."""
        key = (args.get("name"), args.get("count"))
        record = self.replay.record(key)  # type: ignore[arg-type]  # a miss if forged
        saga = GuestSaga.of(self.replay)
        if self._unwinding or record is None or record["type"] != "do":
            raise NonRetryableError(f"step {key!r} is not a step of this replay")
        if record["status"] != "complete" or saga.has(key):
            raise NonRetryableError(f"step {key!r} cannot take a rollback handler now")
        config = resolve_rollback_config(args.get("config"))
        saga.saga.register((record["name"], record["count"]), _in_the_guest, config)

    def _unwind(self, args: JSONObject) -> RollbackPlan:
        """run() failed (or the replay terminates with rollback): the handlers to run, in
        order, and the failure they undo."""
        saga = self.replay.saga
        if self._unwinding or self.call is not None or not isinstance(saga, GuestSaga):
            raise NonRetryableError("there are no rollback handlers to run now")
        self._unwinding = True
        if self.replay.mode == "rollback":
            failure = error("Terminated", "terminated with rollback")
        else:
            failure = self._run_failure(args.get("error"))
        steps: list[PlannedRollback] = [
            {"name": entry.key[0], "count": entry.key[1], "output": saga.saga.output_of(entry)}
            for entry in saga.saga.ordered()
        ]
        return {"error": failure, "steps": steps}

    def _rollback_begin(self, args: JSONObject) -> Progress:
        saga = self.replay.saga
        if not self._unwinding or self.call is not None or not isinstance(saga, GuestSaga):
            raise NonRetryableError("no rollback is being run")
        entry = saga.entry((args.get("name"), args.get("count")))
        return self._next(saga.saga.open(entry))

    def _step_end(self, args: JSONObject) -> Progress:
        call = self._body()
        self.replay.attempt_returned(call, json.loads(str(args.get("output"))))
        return self._next(call)

    def _step_fail(self, args: JSONObject) -> Progress:
        call = self._body()
        frames = clipped_traceback(args.get("traceback"))
        failure = self._error_of(str(args.get("kind") or "Error"), str(args.get("message")), frames)
        self.replay.attempt_failed(call, failure, final=args.get("final") is True)
        return self._next(call)

    def _body(self) -> StepCall:
        call, self.call = self.call, None
        if call is None:
            raise NonRetryableError("no step body is running")
        return call

    def _next(self, call: StepCall) -> Progress:
        attempt = self.replay.next_attempt(call)
        if attempt is None:
            return {"output": call.output, "count": call.key[1]}
        self.call = call
        return {
            "attempt": {
                "number": attempt.number,
                "name": attempt.name,
                "count": attempt.count,
                "config": {
                    "retries": attempt.config["retries"].copy(),
                    "timeout": attempt.config["timeout"],
                },
                "idempotency_key": attempt.idempotency_key,
            }
        }

    # Clock and random, the same on every replay of the instance.

    def wall_clock(self) -> Any:
        seconds = int(self._created_at)
        return _datetime(seconds, int((self._created_at - seconds) * 1e9))

    def monotonic(self) -> int:
        self._ticks += 1
        return self._ticks * 1000

    def random_bytes(self, count: int) -> bytes:
        count = min(int(count), 1 << 20)
        out = bytearray()
        while len(out) < count:
            self._draws += 1
            out += hashlib.sha256(self._seed + self._draws.to_bytes(8, "little")).digest()
        return bytes(out[:count])

    def random_u64(self) -> int:
        return int.from_bytes(self.random_bytes(8), "little")

    def blocking_wait(self, *args: Any) -> Any:
        self.reason = error(
            "WasmTrap",
            "workflow code cannot block (time.sleep, select): use step.sleep or "
            "step.wait_for_event",
        )
        raise Stop()


class RaiseInfo(TypedDict):
    """The exception the guest raises for a host operation (``{"raise": ...}``)."""

    kind: str
    name: str
    message: str
    final: NotRequired[bool]
    traceback: NotRequired[list[Frame]]


class GuestSaga:
    """The replay's rollback handlers when they live in the guest: the guest runs them (host
    calls ``unwind``, then ``rollback-begin`` and the attempts of each), and this tells the
    replay how they ended, from their records, as :class:`~treadle.runtime._saga.Saga` would."""

    def __init__(self, replay: Replay) -> None:
        self.saga = Saga(replay)
        self._replay = replay

    @classmethod
    def of(cls, replay: Replay) -> GuestSaga:
        if not isinstance(replay.saga, GuestSaga):
            replay.saga = cls(replay)
        return replay.saga

    def entry(self, key: tuple[object, object]) -> Entry:
        for entry in self.saga.ordered():
            if entry.key == key:
                return entry
        raise NonRetryableError(f"no rollback handler is registered for step {key!r}")

    def has(self, key: tuple[object, object]) -> bool:
        return any(entry.key == key for entry in self.saga.ordered())

    def unwind(self, failure: ErrorValue) -> RollbackOutcome | None:
        entries = self.saga.ordered()
        if not entries:
            return None
        for entry in entries:
            name, count = entry.key
            record = self._replay.record((ROLLBACK_PREFIX + name, count))
            status = record["status"] if record is not None else None
            if record is not None and record["error"] is not None and status == "errored":
                return {"outcome": "failed", "error": record["error"].copy()}
            if status != "complete":
                if self._replay.suspended is not None:  # a retry that is not due yet
                    raise Suspend()
                message = "the guest stopped before every rollback handler had run"
                return {"outcome": "failed", "error": error("WasmTrap", message)}
        return {"outcome": "complete", "error": None}


def _in_the_guest() -> None:
    """The host's stand-in for a rollback handler: the guest runs the real one."""
    raise NonRetryableError("rollback handlers of a Wasm guest run in the guest")


def _arguments(op: str, text: str) -> JSONObject:
    """A host operation's arguments: the guest's runtime sends a JSON object, but tenant code
    can call the import itself with anything."""
    try:
        args = json.loads(text)
    except ValueError:
        args = None
    if not isinstance(args, dict):
        raise NonRetryableError(f"host operation {op!r}: the arguments must be a JSON object")
    return args


def _raise_info(exc: BaseException) -> RaiseInfo:
    if isinstance(exc, StepError):  # a step failed for good: its body's frames go with it
        return {
            "kind": "StepError",
            "name": exc.name,
            "message": exc.message,
            "traceback": exc.traceback,
        }
    if isinstance(exc, HostError):  # the platform's name for it; final when retrying is futile
        final = isinstance(exc, NonRetryableError)
        return {"kind": exc.name, "name": exc.name, "message": exc.message, "final": final}
    kind = type(exc).__name__
    return {"kind": kind, "name": kind, "message": message_of(exc)}
