"""The wasmtime side of the ``wasm`` sandbox, shared by both guest kinds.

One engine configuration for everything (it decides how compiled code looks, so it is part of
every cache key), the compile cache on disk, the epoch ticker, and the per-run meter that
re-arms fuel and the epoch deadline at every step boundary.

wasmtime is imported lazily: the zygote must not load it (every restricted worker would carry
its 27 MB of address space under ``RLIMIT_AS``), and the engine process never runs a guest.
Workers that serve a ``wasm`` sandbox load it in :func:`preload`, before they drop privileges.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.metadata
import json
import os
import pwd
import resource
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandbox._types import Limits

if TYPE_CHECKING:
    import wasmtime

# Settings that shape compiled code or what a guest may use. memory_reservation is small so
# that a worker's RLIMIT_AS (memory_mb) still bounds it: the default reserves 4 GiB of address
# space per linear memory, and the mmap fails under any sane RLIMIT_AS.
# A wasmtime.Config attribute's value.
Setting = bool | int | str
_MEMORY_RESERVATION = 32 << 20
_MEMORY_RESERVATION_FOR_GROWTH = 16 << 20
ENGINE_SETTINGS: dict[str, Setting] = {
    "consume_fuel": True,
    "epoch_interruption": True,
    "memory_reservation": _MEMORY_RESERVATION,
    "memory_reservation_for_growth": _MEMORY_RESERVATION_FOR_GROWTH,
    "memory_guard_size": 64 << 10,
    "cranelift_opt_level": "speed",
    "wasm_threads": False,
}
# Per guest kind. The Python runtime's 12 MB heap snapshot is mapped copy-on-write from the
# compiled file (instantiation 0.5 ms instead of 5 ms). A core module compiled in a worker
# would need a memfd for that, which RLIMIT_FSIZE=0 forbids: modules copy their (small) data.
KINDS: dict[str, dict[str, Setting]] = {
    "python": {"memory_init_cow": True},
    "module": {"memory_init_cow": False},
}
TICK_SECONDS = 0.005
# Fuel is the deterministic half of the CPU limit: the same code runs out at the same
# instruction on every machine and under any load. Measured here, tight loops of compiled C
# and of CPython-in-Wasm burn 0.6-5 units per ns; a budget of 2e6 units per millisecond of
# step_cpu_ms lets either run for about the CPU time the policy grants, and the epoch
# deadline (wall clock) catches whatever fuel does not.
FUEL_PER_MS = 2_000_000
_GUEST_MEMORY_FLOOR = 16 << 20
_HOST_HEADROOM = 24 << 20  # Python objects, JSON, wasmtime's own allocations
_M_ARENA_MAX = -8

_engines: dict[str, wasmtime.Engine] = {}
_engine_lock = threading.Lock()
_tickers: dict[str, _Ticker] = {}


def wasmtime_version() -> str:
    return importlib.metadata.version("wasmtime")


def settings(kind: str) -> dict[str, Setting]:
    return {**ENGINE_SETTINGS, **KINDS[kind]}


def config_key(kind: str) -> str:
    """What a compiled artifact depends on besides its input: wasmtime and the engine config."""
    text = json.dumps([wasmtime_version(), settings(kind)], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def new_config(kind: str, *, parallel: bool = False) -> wasmtime.Config:
    """The engine configuration of a guest kind; ``parallel`` compilation only in builds."""
    import wasmtime

    config = wasmtime.Config()
    for name, value in settings(kind).items():
        setattr(config, name, value)
    # Not part of the key: it changes how fast code is compiled, not the code. Workers compile
    # on one thread: a thread pool would take address space under RLIMIT_AS.
    config.parallel_compilation = parallel
    return config


def engine(kind: str) -> wasmtime.Engine:
    """This process's engine for a guest kind (created on first use)."""
    with _engine_lock:
        found = _engines.get(kind)
        if found is None:
            import wasmtime

            found = _engines[kind] = wasmtime.Engine(new_config(kind))
        return found


# -- the cache on disk --------------------------------------------------------------------------


