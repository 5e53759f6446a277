"""The pool's handle on the zygote process: fork workers, kill them, learn how they ended."""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar, cast

from sandbox._messages import (
    Exited,
    Forked,
    ForkRequest,
    KillRequest,
    LimitsFields,
    WallFields,
    ZygoteHello,
    ZygoteOptions,
    ZygoteReport,
)
from sandbox._types import Limits
from sandbox._wall import Wall, verdict
from sandbox.wasm._engine import cache_dir

_log = logging.getLogger("treadle.sandbox")
_START_TIMEOUT = 60.0
_FORK_TIMEOUT = 30.0
_REMEMBERED_EXITS = 4096
_Found = TypeVar("_Found")


def _clean_environment() -> dict[str, str]:
    """PATH, LANG and the cache directory: nothing else of the server's configuration
    reaches tenant processes."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        # Where the Wasm runtime and compiled modules are cached (resolved here, with HOME).
        "TREADLE_CACHE_DIR": str(cache_dir()),
    }


# The zygote's first lines. ``treadle/__init__.py`` brings in the HTTP client (httpx, pydantic),
# which a sandbox process has no use for: it would slow the zygote's start and enlarge what
# every worker maps under its memory limit. So the ``treadle`` package is registered without
# running its ``__init__``; ``treadle.runtime``, all a sandbox imports, loads as usual below it.
_BOOT = (
    "import importlib.util, runpy, sys, types\n"
    "spec = importlib.util.find_spec('treadle')\n"
    "sdk = types.ModuleType('treadle')\n"
    "sdk.__spec__, sdk.__path__ = spec, list(spec.submodule_search_locations)\n"
    "sys.modules['treadle'] = sdk\n"
    "runpy.run_module('sandbox._zygote', run_name='__main__', alter_sys=True)\n"
)


def _code_root() -> str:
    # ``sandbox._zygote`` resolves against the working directory: the one holding sandbox/.
    return str(Path(__file__).resolve().parent.parent)


class Spawner:
    """A running zygote. Thread-safe; one reader thread demultiplexes its reports.

    ``wall`` configures the workers' confinement (``sandbox._wall``); ``probes`` names a module
    whose functions workers run on request, for the tests of that confinement only.
    """

    def __init__(self, wall: Wall | None = None, probes: str | None = None) -> None:
        wall = wall or Wall()
        # Dataclasses of JSON scalars: their fields are what the zygote rebuilds them from.
        options: ZygoteOptions = {"wall": cast(WallFields, vars(wall)), "probes": probes}
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._process = subprocess.Popen(
            [sys.executable, "-c", _BOOT, str(theirs.fileno()), json.dumps(options)],
            pass_fds=[theirs.fileno()],
            env=_clean_environment(),
            cwd=_code_root(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        theirs.close()
        self._control = ours
        self._send_lock = threading.Lock()
        self._changed = threading.Condition()
        self._ids = itertools.count(1)
        self._forked: dict[int, Forked] = {}
        self._exits: dict[int, Exited] = {}
        self._alive = True
        self.hello = self._hello()
        self.wall: dict[str, bool] = dict(self.hello.get("wall") or {})
        self._check_wall(wall)
        reader = threading.Thread(
            target=self._read_loop, name="treadle-sandbox-zygote", daemon=True
        )
        reader.start()

    @property
    def alive(self) -> bool:
        return self._alive

    def fork(self, limits: Limits) -> tuple[int, socket.socket]:
        """Start a worker with ``limits``; return its pid and the parent's end of its socket."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        request_id = next(self._ids)
        fields = cast(LimitsFields, vars(limits))
        message: ForkRequest = {"op": "fork", "id": request_id, "limits": fields}
        try:
            with self._send_lock:
                socket.send_fds(self._control, [json.dumps(message).encode()], [theirs.fileno()])
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        reply = self._wait(lambda: self._forked.pop(request_id, None), _FORK_TIMEOUT)
        pid = None if reply is None else reply.get("pid")
        if pid is None:
            ours.close()
            unanswered = "the zygote did not answer"
            detail = unanswered if reply is None else reply.get("error", unanswered)
            raise RuntimeError(f"could not start a sandbox worker: {detail}")
        return int(pid), ours

    def kill(self, pid: int) -> None:
        try:
            with self._send_lock:
                request: KillRequest = {"op": "kill", "pid": pid}
                self._control.send(json.dumps(request).encode())
        except OSError:
            pass  # the zygote is gone, and its workers with it (parent-death signal)

    def exit_status(self, pid: int, timeout: float) -> Exited | None:
        """``{"signal", "code"}`` of a worker once the zygote reaped it; None if unknown."""
        return self._wait(lambda: self._exits.pop(pid, None), timeout)

    def close(self) -> None:
        self._alive = False
        try:
            self._control.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._control.close()
        try:
            self._process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _hello(self) -> ZygoteHello:
        self._control.settimeout(_START_TIMEOUT)
        try:
            hello = json.loads(self._control.recv(65536) or b"null")
        except (OSError, ValueError):
            hello = None
        self._control.settimeout(None)
        if not isinstance(hello, dict) or hello.get("op") != "hello":
            self.close()
            raise RuntimeError("the sandbox zygote did not start")
        return cast(ZygoteHello, hello)

    def _check_wall(self, wall: Wall) -> None:
        refused = verdict(self.wall, required=wall.required)
        if refused is not None:
            self.close()
            raise RuntimeError(refused)

    def _wait(self, take: Callable[[], _Found | None], timeout: float) -> _Found | None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = take()
                remaining = deadline - time.monotonic()
                if found is not None or not self._alive or remaining <= 0:
                    return found
                self._changed.wait(remaining)

    def _read_loop(self) -> None:
        while True:
            try:
                data = self._control.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            message: ZygoteReport = json.loads(data)
            with self._changed:
                self._record(message)
                self._changed.notify_all()
        with self._changed:
            if self._alive:
                _log.error("the sandbox zygote exited; it will be restarted")
            self._alive = False
            self._changed.notify_all()

    def _record(self, message: ZygoteReport) -> None:
        if message["op"] == "forked":
            self._forked[message["id"]] = message
        elif message["op"] == "exited":
            self._exits[message["pid"]] = message
            while len(self._exits) > _REMEMBERED_EXITS:
                self._exits.pop(next(iter(self._exits)))
