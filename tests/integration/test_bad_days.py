"""Bad days for the database, as an operator and the API's callers see them.

Real ``treadle serve`` and ``treadle worker`` processes on a PostgreSQL server of the tests'
own (:class:`~tests.pg_cluster.PostgresCluster`), stopped and started under them: started before
their database, they wait for it and say so; while it is down the API answers 503 with
``Retry-After``, never 500, and recovers without a restart; a process never holds more than
``TREADLE_DB_POOL_SIZE + 1`` connections, and a request that finds none free is told so.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest

from bench._server import free_port
from dispatcher import Settings
from tests.integration.app import ADMIN_TOKEN, SUM, deploy, new_tenant, wait_status
from tests.pg_cluster import PostgresCluster

_ENV = {k: v for k, v in os.environ.items() if not k.startswith("TREADLE_")}
WAITING = re.compile(r"waiting for the database at (\S+) \((.+)\); retrying in [\d.]+ s")
INSTANCES = "/v1/workflows/sum/instances"


class Treadle:
    """A ``treadle serve`` or ``treadle worker`` process; what it prints goes to a file."""

    def __init__(self, command: str, database_url: str, tmp: Path, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"{command}-{uuid.uuid4().hex[:6]}.log"
        args = [sys.executable, "-m", "dispatcher", command, "--database-url", database_url]
        if command == "serve":
            args += ["--port", str(self.port)]
        settings = {
            "TREADLE_ADMIN_TOKEN": ADMIN_TOKEN,
            "TREADLE_WORKERS": "4",
            "TREADLE_SANDBOX_PROCESSES": "2",
            **env,
        }
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                args, env={**_ENV, **settings}, stdout=out, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_line(self, pattern: re.Pattern[str] | str, timeout: float = 60) -> re.Match[str]:
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while (found := regex.search(self.output())) is None:
            assert self.proc.poll() is None, f"treadle exited early:\n{self.output()}"
            assert time.monotonic() < deadline, f"no {regex.pattern!r} in:\n{self.output()}"
            time.sleep(0.05)
        return found

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not _healthy(self.base):
            assert self.proc.poll() is None, f"treadle exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"not healthy in {timeout} s:\n{self.output()}"
            time.sleep(0.05)

    def stop(self) -> int:
        """SIGTERM, as a supervisor stops it; its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"treadle ignored SIGTERM:\n{self.output()}") from None
        return self.proc.returncode


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL server of this module's own: its tests stop and start it at will."""
    server = PostgresCluster()
    server.start()
    yield server
    server.destroy()


@pytest.fixture
def pg(cluster: PostgresCluster) -> Iterator[tuple[PostgresCluster, str, str]]:
    """The cluster (running), a fresh database on it, and that database's name."""
    if not cluster.running():
        cluster.start()
    name = f"bad_days_{uuid.uuid4().hex[:8]}"
    url = cluster.database(name)
    yield cluster, url, name
    if not cluster.running():  # a test that failed half-way may leave it stopped
        cluster.start()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[..., Treadle]]:
    """Start ``treadle`` processes; each is stopped at the end of the test."""
    started: list[Treadle] = []

    def start(command: str, database_url: str, **env: str) -> Treadle:
        started.append(Treadle(command, database_url, tmp_path, **env))
        return started[-1]

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait()


def _tenant(base: str) -> httpx.Client:
    """A client signed in as a new tenant that has the ``sum`` workflow."""
    with httpx.Client(base_url=base, timeout=30) as admin:
        headers = new_tenant(admin, f"t{uuid.uuid4().hex[:6]}")
        deploy(admin, headers, "sum", SUM)
    return httpx.Client(base_url=base, headers=headers, timeout=30)


def _nowhere() -> str:
    """A PostgreSQL URL where nothing listens (with a password, which must never be shown)."""
    return f"postgresql://treadle:s3cret@127.0.0.1:{free_port()}/treadle"


def _assert_unavailable(reply: httpx.Response, code: str = "database.unavailable") -> None:
    assert reply.status_code == 503, reply.text
    assert int(reply.headers["retry-after"]) >= 1, reply.headers
    error = reply.json()["error"]
    assert error["code"] == code and error["message"], reply.text


