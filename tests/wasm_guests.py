"""Wasm guests for the tests, built once per machine and cached.

Core modules are compiled from the guest SDK's C and Zig sources with Zig from PyPI (the
``ziglang`` package); WAT snippets with wasmtime. The Python-in-Wasm runtime is built like the
server builds it. A missing tool fails the test that needs it, loudly: nothing here is skipped.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from sandbox import Artifact
from sandbox.wasm._build import BuildError, ensure_python_runtime
from sandbox.wasm._engine import cache_dir, write_atomically

GUEST = Path(__file__).resolve().parent.parent / "sandbox" / "wasm" / "guest"
ZIG_TIMEOUT = 600


def python_runtime() -> Path:
    """The compiled Python-in-Wasm runtime (built on first use: about 20 s)."""
    return ensure_python_runtime()


class StandInBuild:
    """A build of the Python-in-Wasm runtime for a server on a fresh cache, as slow as a test
    needs: it waits for ``release`` (at most ``seconds``), then puts ``runtime`` (this
    machine's, built for real earlier) into place, or fails with ``fail``. What runs afterwards
    is the real runtime; only the build's duration is the test's."""

    def __init__(self, runtime: Path, *, seconds: float = 60.0, fail: str | None = None) -> None:
        self.release = threading.Event()
        self._runtime = runtime
        self._seconds = seconds
        self._fail = fail

    def __call__(self, target: Path) -> None:
        self.release.wait(self._seconds)
        if self._fail is not None:
            raise BuildError(self._fail)
        partial = target.with_name(f".{target.name}.partial")
        partial.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._runtime, partial)
        os.replace(partial, target)


def _zig(arguments: list[str], inputs: list[Path], out_name: str) -> bytes:
    digest = hashlib.sha256(" ".join(arguments).encode())
    for path in inputs:
        digest.update(path.read_bytes())
    target = cache_dir() / "test-guests" / f"{out_name}-{digest.hexdigest()[:16]}.wasm"
    if not target.exists():
        partial = target.with_suffix(".building")
        partial.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "ziglang", *arguments, f"-femit-bin={partial}"]
        if arguments[0] == "cc":
            command[-1:] = ["-o", str(partial)]
        result = subprocess.run(
            command, cwd=GUEST, capture_output=True, text=True, timeout=ZIG_TIMEOUT
        )
        if result.returncode != 0:
            raise AssertionError(
                f"compiling {out_name} with Zig failed (pip install ziglang):\n"
                f"{result.stderr[-4000:]}"
            )
        write_atomically(target, partial.read_bytes())
        partial.unlink()
    return target.read_bytes()


@functools.cache
def conformance_module() -> bytes:
    """``sandbox/wasm/guest/examples/conformance.c``: the conformance workflows as one module."""
    source = GUEST / "examples" / "conformance.c"
    arguments = [
        "cc", "--target=wasm32-freestanding", "-nostdlib", "-O2", "-Wl,--no-entry",
        "-Wl,--export-dynamic", "-Wl,--strip-all", str(source.relative_to(GUEST)),
    ]  # fmt: skip
    return _zig(arguments, [source, GUEST / "treadle.h"], "conformance")


@functools.cache
def greet_module() -> bytes:
    """``sandbox/wasm/guest/examples/greet.zig``: the Zig example workflow."""
    arguments = [
        "build-exe", "-target", "wasm32-freestanding", "-O", "ReleaseSmall", "-fno-entry",
        "-rdynamic", "--dep", "treadle", "-Mroot=examples/greet.zig", "-Mtreadle=treadle.zig",
    ]  # fmt: skip
    return _zig(arguments, [GUEST / "examples" / "greet.zig", GUEST / "treadle.zig"], "greet")


def wat(text: str) -> bytes:
    import wasmtime

    return bytes(wasmtime.wat2wasm(text))


def module_artifact(wasm: bytes) -> Artifact:
    """An artifact of the ``wasm-module`` backend, as the loader makes one."""
    encoded = base64.b64encode(wasm).decode("ascii")
    version = "m-" + hashlib.sha256(wasm).hexdigest()[:16]
    return Artifact(version=version, sandbox="wasm-module", source=encoded)


def python_artifact(source: str, class_name: str | None = None) -> Artifact:
    """An artifact of the ``wasm`` (Python) backend."""
    version = "p-" + hashlib.sha256(f"{class_name}:{source}".encode()).hexdigest()[:16]
    return Artifact(version=version, sandbox="wasm", source=source, class_name=class_name)
