"""The ``treadle`` command as a user runs it: real processes, real ports (docs/cli.md)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest

from storage import available_migrations
from tests.integration.app import SUM, bearer

pytestmark = pytest.mark.slow
_ENV = {k: v for k, v in os.environ.items() if not k.startswith("TREADLE_")}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _treadle(
    *args: str, stdout: int | None = None, stderr: int | None = None
) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "dispatcher", *args]
    return subprocess.Popen(command, env=_ENV, text=True, stdout=stdout, stderr=stderr)


@contextlib.contextmanager
def _serving(database_url: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = _free_port()
    args = ("serve", "--port", str(port), "--database-url", database_url, "--workers", "2")
    proc = _treadle(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, proc)
        yield base, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise


def _wait_healthy(base: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        if proc.poll() is not None:
            raise AssertionError(f"treadle serve exited: {proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError("treadle serve did not become healthy in 60 s")
        time.sleep(0.05)


def _banner(stream: IO[str]) -> str:
    """The first-start banner: printed (and flushed) before the server listened."""
    lines = [stream.readline()]
    while not lines[-1].startswith("=") or len(lines) < 2:
        lines.append(stream.readline())
        assert lines[-1], "".join(lines)
    return "".join(lines)


def test_serve_prints_credentials_once_and_serves_the_api(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'treadle.db'}"
    with _serving(url) as (base, proc):
        assert proc.stdout is not None
        banner = _banner(proc.stdout)
        admin_token = re.search(r"admin token:\s+(tdla_\S+)", banner)
        default_key = re.search(r"'default':\s+(tdl_\S+)", banner)
        assert admin_token and default_key, banner
        assert f"{base}/playground#key={default_key.group(1)}" in banner  # signs in the browser
        admin = bearer(admin_token.group(1))
        created = httpx.post(f"{base}/v1/admin/tenants", json={"name": "acme"}, headers=admin)
        assert created.status_code == 201, created.text
        key = bearer(default_key.group(1))
        upload = {"source": SUM, "sandbox": "restricted"}
        assert httpx.put(f"{base}/v1/workflows/sum", json=upload, headers=key).status_code == 201
        assert httpx.get(f"{base}/openapi.json").status_code == 200
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert "serving the API on http://127.0.0.1:" in err
    assert "tdla_" not in err and "tdl_" not in err  # secrets go to the terminal only

    with _serving(url) as (base, proc):
        assert httpx.get(f"{base}/v1/admin/tenants", headers=admin).status_code == 200
    out, err = proc.communicate()
    assert "tdla_" not in out and "printed when this database was first served" in err


def test_serve_with_a_configured_admin_token_prints_no_credentials(tmp_path: Path) -> None:
    port = _free_port()
    env = {**_ENV, "TREADLE_ADMIN_TOKEN": "chosen-token"}
    url = f"sqlite:///{tmp_path / 'treadle.db'}"
    command = [sys.executable, "-m", "dispatcher", "serve", "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--database-url", url], env=env, text=True, stdout=subprocess.PIPE
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_healthy(base, proc)
        reply = httpx.get(f"{base}/v1/admin/tenants", headers=bearer("chosen-token"))
        assert reply.status_code == 200 and reply.json() == {"tenants": []}
        assert httpx.get(f"{base}/metrics").status_code == 401
        assert httpx.get(f"{base}/metrics", headers=bearer("chosen-token")).status_code == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "tdla_" not in out


def test_migrate_reports_its_progress(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'treadle.db'}"
    first = _treadle("migrate", "--database-url", url, stdout=subprocess.PIPE)
    out, _ = first.communicate(timeout=60)
    assert first.returncode == 0
    latest, _ = available_migrations()[-1]
    assert "applying migration m0001_initial" in out and f"schema version {latest}" in out
    again = _treadle("migrate", "--database-url", url, stdout=subprocess.PIPE)
    assert "already up to date" in again.communicate(timeout=60)[0]


def test_a_worker_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'treadle.db'}"
    proc = _treadle("worker", "--database-url", url, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    for line in proc.stderr:
        if "worker running" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest
    assert "received SIGTERM; stopping" in rest and "engine stopped" in rest


def test_a_worker_serves_its_metrics_on_the_metrics_port(tmp_path: Path) -> None:
    url, port = f"sqlite:///{tmp_path / 'treadle.db'}", _free_port()
    proc = _treadle(
        "worker", "--database-url", url, "--metrics-port", str(port), stderr=subprocess.PIPE
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    for line in proc.stderr:
        if "worker running" in line or time.monotonic() > deadline:
            break
    try:
        reply = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert reply.status_code == 200
        # An empty database: no instance series, but the process's own.
        assert "treadle_commits_total" in reply.text and "treadle_instances{" not in reply.text
        assert "# TYPE treadle_stalled_instances gauge" in reply.text
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest


def test_a_bad_database_url_is_a_clear_error(tmp_path: Path) -> None:
    proc = _treadle("migrate", "--database-url", "mysql://x/y", stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "unsupported database URL" in err