# -- start-up ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_serve_started_before_its_database_waits_for_it_then_serves(
    pg: tuple[PostgresCluster, str, str], processes: Callable[..., Treadle]
) -> None:
    cluster, url, _ = pg
    cluster.stop()
    serve = processes("serve", url)
    waiting = serve.wait_for_line(WAITING)
    assert waiting[1] == url and waiting[2] == "connection refused"
    cluster.start()
    # The next attempt comes within the backoff (still short this early), not after a restart.
    serve.wait_for_line("applying migration m0001", timeout=10)
    serve.wait_healthy()
    with _tenant(serve.base) as tenant:
        assert tenant.post(INSTANCES, json={"id": "i1", "params": {"x": 1}}).status_code == 201
        assert wait_status(tenant, {}, f"{INSTANCES}/i1", "complete")["output"]["a"] == 2
    assert serve.stop() == 0
    assert "Traceback" not in serve.output()


@pytest.mark.slow
def test_a_worker_started_before_its_database_waits_for_it_then_runs(
    pg: tuple[PostgresCluster, str, str], processes: Callable[..., Treadle]
) -> None:
    cluster, url, _ = pg
    cluster.stop()
    worker = processes("worker", url)
    worker.wait_for_line(WAITING)
    cluster.start()
    worker.wait_for_line("applying migration m0001", timeout=10)
    worker.wait_for_line("worker running")
    assert worker.stop() == 0  # it was still running: it stopped on the signal, cleanly
    assert "received SIGTERM; stopping" in worker.output()
    assert "Traceback" not in worker.output()


@pytest.mark.slow
def test_with_no_wait_allowed_serve_exits_at_once_with_one_clear_line(
    processes: Callable[..., Treadle],
) -> None:
    url = _nowhere()
    serve = processes("serve", url, TREADLE_DATABASE_WAIT_SECONDS="0")
    assert serve.proc.wait(60) == 1
    out = serve.output()
    errors = [line for line in out.splitlines() if line.startswith("treadle: error:")]
    masked = url.replace(":s3cret@", ":***@")
    assert errors == [
        f"treadle: error: the database at {masked} does not answer (connection refused)"
    ]
    assert "Traceback" not in out and "s3cret" not in out
    assert not WAITING.search(out)


@pytest.mark.slow
def test_a_bounded_wait_gives_up_and_a_signal_while_waiting_stops_quietly(
    processes: Callable[..., Treadle],
) -> None:
    bounded = processes("worker", _nowhere(), TREADLE_DATABASE_WAIT_SECONDS="1")
    stopped = processes("serve", _nowhere())
    assert bounded.proc.wait(60) == 1
    assert "gave up after 1 s (TREADLE_DATABASE_WAIT_SECONDS)" in bounded.output()
    assert len(WAITING.findall(bounded.output())) >= 1
    stopped.wait_for_line(WAITING)
    stopped.proc.send_signal(signal.SIGINT)
    assert stopped.proc.wait(10) == 0
    for process in (bounded, stopped):
        assert "Traceback" not in process.output() and "s3cret" not in process.output()


