"""The treadle processes under test: one ``treadle serve`` and two ``treadle worker``.

Each is a real subprocess in a session of its own, logging to ``<name>.log`` (appended to by
every incarnation, each start marked by a line of its own). An incarnation is named
``<name>#<n>``: the counter's record of which process made a call uses these names.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from bench._server import ADMIN_TOKEN, free_port

LEASE_SECONDS = 3


@dataclasses.dataclass(frozen=True)
class Exit:
    """An incarnation that ended: killed by the test, or on its own (``code``)."""

    incarnation: str
    at: float
    killed: bool
    code: int | None


class _Process:
    def __init__(self, name: str, command: list[str], log: Path) -> None:
        self.name = name
        self._command = command
        self._log = log
        self.number = 0
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def incarnation(self) -> str:
        return f"{self.name}#{self.number}"

    def start(self) -> None:
        self.number += 1
        env = {
            **os.environ,
            "TREADLE_ADMIN_TOKEN": ADMIN_TOKEN,
            "TREADLE_LEASE_SECONDS": str(LEASE_SECONDS),
        }
        with open(self._log, "ab") as log:
            log.write(f"=== chaos: start {self.incarnation} at {time.time():.3f}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                self._command, env=env, stdout=log, stderr=log, start_new_session=True
            )

    def kill(self) -> Exit:
        assert self.popen is not None
        at = time.time()
        os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(30)
        return Exit(self.incarnation, at, killed=True, code=None)

    def exited(self) -> Exit | None:
        """The incarnation's exit if it ended without being killed by the test."""
        if self.popen is None or self.popen.poll() is None:
            return None
        return Exit(self.incarnation, time.time(), killed=False, code=self.popen.returncode)


class Fleet:
    """``serve`` (the API, with in-process workers) and ``worker-1``, ``worker-2``."""

    def __init__(self, database_url: str, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        module = [sys.executable, "-m", "dispatcher"]
        database = ["--database-url", database_url]
        serve = [*module, "serve", "--port", str(self.port), *database]
        self._processes = {
            "serve": _Process("serve", serve, directory / "serve.log"),
            **{
                name: _Process(name, [*module, "worker", *database], directory / f"{name}.log")
                for name in ("worker-1", "worker-2")
            },
        }
        self.exits: list[Exit] = []
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return sorted(self._processes)

    @property
    def logs(self) -> list[Path]:
        return [self.directory / f"{name}.log" for name in self.names]

    def start(self) -> None:
        for process in self._processes.values():
            process.start()
        self.wait_healthy()

    def kill_and_restart(self, name: str) -> Exit:
        """``kill -9`` the process and start it again at once, without waiting for it."""
        process = self._processes[name]
        with self._lock:
            gone = process.exited() or process.kill()  # it may have died on its own just now
            self.exits.append(gone)
            process.start()
        return gone

    def revive(self) -> list[Exit]:
        """Start again every process that ended on its own; their exits."""
        found = []
        with self._lock:
            for process in self._processes.values():
                gone = process.exited()
                if gone is not None:
                    found.append(gone)
                    self.exits.append(gone)
                    process.start()
        return found

    def callers(self) -> dict[int, str]:
        """The pid of each running incarnation, and its name."""
        with self._lock:
            return {
                p.popen.pid: p.incarnation for p in self._processes.values() if p.popen is not None
            }

    def wait_healthy(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"treadle serve is not healthy after {timeout} s")
            self.revive()
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM every running process (a clean stop), up to 20 s for them to exit, then
        SIGKILL whatever is left of their sessions (sandbox processes included)."""
        with self._lock:
            running = [p.popen for p in self._processes.values() if p.popen is not None]
            running = [popen for popen in running if popen.returncode is None]
            for popen in running:
                popen.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not all(_exited(p.pid) for p in running):
                time.sleep(0.05)
            for popen in running:
                # Not reaped yet, the leader keeps its session's id from being reused.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)
                popen.wait(10)


def _exited(pid: int) -> bool:
    """Whether our child ``pid`` has exited, without reaping it."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
