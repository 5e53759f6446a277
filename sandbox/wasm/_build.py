"""Building and caching what the ``wasm`` sandbox runs, outside the workers.

- The **Python runtime**: one component (componentize-py: CPython 3.14, the SDK's
  ``treadle.runtime`` and its glue in ``sandbox/wasm/guest/python``) serves every tenant; tenant
  source is data. It is built on the first start that needs it (in the background of a
  server: :mod:`sandbox.wasm._background`), compiled for the workers' engine configuration,
  and kept in the cache, keyed by everything it is made of. Building takes 12-19 s on the idle
  2-core development machine, 40-80 s when it is loaded (how long the latest build took is
  kept beside the cache, for the next one's estimate); afterwards loading it takes
  milliseconds.
- **Core modules**: compiled once into the cache, keyed by content hash, wasmtime version and
  engine configuration, so that new workers load them instead of compiling them again.

Both compile in a child process (``python -m sandbox.wasm._tool``): wasmtime compiles on a
thread pool, which must not live in a process that forks, and the engine process does not
load wasmtime at all. Builds take a file lock, so processes sharing a cache build once.

A core module is the tenant's code, so its compile child is held as a tenant process is: its
environment is PATH and LANG only (never the server's admin token or database URL), it limits
its own memory, CPU time and file size before it reads the module, and it is killed after
``_MODULE_TIMEOUT`` seconds of wall-clock time. componentize-py gets the same environment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.metadata
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from sandbox._types import Artifact, Limits
from sandbox.wasm import _engine as _wasm_engine

_log = logging.getLogger("treadle.sandbox")
GUEST_DIR = Path(__file__).resolve().parent / "guest" / "python"
# The guest runs the SDK's own step API: the whole ``treadle.runtime`` package is bundled.
_RUNTIME_DIR = Path(__file__).resolve().parents[2] / "treadle" / "runtime"
_GUEST_PATTERNS = ("*.py", "*/*.py", "wit/*.wit")
_COMPONENTIZE = (
    "import sys, componentize_py; sys.argv[0] = 'componentize-py'; componentize_py.script()"
)
_BUILD_TIMEOUT = 900.0  # the Python runtime: about 20 s, several times that on a busy machine
_MODULE_TIMEOUT = 300.0  # one core module (at most 8 MiB); its CPU time is limited too
_COMPILE_MEMORY = 2 << 30
_COMPILE_CPU_SECONDS = 120
_COMPILE_FILE_BYTES = 1 << 30  # the compiled runtime is about 40 MB

_ready: Path | None = None
_ready_lock = threading.Lock()
_compiled_modules: set[str] = set()
_compiled_versions: set[str] = set()
_SECONDS_FILE = ".python-runtime-build-seconds"


class BuildError(RuntimeError):
    """The Python-in-Wasm runtime could not be built."""


def _inputs() -> list[tuple[str, bytes]]:
    """Every file the component is made of, by its path in the component: the guest's glue and
    the SDK's ``treadle/runtime/*.py``, in a stable order."""
    guest = sorted({path for pattern in _GUEST_PATTERNS for path in GUEST_DIR.glob(pattern)})
    files = [(path.relative_to(GUEST_DIR).as_posix(), path.read_bytes()) for path in guest]
    runtime = sorted(_RUNTIME_DIR.glob("*.py"))
    files += [(f"treadle/runtime/{path.name}", path.read_bytes()) for path in runtime]
    return files