# A worker clears its environment before it loads its runtime: it finds the cache directory
# its zygote was given here.
_CACHE_DIR_AT_IMPORT = os.environ.get("TREADLE_CACHE_DIR")


def cache_dir() -> Path:
    """``$TREADLE_CACHE_DIR``, else ``$XDG_CACHE_HOME/treadle``, else ``~/.cache/treadle``."""
    explicit = os.environ.get("TREADLE_CACHE_DIR") or _CACHE_DIR_AT_IMPORT
    if explicit:
        return Path(explicit).resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).resolve() / "treadle"
    # The zygote's environment holds PATH and LANG only: find the home directory by uid.
    home = os.environ.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir
    return Path(home) / ".cache" / "treadle"


def wasm_cache_dir(kind: str) -> Path:
    return cache_dir() / "wasm" / f"wasmtime-{wasmtime_version()}-{kind}-{config_key(kind)}"


def module_key(wasm: bytes) -> str:
    """The cache key of a compiled core module: its content hash (the directory holds the
    wasmtime version and the engine configuration)."""
    return hashlib.sha256(wasm).hexdigest()


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


# -- limits -------------------------------------------------------------------------------------


def address_space_used() -> int:
    """Bytes of address space this process maps now (what RLIMIT_AS counts)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def guest_memory_bytes(limits: Limits) -> int:
    """The linear-memory limit of a guest: what ``memory_mb`` leaves after the host's share.

    RLIMIT_AS stays the backstop for the process; this limit makes a guest that allocates too
    much fail inside the guest (``memory.grow`` returns -1) rather than take the worker down.
    """
    left = (limits.memory_mb << 20) - address_space_used() - _HOST_HEADROOM
    return max(left, _GUEST_MEMORY_FLOOR)


def room_problem() -> str | None:
    """Why this process's RLIMIT_AS leaves no room for a guest, or None.

    A worker carries wasmtime and its runtime before any guest runs; a guest needs its memory
    reservation on top. Said plainly here rather than as an mmap failure at instantiation.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    reservation = _MEMORY_RESERVATION + _MEMORY_RESERVATION_FOR_GROWTH
    needed = address_space_used() + _HOST_HEADROOM + reservation + _GUEST_MEMORY_FLOOR
    if needed <= soft:
        return None
    return (
        f"memory_mb={soft >> 20} is too small for the wasm sandbox: its workers need at least "
        f"{(needed >> 20) + 1} MB (the runtime takes {address_space_used() >> 20} MB)"
    )


def limit_malloc_arenas() -> None:
    """One malloc arena: each extra thread's arena reserves 64 MiB under RLIMIT_AS."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 1)


class _Ticker:
    """Advances the engine's epoch every tick while a guest runs, and sleeps otherwise."""

    def __init__(self, engine: wasmtime.Engine) -> None:
        self._engine = engine
        self._running = threading.Event()
        thread = threading.Thread(target=self._loop, name="treadle-wasm-epoch", daemon=True)
        thread.start()

    def _loop(self) -> None:
        while True:
            self._running.wait()
            time.sleep(TICK_SECONDS)
            self._engine.increment_epoch()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        self._running.set()
        try:
            yield
        finally:
            self._running.clear()


_guest_lock = threading.Lock()


@contextlib.contextmanager
def guest_running(kind: str) -> Iterator[None]:
    """Run one guest at a time in this process, with the epoch of its engine ticking.

    wasmtime-py keeps a host function's exception in a module global, and ctypes releases the
    GIL while wasm runs: two guests at once could see each other's exceptions.
    """
    with _guest_lock:
        ticker = _tickers.get(kind)
        if ticker is None:
            ticker = _tickers[kind] = _Ticker(engine(kind))
        with ticker.running():
            yield


class Meter:
    """Fuel and an epoch deadline for each stretch of guest code between two step boundaries."""

    def __init__(self, store: wasmtime.Store, limits: Limits) -> None:
        self._store: wasmtime.Store | None = store
        self.fuel = limits.step_cpu_ms * FUEL_PER_MS
        # A tick short of the budget: the worker's CPU timer (same budget, re-armed at the same
        # moments) must not kill the process before the guest traps.
        self._ticks = max(1, int(limits.step_cpu_seconds / TICK_SECONDS) - 1)

    def arm(self) -> None:
        if self._store is not None:
            self._store.set_fuel(self.fuel)
            self._store.set_epoch_deadline(self._ticks)

    def close(self) -> None:
        """The guest is done: messages sent from now on (the outcome's) arm nothing."""
        self._store = None


