"""The ``wasm`` sandbox for core modules: any language, through the ABI in docs/wasm.md.

The artifact's source is the module, base64-encoded. A module is compiled once per worker (or
loaded from the compile cache) and linked against the ABI's host functions, which drive the
same :class:`~treadle.runtime._journal.Replay` as the restricted backend: records, retries, timers,
events and suspends are identical across backends. Each replay gets a fresh Store, so nothing
of a previous replay (or of a half-finished body that trapped) survives into the next.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from sandbox._compile import problem
from sandbox._threads import run_all
from sandbox._types import Limits
from sandbox.wasm import _abi as _wasm_abi
from sandbox.wasm import _engine as _wasm_engine
from sandbox.wasm._guest import GuestRun, MeteredChannel, NullChannel, Stop, check_request
from treadle.runtime import (
    Channel,
    CodeInvalid,
    ErrorValue,
    JSONObject,
    Replay,
    StepCall,
    error,
    iso,
)
from treadle.runtime._messages import Outcome

KIND = "module"  # its engine configuration (see _wasm_engine.KINDS)

if TYPE_CHECKING:
    import wasmtime

CLASS_NAME = "run"  # what validation reports as the entry point: a module has no class
_MAX_NAME_BYTES = 1024
_MAX_LOG_BYTES = 64 * 1024
_TABLE_ELEMENTS = 100_000
_U32 = 0xFFFFFFFF

_preload_error: str | None = None
_cache_fd: int | None = None


def preload() -> None:
    """In a new worker, before it drops privileges: load wasmtime, open the compile cache."""
    global _preload_error, _cache_fd
    try:
        _wasm_engine.limit_malloc_arenas()
        _wasm_engine.engine(KIND)
        directory = _wasm_engine.wasm_cache_dir(KIND) / "modules"
        if directory.is_dir():
            # Workers run as nobody: reach the cache through this descriptor, not its path.
            _cache_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except Exception as exc:  # the worker still starts, and says why it cannot run modules
        _preload_error = f"{type(exc).__name__}: {str(exc)[:300]}"


class WasmModuleBackend:
    name = "wasm-module"

    def compile(self, source: str, class_name: str | None) -> WasmModuleProgram:
        if _preload_error is not None:
            raise _unavailable(f"the wasm runtime could not be loaded: {_preload_error}")
        room = _wasm_engine.room_problem()
        if room is not None:
            raise _unavailable(room)
        try:
            wasm = _wasm_abi.decode(source)
        except ValueError as exc:
            raise _invalid(str(exc)) from None
        module = _load(wasm)
        found = _wasm_abi.problems(module)
        if found:
            noun = "problem" if len(found) == 1 else "problems"
            raise CodeInvalid(f"the wasm module has {len(found)} ABI {noun}", problems=found)
        return WasmModuleProgram(module)

    @staticmethod
    def preload() -> None:
        preload()


def _invalid(message: str) -> CodeInvalid:
    message = message[:500]  # the worker reports "<message>: line 1: <problem>"
    return CodeInvalid(message, problems=[problem(1, 1, message)])


def _unavailable(reason: str) -> CodeInvalid:
    return CodeInvalid("the wasm sandbox cannot run it", problems=[problem(1, 1, reason[:500])])


def _load(wasm: bytes) -> wasmtime.Module:
    """The compiled module: from the compile cache when it is there, else compiled here."""
    import wasmtime

    engine = _wasm_engine.engine(KIND)
    key = _wasm_engine.module_key(wasm)
    if _cache_fd is not None:
        try:
            return wasmtime.Module.deserialize_file(
                engine, f"/proc/self/fd/{_cache_fd}/{key}.cwasm"
            )
        except (OSError, wasmtime.WasmtimeError):
            pass  # not cached (yet), or from another build: compile it
    try:
        return wasmtime.Module(engine, wasm)
    except wasmtime.WasmtimeError as exc:
        raise _invalid(f"the module does not compile: {_wasm_engine.trap_summary(exc)}") from None


def compile_for_cache(wasm: bytes) -> bytes:
    """Compile ``wasm`` with the workers' configuration; the bytes the compile cache keeps."""
    import wasmtime

    engine = wasmtime.Engine(_wasm_engine.new_config(KIND, parallel=True))
    return bytes(wasmtime.Module(engine, wasm).serialize())


