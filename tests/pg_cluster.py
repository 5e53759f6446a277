"""A PostgreSQL server of a test's own: started, stopped, crashed and restarted at will.

Tests of outages (a database down at start-up, restarted under load) cannot use the shared
server the other tests run on. This one lives in a temporary directory on a free loopback
port, with the binaries of Debian's ``postgresql`` package (``scripts/postgres`` installs it).
As root, it runs as the ``postgres`` user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from bench._server import free_port


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version)
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is None:
        raise RuntimeError("PostgreSQL's server binaries are missing: run scripts/postgres")
    return Path(pg_ctl).parent


def _version(path: str) -> int:
    return int(path.split("/")[4]) if path.split("/")[4].isdigit() else 0


class PostgresCluster:
    """One PostgreSQL server; ``url`` reaches its ``postgres`` database as user ``postgres``."""

    def __init__(self) -> None:
        self.port = free_port()
        self._bin = _bindir()
        self._root = Path(tempfile.mkdtemp(prefix="treadle-pg-"))
        self.data = self._root / "data"
        self.log = self._root / "server.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self._root, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def database(self, name: str) -> str:
        """Create database ``name``; its URL."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories=''"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``immediate`` is a crash: no checkpoint, recovery at the next start."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart_immediately(self) -> None:
        """Crash the server and start it again at once."""
        self.stop("immediate")
        self.start()

    def running(self) -> bool:
        try:
            with psycopg.connect(self.url, connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.running():
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not come up; see {self.log}")
            time.sleep(0.1)

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop", check=False)
        shutil.rmtree(self._root, ignore_errors=True)

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        command = [str(self._bin / tool), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stdout}{done.stderr}")
