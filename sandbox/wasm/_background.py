"""The Python-in-Wasm runtime built in the background of a server, and where that build stands.

The first start on a machine builds the runtime (:mod:`sandbox.wasm._build`: 40-80 s on a busy
machine). Nothing may wait for that inside a request or a runner thread: an upload would look
like a server that does not answer, and runs of `restricted` code would queue behind it. So
:class:`RuntimeBuild` builds on a thread of its own as soon as the server starts, logs its
progress, and answers at once: :meth:`RuntimeBuild.require` returns the runtime, or raises
:class:`sandbox.NotReady` with the seconds still to go (estimated from how long the previous
build on this machine took, else :data:`DEFAULT_ESTIMATE`) or with why the build failed.

A failed build is logged once, with its reason, and not tried again by this process (each
attempt would cost a minute of both cores and fail the same way): every wasm upload and replay
is told why; fix the cause and restart, or build ahead with ``python -m sandbox.wasm._tool``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sandbox._types import NotReady
from sandbox.wasm import _build

DEFAULT_ESTIMATE = 60.0
"""Seconds a first build is said to take when none was recorded on this machine (12-19 s on an
idle 2-core machine, up to 80 s on a loaded one)."""
_MIN_LEFT = 5.0  # past the estimate, the build is said to take this much longer
_log = logging.getLogger("treadle.sandbox")

Builder = Callable[[Path], None]
"""Builds the runtime into the path given (written atomically), or raises ``BuildError``."""


class RuntimeBuild:
    """The build of the Python-in-Wasm runtime of one process. Thread-safe.

    ``builder`` makes the runtime (by default componentize-py, then wasmtime's compiler: a test
    substitutes a slower or failing one); ``progress_seconds`` is how often a build in progress
    says so in the log.
    """

    def __init__(
        self,
        builder: Builder = _build.build_runtime,
        *,
        progress_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._builder = builder
        self._progress_seconds = progress_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._ready: Path | None = None
        self._target: Path | None = None  # what the build of this process writes
        self._started: float | None = None
        self._estimate = DEFAULT_ESTIMATE
        self._error: str | None = None

    def start(self) -> None:
        """Start building in the background if the runtime is not in the cache, unless a build
        of this process runs or failed; returns at once."""
        with self._lock:
            building = self._started is not None and not self._done.is_set()
            if building or self._error is not None or self._cached() is not None:
                return
            self._done.clear()  # built before, and the cache was emptied since
            self._ready = None
            self._started = self._clock()
            self._target = _build.runtime_path()
            self._estimate = _build.recorded_build_seconds() or DEFAULT_ESTIMATE
        _log.warning(
            "building the Python-in-Wasm runtime (first start only, about %d s)…", self._estimate
        )
        threading.Thread(target=self._build, name="treadle-wasm-build", daemon=True).start()
        threading.Thread(target=self._report, name="treadle-wasm-progress", daemon=True).start()

    def require(self) -> Path:
        """The compiled runtime; raises :class:`sandbox.NotReady` at once while it is being
        built (starting the build if none runs) or when its build failed."""
        ready = self._cached()
        if ready is not None:
            return ready
        self.start()
        with self._lock:
            if self._ready is not None:
                return self._ready
            if self._error is not None:
                message = f"the Python-in-Wasm runtime could not be built: {self._error}"
                raise NotReady(message, seconds_left=None)
            left = self.seconds_left()
        raise NotReady(
            f"building the Python-in-Wasm runtime, about {math.ceil(left)} s left",
            seconds_left=left,
        )

    def wait(self, timeout: float | None = None) -> Path:
        """The compiled runtime once built: for tests and tools, never for a request."""
        self.start()
        self._done.wait(timeout)
        return self.require()

    def seconds_left(self) -> float:
        """The estimate of the seconds the build still takes (0 when none runs)."""
        if self._started is None or self._done.is_set():
            return 0.0
        left = self._estimate - (self._clock() - self._started)
        return left if left >= 1 else _MIN_LEFT

    def _cached(self) -> Path | None:
        ready = self._ready
        if ready is not None and ready.exists():
            return ready
        # Not yet looked at (a cache hit is the common start), or built meanwhile, maybe by
        # another process or thread sharing the cache: files appear whole (renamed into place).
        target = self._target or _build.runtime_path()
        if target.exists():
            self._ready = target
            return target
        return None

    def _build(self) -> None:
        target = self._target or _build.runtime_path()
        try:
            self._builder(target)
        except Exception as exc:  # any failure: said once, here, and to every caller
            with self._lock:
                self._error = str(exc) or type(exc).__name__
            _log.error("the Python-in-Wasm runtime could not be built: %s", self._error)
        else:
            with self._lock:
                self._ready = target
            took = self._clock() - (self._started or 0.0)
            _log.warning("built the Python-in-Wasm runtime in %.0f s", took)
        finally:
            self._done.set()

    def _report(self) -> None:
        while not self._done.wait(self._progress_seconds):
            took = self._clock() - (self._started or 0.0)
            _log.warning("still building the Python-in-Wasm runtime… %.0f s", took)


_process_build: RuntimeBuild | None = None
_process_lock = threading.Lock()


def process_build() -> RuntimeBuild:
    """The build of this process, shared by its sandbox pools: the cache is per machine."""
    global _process_build
    with _process_lock:
        if _process_build is None:
            _process_build = RuntimeBuild()
        return _process_build