class WasmModuleProgram:
    class_name = CLASS_NAME

    def __init__(self, module: wasmtime.Module) -> None:
        import wasmtime

        self._run: ModuleRun | None = None
        linker = wasmtime.Linker(_wasm_engine.engine(KIND))
        for name, (params, results) in _wasm_abi.IMPORTS.items():
            ty = wasmtime.FuncType([_valtype(p) for p in params], [_valtype(r) for r in results])
            linker.define_func(
                _wasm_abi.IMPORT_MODULE, name, ty, self._host(name), access_caller=True
            )
        self._pre = linker.instantiate_pre(module)

    def _host(self, name: str) -> Callable[..., Any]:
        def call(caller: wasmtime.Caller, *args: int) -> Any:
            run = self._run
            if run is None:  # a start function calling an import before run(): refuse it
                raise Stop()
            return run.host(name, caller, args)

        return call

    def check(self) -> None:
        """Instantiate once (start functions and ``_initialize`` included) under the limits."""
        request = check_request()
        replay = Replay(request, Limits(), NullChannel(), parallel=run_all)
        run = ModuleRun(replay, Limits())
        with _wasm_engine.guest_running(KIND):
            try:
                run.instantiate(self._pre)
            except Exception as exc:
                message = f"the module cannot start: {_wasm_engine.trap_summary(exc)}"
                raise _invalid(message) from None
            finally:
                run.close()

    def replay(
        self, request: Mapping[str, Any], limits: Limits, channel: Channel
    ) -> tuple[Outcome, bool]:
        metered = MeteredChannel(channel)
        replay = Replay(request, limits, metered, parallel=run_all)
        run = ModuleRun(replay, limits)
        metered.meter = run.meter
        event = {
            "payload": request["params"],
            "instance_id": request["instance_id"],
            "workflow": request["workflow"],
            "timestamp": iso(float(request["created_at"])),
            "vars": request.get("vars") or {},
        }
        self._run = run
        try:
            with _wasm_engine.guest_running(KIND):
                return run.execute(self._pre, event), replay.out_of_memory
        finally:
            self._run = None
            run.close()


def _valtype(name: str) -> wasmtime.ValType:
    import wasmtime

    return wasmtime.ValType.i64() if name == "i64" else wasmtime.ValType.i32()


