"""Real ``treadle serve`` and ``treadle worker`` processes, to be killed and started again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench._server import ADMIN_TOKEN, free_port


class TreadleProcess:
    """``treadle serve`` (``kind="serve"``, answering on ``base``) or ``treadle worker`` on
    ``database_url``; its output goes to ``<tmp>/<name>.log``. ``env`` adds to the
    environment (e.g. ``TREADLE_LEASE_SECONDS``)."""

    def __init__(
        self,
        database_url: str,
        tmp: Path,
        *,
        kind: str = "serve",
        name: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.database_url = database_url
        self.kind = kind
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"{name or kind}.log"
        self.log = open(self.log_path, "ab")
        self.env = {**os.environ, "TREADLE_ADMIN_TOKEN": ADMIN_TOKEN, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "dispatcher", self.kind]
        if self.kind == "serve":
            command += ["--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*command, "--database-url", self.database_url],
            env=self.env,
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
        )
        if self.kind == "serve":
            self.wait_healthy()
        else:
            self.wait_logged("worker running")

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            self._alive()
            time.sleep(0.05)
        raise AssertionError(f"treadle {self.kind} did not become healthy; see {self.log_path}")

    def wait_logged(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.log_path.read_bytes():
            assert time.monotonic() < deadline, f"{text!r} never logged; see {self.log_path}"
            self._alive()
            time.sleep(0.05)

    def _alive(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, (
            f"treadle {self.kind} exited: {self.log_path.read_text(errors='replace')[-3000:]}"
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """``kill -9``: no chance to clean up."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()