def component_key() -> str:
    """The hash of everything the component is built from, componentize-py included."""
    digest = hashlib.sha256(importlib.metadata.version("componentize-py").encode())
    for name, data in _inputs():
        digest.update(f"\0{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:24]


def component_path() -> Path:
    return _wasm_engine.cache_dir() / "wasm" / f"python-{component_key()}.wasm"


def runtime_path() -> Path:
    """Where the compiled Python runtime is (or will be) for this wasmtime and configuration."""
    return _wasm_engine.wasm_cache_dir("python") / f"python-{component_key()}.cwasm"


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    lock = _wasm_engine.cache_dir() / "wasm" / f".{name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_python_runtime() -> Path:
    """The compiled Python runtime, built first if it is not in the cache yet, waiting for it
    (the ahead-of-time build, tests, benchmarks; a server builds in the background instead:
    :mod:`sandbox.wasm._background`).

    Raises :class:`BuildError` saying what failed (componentize-py missing, say).
    """
    global _ready
    with _ready_lock:
        if _ready is not None and _ready.exists():
            return _ready
        target = runtime_path()
        build_runtime(target)
        _ready = target
        return target


def build_runtime(target: Path) -> None:
    """Build the compiled Python runtime into ``target`` unless it is there, under the cache's
    lock: a process that finds another building it waits for that build."""
    if target.exists():
        return
    with _locked("python-runtime"):
        if not target.exists():
            _build_runtime(target)


def _build_runtime(target: Path) -> None:
    started = time.monotonic()
    _log.info("building the Python-in-Wasm runtime into %s", target)
    component = component_path()
    if not component.exists():
        _componentize(component)
    built = time.monotonic()
    _run_child(["compile-component", str(component), str(target)], None, _BUILD_TIMEOUT)
    took = time.monotonic() - started
    record_build_seconds(took)
    _log.info(
        "the Python-in-Wasm runtime took %.1f s (componentize %.1f s, compile %.1f s)",
        took,
        built - started,
        time.monotonic() - built,
    )


def recorded_build_seconds() -> float | None:
    """How long the latest build of the runtime on this machine took, if one was recorded."""
    try:
        seconds = float((_wasm_engine.cache_dir() / "wasm" / _SECONDS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return seconds if 0 < seconds < _BUILD_TIMEOUT else None


def record_build_seconds(seconds: float) -> None:
    """Keep how long a build took: the next build on this machine (an upgrade changes the
    runtime's inputs) tells those waiting for it how long it will take from this."""
    with contextlib.suppress(OSError):
        path = _wasm_engine.cache_dir() / "wasm" / _SECONDS_FILE
        _wasm_engine.write_atomically(path, f"{seconds:.1f}\n".encode())


def _componentize(out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="treadle-guest-") as stage_name:
        stage = Path(stage_name)
        for name, data in _inputs():
            if name.startswith("wit/"):
                continue
            (stage / name).parent.mkdir(parents=True, exist_ok=True)
            (stage / name).write_bytes(data)
        partial = out.with_name(f".{out.name}.{os.getpid()}")
        command = [
            sys.executable, "-c", _COMPONENTIZE,
            "-d", str(GUEST_DIR / "wit"), "-w", "workflow",
            "componentize", "-p", str(stage), "app", "-o", str(partial),
        ]  # fmt: skip
        try:
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=_BUILD_TIMEOUT,
                cwd=stage,
                env=child_environment(),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BuildError(f"componentize-py could not run: {exc}") from exc
        if result.returncode != 0 or not partial.exists():
            detail = (result.stderr or result.stdout).strip()[-2000:]
            raise BuildError(f"componentize-py failed (is it installed?): {detail}")
        os.chmod(partial, 0o644)
        os.replace(partial, out)


def child_environment() -> dict[str, str]:
    """The whole environment of a build child: nothing of the server's configuration."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }


def limit_child() -> None:
    """In a compile child, before it reads what it compiles: bounded memory, CPU and files."""
    resource.setrlimit(resource.RLIMIT_AS, (_COMPILE_MEMORY, _COMPILE_MEMORY))
    resource.setrlimit(resource.RLIMIT_CPU, (_COMPILE_CPU_SECONDS, _COMPILE_CPU_SECONDS))
    resource.setrlimit(resource.RLIMIT_FSIZE, (_COMPILE_FILE_BYTES, _COMPILE_FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _run_child(arguments: list[str], stdin: bytes | None, timeout: float) -> None:
    command = [sys.executable, "-m", "sandbox.wasm._tool", *arguments]
    code_root = str(Path(__file__).resolve().parent.parent)
    try:
        result = subprocess.run(
            command,
            input=stdin,
            capture_output=True,
            timeout=timeout,
            cwd=code_root,
            env=child_environment(),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"compiling for wasmtime failed: {exc}") from exc
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip()[-2000:]
        raise BuildError(f"compiling for wasmtime failed: {detail}")


def prepare(
    artifact: Artifact,
    limits: Limits | None,
    runtime: Callable[[], Path],
    timeout: float | None = None,
) -> Limits | None:
    """What the pool does before a worker gets ``artifact``; the limits to ask a worker for.

    A worker serves one sandbox (it loads that sandbox's runtime when it starts), so the limits
    name the artifact's. ``runtime`` returns the Python runtime or raises
    :class:`sandbox.NotReady` at once while it builds, or when its build failed (never waits
    for the build); a core module is compiled into the cache, within ``timeout`` seconds if
    given (else the worker compiles it).
    """
    if artifact.sandbox == "wasm":
        runtime()
    elif artifact.sandbox == "wasm-module" and artifact.version not in _compiled_versions:
        ensure_module_compiled(artifact.source, timeout)
        _compiled_versions.add(artifact.version)
    if limits is None:
        return None if artifact.sandbox == "restricted" else Limits(sandbox=artifact.sandbox)
    if limits.sandbox == artifact.sandbox:
        return limits
    return dataclasses.replace(limits, sandbox=artifact.sandbox)


def ensure_module_compiled(source: str, timeout: float | None = None) -> None:
    """Compile a core module (base64 ``source``) into the cache unless it is there.

    Failures are not reported here: the worker compiles the module itself and explains them.
    """
    from sandbox.wasm._abi import decode

    try:
        wasm = decode(source)
    except ValueError:
        return
    key = _wasm_engine.module_key(wasm)
    if key in _compiled_modules:
        return
    target = _wasm_engine.wasm_cache_dir("module") / "modules" / f"{key}.cwasm"
    if not target.exists():
        _modules_dir(target.parent)
        try:
            _run_child(["compile-module", str(target)], wasm, timeout or _MODULE_TIMEOUT)
        except BuildError as exc:
            _log.info("core module %s not cached: %s", key[:12], exc)
            return
    _compiled_modules.add(key)


def _modules_dir(directory: Path) -> None:
    # Workers run as nobody and reach this directory through a descriptor opened before they
    # dropped privileges: they need search permission on it, not on its parents.
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o711)


# -- the child process --------------------------------------------------------------------------


def compile_component(source: Path, target: Path) -> None:
    from wasmtime import Engine
    from wasmtime.component import Component

    engine = Engine(_wasm_engine.new_config("python", parallel=True))
    component = Component.from_file(engine, str(source))
    _wasm_engine.write_atomically(target, bytes(component.serialize()))


def compile_module(target: Path) -> None:
    from sandbox.wasm._module import compile_for_cache

    wasm = sys.stdin.buffer.read()
    if _wasm_engine.module_key(wasm) + ".cwasm" != target.name:
        raise SystemExit("the module does not match its cache key")
    _wasm_engine.write_atomically(target, compile_for_cache(wasm))


def remove_cache() -> None:
    """Delete everything cached for the wasm sandbox (for tests and `treadle` upgrades)."""
    global _ready
    with _ready_lock:
        shutil.rmtree(_wasm_engine.cache_dir() / "wasm", ignore_errors=True)
        _ready = None
        _compiled_modules.clear()