def cpu_trap(exc: BaseException) -> bool:
    """Whether a guest stopped on its fuel or its epoch deadline."""
    import wasmtime

    if isinstance(exc, wasmtime.Trap) and exc.trap_code in (
        wasmtime.TrapCode.OUT_OF_FUEL,
        wasmtime.TrapCode.INTERRUPT,
    ):
        return True
    text = str(exc)
    return "all fuel consumed" in text or "interrupt" in text


def trap_summary(exc: BaseException) -> str:
    """The first line of a trap's message, without the wasm backtrace."""
    import wasmtime

    if isinstance(exc, wasmtime.Trap):
        text = exc.message
    else:
        text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "the guest trapped"
    first = lines[0]
    if first.startswith("error while executing at wasm backtrace") and len(lines) > 1:
        # The cause follows the backtrace: "Caused by: ... wasm trap: ..."
        causes = [line for line in lines if "wasm trap" in line or line.startswith("0:")]
        first = causes[-1] if causes else lines[-1]
    return first[:500]


# -- component marshalling ----------------------------------------------------------------------

_fast_bytes_installed = False


def install_fast_bytes() -> None:
    """Lower ``list<u8>`` host results with one copy instead of one Python call per byte.

    CPython's start-up in the guest draws 2.5 KB from ``wasi:random`` (which we shadow for
    determinism); wasmtime-py lowers each byte through a Python method call, about 3 ms per
    replay. This replaces that for ``bytes`` values only, and checks itself against the
    original on a sample first: a wasmtime-py whose layout differs keeps the original.
    """
    global _fast_bytes_installed
    if _fast_bytes_installed:
        return
    from wasmtime import _ffi as ffi
    from wasmtime.component import _types

    original = _types.ListType.convert_to_c
    size = ctypes.sizeof(ffi.wasmtime_component_val_t)
    kind_at = ffi.wasmtime_component_val_t.kind.offset
    value_at = ffi.wasmtime_component_val_t.of.offset
    u8 = bytes([ffi.WASMTIME_COMPONENT_U8.value])

    def convert_to_c(self: Any, store: Any, val: Any, ptr: Any) -> None:
        if not (isinstance(val, bytes) and val and self._is_bytes()):
            original(self, store, val, ptr)
            return
        raw = ffi.wasmtime_component_vallist_t()
        ffi.wasmtime_component_vallist_new_uninit(raw, len(val))
        layout = bytearray(size * len(val))
        layout[kind_at::size] = u8 * len(val)
        layout[value_at::size] = val
        ctypes.memmove(raw.data, bytes(layout), len(layout))
        ptr.contents.kind = ffi.WASMTIME_COMPONENT_LIST
        ptr.contents.of.list = raw

    if _lowers_bytes(convert_to_c, ffi):
        _types.ListType.convert_to_c = convert_to_c  # type: ignore[method-assign]
    _fast_bytes_installed = True


def _lowers_bytes(convert: Any, ffi: Any) -> bool:
    """Whether ``convert`` lowers bytes into what the ctypes view of the values reads back."""

    class _ByteList:
        @staticmethod
        def _is_bytes() -> bool:
            return True

    sample = bytes(range(256)) * 3
    value = ffi.wasmtime_component_val_t()
    try:
        convert(_ByteList(), None, sample, ctypes.pointer(value))
    except Exception:
        return False
    raw = value.of.list
    try:
        return value.kind == ffi.WASMTIME_COMPONENT_LIST.value and all(
            raw.data[i].kind == ffi.WASMTIME_COMPONENT_U8.value and raw.data[i].of.u8 == byte
            for i, byte in enumerate(sample)
        )
    finally:
        ffi.wasmtime_component_vallist_delete(ctypes.byref(raw))