def test_the_help_states_the_real_default_of_workers() -> None:
    default = Settings.model_fields["workers"].default
    for command in ("serve", "worker"):
        shown = subprocess.run(
            [sys.executable, "-m", "dispatcher", command, "--help"],
            env=_ENV,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f"TREADLE_WORKERS, else {default})" in " ".join(shown.split()), shown


# -- an outage while serving -------------------------------------------------------------------


@pytest.mark.slow
def test_during_an_outage_the_api_answers_503_and_recovers_without_a_restart(
    pg: tuple[PostgresCluster, str, str], processes: Callable[..., Treadle]
) -> None:
    cluster, url, _ = pg
    serve = processes("serve", url)
    serve.wait_healthy()
    with _tenant(serve.base) as tenant:
        assert tenant.get("/v1/workflows").status_code == 200
        cluster.stop()
        for n in range(3):
            _assert_unavailable(tenant.get("/v1/workflows"))
            _assert_unavailable(tenant.post(INSTANCES, json={"id": f"down{n}"}))
            _assert_unavailable(tenant.get(f"{INSTANCES}/down{n}"))
            health = httpx.get(f"{serve.base}/healthz", timeout=10)
            assert health.status_code == 503 and health.json() == {"status": "unavailable"}
        cluster.start()
        serve.wait_healthy(timeout=30)
        # The pool recovered: every request succeeds, none needs a second try.
        for _ in range(20):
            assert tenant.get("/v1/workflows").status_code == 200
        assert tenant.post(INSTANCES, json={"id": "after", "params": {"x": 2}}).status_code == 201
        assert wait_status(tenant, {}, f"{INSTANCES}/after", "complete")["output"]["a"] == 3
    assert serve.stop() == 0
    assert "Exception in ASGI application" not in serve.output()  # no 500 was logged


# -- the connection budget ---------------------------------------------------------------------


class Connections:
    """Samples how many connections a database has, from a connection to another one."""

    def __init__(self, cluster: PostgresCluster, name: str) -> None:
        self._cluster, self._name = cluster, name
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Connections:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _sample(self) -> None:
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
        with psycopg.connect(self._cluster.url, autocommit=True) as conn:
            while not self._stop.wait(0.01):
                row = conn.execute(query, (self._name,)).fetchone()
                assert row is not None
                self.samples.append(int(row[0]))


@pytest.mark.slow
def test_a_process_never_holds_more_than_its_pool_and_one_session(
    pg: tuple[PostgresCluster, str, str], processes: Callable[..., Treadle]
) -> None:
    cluster, url, name = pg
    pool = 3
    with Connections(cluster, name) as connections:
        serve = processes(
            "serve", url, TREADLE_DB_POOL_SIZE=str(pool), TREADLE_DB_POOL_TIMEOUT="60"
        )
        serve.wait_healthy()
        with _tenant(serve.base) as tenant:
            batch = {"instances": [{"id": f"w{i}", "params": {"x": i}} for i in range(20)]}
            assert not tenant.post(f"{INSTANCES}/batch", json=batch).json()["errors"]

            def hammer(i: int) -> int:
                paths = ["/v1/workflows", INSTANCES, f"{INSTANCES}/w{i % 20}"]
                return tenant.get(paths[i % 3]).status_code

            with ThreadPoolExecutor(50) as pool_of_callers:
                statuses = list(pool_of_callers.map(hammer, range(200)))
            assert set(statuses) == {200}
            for i in range(20):
                wait_status(tenant, {}, f"{INSTANCES}/w{i}", "complete")
    assert max(connections.samples) <= pool + 1, max(connections.samples)
    assert max(connections.samples) >= 2  # the sampler did see this process
    assert serve.stop() == 0


@pytest.mark.slow
def test_a_request_that_gets_no_connection_in_time_is_told_the_database_is_busy(
    pg: tuple[PostgresCluster, str, str], processes: Callable[..., Treadle]
) -> None:
    _, url, _ = pg
    serve = processes("serve", url, TREADLE_DB_POOL_SIZE="1", TREADLE_DB_POOL_TIMEOUT="0.5")
    serve.wait_healthy()

    def timed(tenant: httpx.Client) -> tuple[httpx.Response, float]:
        started = time.monotonic()
        return tenant.get("/v1/workflows"), time.monotonic() - started

    # Every API request reads its key: with the key table locked, the one pooled connection
    # is stuck behind the lock, and the other requests wait for it in vain.
    with _tenant(serve.base) as tenant, psycopg.connect(url) as blocker:
        blocker.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        with ThreadPoolExecutor(4) as callers:
            pending = [callers.submit(timed, tenant) for _ in range(4)]
            deadline = time.monotonic() + 10
            while sum(f.done() for f in pending) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            while_locked = [f.result() for f in pending if f.done()]
            blocker.rollback()
            replies = [f.result(30)[0] for f in pending]
        assert len(while_locked) >= 3, "requests hung waiting for a connection"
        for reply, seconds in while_locked:
            _assert_unavailable(reply, code="database.busy")
            assert seconds < 5
        # The one that had the connection went on once the lock was gone, and so does the rest.
        statuses = sorted(reply.status_code for reply in replies)
        assert statuses in ([200, 503, 503, 503], [503] * 4), statuses
        assert tenant.get("/v1/workflows").status_code == 200
    assert serve.stop() == 0