class ModuleRun(GuestRun):
    """One replay of a core module: its Store, its memory, and the ABI's host functions."""

    def __init__(self, replay: Replay, limits: Limits) -> None:
        import wasmtime

        store = wasmtime.Store(_wasm_engine.engine(KIND))
        store.set_limits(
            memory_size=_wasm_engine.guest_memory_bytes(limits),
            table_elements=_TABLE_ELEMENTS,
            instances=1,
            tables=4,
            memories=1,
        )
        super().__init__(replay, limits, store)
        self._memory: wasmtime.Memory | None = None
        self._exports: Any = None
        # A result too large for the guest's buffer waits here for the call that retries.
        self._pending: tuple[str, str, bytes] | None = None

    def instantiate(self, pre: wasmtime.InstancePre) -> None:
        import wasmtime

        self.meter.arm()
        instance = pre.instantiate(self.live_store)
        self._exports = instance.exports(self.live_store)
        memory = self._exports["memory"]
        assert isinstance(memory, wasmtime.Memory)
        self._memory = memory
        initialize = self._exports.get(_wasm_abi.INITIALIZE)
        if initialize is not None:
            initialize(self.live_store)

    def execute(self, pre: wasmtime.InstancePre, event: JSONObject) -> Outcome:
        try:
            self.instantiate(pre)
            data = json.dumps(event, separators=(",", ":")).encode()
            pointer = self._exports["alloc"](self.live_store, len(data)) & _U32
            self._write(self.live_store, pointer, data)
            packed = self._exports["run"](self.live_store, pointer, len(data))
            output = self._output(packed)
        except Exception as exc:
            return self.stopped(exc)
        return self.returned(output)

    def _output(self, packed: int) -> Any:
        packed &= (1 << 64) - 1
        pointer, length = packed >> 32, packed & _U32
        text = self._read(self.live_store, pointer, length, limit=self.limits.max_step_result_bytes)
        try:
            return json.loads(text)
        except ValueError as exc:
            raise self.abi_error(f"run() returned invalid JSON: {exc}") from None

    # -- host functions -------------------------------------------------------------------------

    def host(self, name: str, caller: wasmtime.Caller, args: tuple[int, ...]) -> Any:
        handler: Callable[..., Any] = getattr(self, f"_{name}")
        return self.guarded(lambda: handler(caller, *args))

    def _step_begin(
        self, caller: wasmtime.Caller, name_ptr: int, name_len: int, out: int, cap: int
    ) -> int:
        name = self._text(caller, name_ptr, name_len, _MAX_NAME_BYTES)
        if self.call is not None:  # steps do not nest: fail the running one, not the worker
            raise self.abi_error(self.misuse("step_begin", name))
        data = self._take_pending("do", name)
        if data is None:
            call = self.replay.open_step(name)
            if self.replay.next_attempt(call) is not None:
                self.call = call
                return -1
            data = json.dumps(call.output, separators=(",", ":")).encode()
        return self._deliver(caller, "do", name, data, out, cap)

    def _step_end(
        self, caller: wasmtime.Caller, name_ptr: int, name_len: int, ptr: int, length: int
    ) -> None:
        call = self.body(self._text(caller, name_ptr, name_len, _MAX_NAME_BYTES), "step_end")
        limit = self.limits.max_step_result_bytes
        if length & _U32 > 4 * limit + 1024:  # far over the limit whatever its spacing
            message = (
                f"the result of step {call.key[0]!r} is {length & _U32} bytes, over the limit "
                f"of {limit} (max_step_result_bytes)"
            )
            self.replay.attempt_failed(call, error("LimitExceeded", message), final=True)
        else:
            self._record_result(call, self._read(caller, ptr, length, limit=4 * limit + 1024))
        self.call = None
        self.settle(call)

    def _record_result(self, call: StepCall, text: bytes) -> None:
        try:
            value = json.loads(text)
        except ValueError as exc:
            message = f"the result of step {call.key[0]!r} is not valid JSON: {exc}"
            self.replay.attempt_failed(call, error("TypeError", message), final=True)
        else:
            self.replay.attempt_returned(call, value)  # checks the size as JSON gives it back

    def _step_fail(
        self, caller: wasmtime.Caller, name_ptr: int, name_len: int, ptr: int, length: int
    ) -> None:
        call = self.body(self._text(caller, name_ptr, name_len, _MAX_NAME_BYTES), "step_fail")
        failure = _failure(self._text(caller, ptr, length, 16 * 1024, clip=True))
        final = failure["name"] == "NonRetryableError"
        self.replay.attempt_failed(call, failure, final=final)
        self.call = None
        self.settle(call)

    def _sleep(self, caller: wasmtime.Caller, name_ptr: int, name_len: int, seconds: int) -> None:
        name = self._text(caller, name_ptr, name_len, _MAX_NAME_BYTES)
        self._pending = None
        self.replay.sleep(name, seconds)

    def _wait_for_event(
        self,
        caller: wasmtime.Caller,
        name_ptr: int,
        name_len: int,
        type_ptr: int,
        type_len: int,
        timeout: int,
        out: int,
        cap: int,
    ) -> int:
        from treadle.runtime.errors import WaitTimeout

        name = self._text(caller, name_ptr, name_len, _MAX_NAME_BYTES)
        event_type = self._text(caller, type_ptr, type_len, 400)
        data = self._take_pending("wait", name)
        if data is None:
            try:
                event = self.replay.wait_for_event(name, event_type, timeout)
            except WaitTimeout:
                return -1
            data = json.dumps(event, separators=(",", ":")).encode()
        return self._deliver(caller, "wait", name, data, out, cap)

    def _log(self, caller: wasmtime.Caller, ptr: int, length: int) -> None:
        self.replay.log(self._text(caller, ptr, length, _MAX_LOG_BYTES, clip=True))

    # -- linear memory --------------------------------------------------------------------------

    def _take_pending(self, kind: str, name: str) -> bytes | None:
        pending, self._pending = self._pending, None
        if pending is not None and pending[:2] == (kind, name):
            return pending[2]
        return None

    def _deliver(
        self, caller: wasmtime.Caller, kind: str, name: str, data: bytes, out: int, cap: int
    ) -> int:
        """Write ``data`` to ``out`` if it fits; else keep it for the call that retries."""
        if len(data) > (cap & _U32):
            self._pending = (kind, name, data)
            return -(len(data) + 2)
        self._write(caller, out, data)
        return len(data)

    def _memory_of(self, store: wasmtime.Caller | wasmtime.Store) -> wasmtime.Memory:
        import wasmtime

        if self._memory is None:  # during instantiation: the exports are not known yet
            memory = store["memory"] if isinstance(store, wasmtime.Caller) else None
            if not isinstance(memory, wasmtime.Memory):
                raise self.abi_error("the module has no memory to exchange data through")
            return memory
        return self._memory

    def _read(
        self, store: wasmtime.Caller | wasmtime.Store, ptr: int, length: int, *, limit: int
    ) -> bytes:
        ptr, length = ptr & _U32, length & _U32
        if length > limit:
            raise self.abi_error(f"{length} bytes passed to the host; the limit is {limit}")
        memory = self._memory_of(store)
        if ptr + length > memory.data_len(store):
            raise self.abi_error(f"the range {ptr}..{ptr + length} is outside linear memory")
        return bytes(memory.read(store, ptr, ptr + length))

    def _text(
        self,
        store: wasmtime.Caller,
        ptr: int,
        length: int,
        limit: int,
        *,
        clip: bool = False,
    ) -> str:
        if clip:
            length = min(length & _U32, limit)
        return self._read(store, ptr, length, limit=limit).decode("utf-8", "replace")

    def _write(self, store: wasmtime.Caller | wasmtime.Store, ptr: int, data: bytes) -> None:
        ptr &= _U32
        memory = self._memory_of(store)
        if ptr + len(data) > memory.data_len(store):
            raise self.abi_error(f"the range {ptr}..{ptr + len(data)} is outside linear memory")
        if data:
            memory.write(store, data, ptr)


def _failure(text: str) -> ErrorValue:
    """``step_fail``'s error: ``{"name", "message"}`` JSON, or any text as the message."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict):
        name, message = value.get("name", "Error"), value.get("message", "")
        return error(str(name) or "Error", str(message))
    return {"name": "Error", "message": text[:1000]}
