"""``/metrics`` against a known workload: every series of the platform, with the values the
workload implies, on SQLite and PostgreSQL; and a `treadle worker` beside `serve` on PostgreSQL
reporting its own share."""

from __future__ import annotations

import datetime as dt
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from bench._processes import TreadleProcess
from bench._server import ADMIN_TOKEN, tenant_client

SOURCE = """
from treadle import WorkflowEntrypoint

class Measured(WorkflowEntrypoint):
    def run(self, event, step):
        a = step.do("one", lambda: 1)

        def two(ctx):
            if event.payload["fail"] and ctx.attempt == 1:
                raise ValueError("the first attempt fails")
            return 2
        b = step.do("two", two, retries={"limit": 2, "delay": "1 second"})
        return step.do("three", lambda: a + b)
"""
SERIES = {
    "treadle_instances": "gauge",
    "treadle_step_attempts": "counter",
    "treadle_step_duration_seconds": "histogram",
    "treadle_replay_duration_seconds": "histogram",
    "treadle_queue_wait_seconds": "histogram",
    "treadle_timer_lateness_seconds": "histogram",
    "treadle_stalled_instances": "gauge",
    "treadle_sandbox_workers": "gauge",
    "treadle_http_requests": "counter",
    "treadle_http_request_duration_seconds": "histogram",
    "treadle_commits": "counter",
    "treadle_replays": "counter",
    "treadle_steps": "counter",
}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(url: str, headers: dict[str, str] | None = None) -> tuple[dict[str, str], Samples]:
    reply = httpx.get(url, headers=headers, timeout=10)
    assert reply.status_code == 200, reply.text
    types, samples = {}, {}
    for family in text_string_to_metric_families(reply.text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return types, samples


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _run_workload(base: str) -> None:
    with tenant_client(base, "acme") as client:
        reply = client.put("/v1/workflows/m", json={"source": SOURCE, "sandbox": "restricted"})
        assert reply.status_code == 201, reply.text
        for n in range(10):
            body = {"id": f"i{n}", "params": {"fail": n < 2}}
            assert client.post("/v1/workflows/m/instances", json=body).status_code == 201
        deadline = time.monotonic() + 90
        for n in range(10):
            while (got := client.get(f"/v1/workflows/m/instances/i{n}").json())[
                "status"
            ] != "complete":
                assert time.monotonic() < deadline, got
                time.sleep(0.1)


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[TreadleProcess]:
    srv = TreadleProcess(database_url, tmp_path)
    srv.start()
    yield srv
    srv.stop()


def test_every_series_with_the_values_of_a_known_workload(served: TreadleProcess) -> None:
    _run_workload(served.base)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    types, samples = _scrape(f"{served.base}/metrics", admin)
    assert {name: types.get(name) for name in SERIES} == SERIES
    who = {"tenant": "acme", "workflow": "m"}
    # 10 instances of 3 steps, 2 of which failed their first attempt of "two".
    assert _value(samples, "treadle_step_attempts_total", **who, outcome="success") == 30
    assert _value(samples, "treadle_step_attempts_total", **who, outcome="failure") == 2
    assert _value(samples, "treadle_step_duration_seconds_count", **who) == 32
    assert _value(samples, "treadle_instances", **who, status="complete") == 10
    assert _value(samples, "treadle_steps_total") == 30
    assert _value(samples, "treadle_stalled_instances") == 0
    # A replay per instance at least, and one more for each retry, which woke from a wait.
    replays = _value(samples, "treadle_replay_duration_seconds_count", sandbox="restricted")
    assert replays >= 12 and replays == _value(samples, "treadle_replays_total")
    assert _value(samples, "treadle_queue_wait_seconds_count", tenant="acme") == replays
    assert _value(samples, "treadle_timer_lateness_seconds_count") >= 2
    assert _value(samples, "treadle_sandbox_workers", sandbox="restricted") >= 1
    # The creates, by route template and status; every request is timed.
    creates = "/v1/workflows/{name}/instances"
    assert _value(samples, "treadle_http_requests_total", route=creates, status="201") == 10
    assert _value(samples, "treadle_http_request_duration_seconds_count", route=creates) >= 10
    assert _value(samples, "treadle_http_requests_total", route="/metrics", status="200") == 0
    # Label values are templates, never raw paths or ids.
    routes = {dict(labels).get("route") for (name, labels) in samples if "http" in name}
    assert not any(route and ("i1" in route or "acme" in route) for route in routes), routes
    # Without the admin token: 401, and it is counted under its template.
    assert httpx.get(f"{served.base}/metrics").status_code == 401
    _, after = _scrape(f"{served.base}/metrics", admin)
    assert _value(after, "treadle_http_requests_total", route="/metrics", status="401") == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_worker_beside_serve_reports_its_own_share(postgresql_url: str, tmp_path: Path) -> None:
    serve_port, worker_port = _free_port(), _free_port()
    env = {"TREADLE_METRICS_PORT": str(serve_port)}
    serve = TreadleProcess(postgresql_url, tmp_path, env=env)
    worker = TreadleProcess(
        postgresql_url, tmp_path, kind="worker", env={"TREADLE_METRICS_PORT": str(worker_port)}
    )
    serve.start()
    worker.start()
    try:
        _run_workload(serve.base)
        scraped = [
            _scrape(f"http://127.0.0.1:{port}/metrics")[1] for port in (serve_port, worker_port)
        ]
    finally:
        worker.stop()
        serve.stop()
    who = {"tenant": "acme", "workflow": "m"}
    for samples in scraped:  # both processes have the series; the database's gauges agree
        assert _value(samples, "treadle_instances", **who, status="complete") == 10
        assert ("treadle_commits_total", ()) in samples
    # Attempts are counted where they ran: together, the workload's.
    total = sum(
        _value(s, "treadle_step_attempts_total", **who, outcome=outcome)
        for s in scraped
        for outcome in ("success", "failure")
    )
    assert total == 32


def test_a_stalled_run_says_since_when_and_why(database_url: str) -> None:
    from tests.integration.engine_harness import Harness

    # A cap of 0 running instances: no process takes over an instance whose lease ran out.
    harness = Harness(database_url, running_cap=lambda tenant_id: 0)
    try:
        version = harness.deploy(
            """
            from treadle import WorkflowEntrypoint
            class W(WorkflowEntrypoint):
                def run(self, event, step):
                    return step.do("one", lambda: 1)
            """
        )
        harness.create(version, "stuck")
        harness.create(version, "queued")
        lease_ran_out = time.time() - 60
        with harness.db.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE instances SET status = 'running', due_at = :due WHERE id = 'stuck'"
                ),
                {"due": lease_ran_out},
            )
        stuck = harness.get("stuck")
        assert stuck["stalled"] is not None, stuck
        assert "lease ran out" in stuck["stalled"]["reason"]
        since = dt.datetime.fromisoformat(stuck["stalled"]["since"].replace("Z", "+00:00"))
        assert abs(since.timestamp() - lease_ran_out) < 0.01
        assert harness.get("queued")["stalled"] is None
        (stalled,) = harness.engine.stalled()
        assert (stalled.pk, stalled.id, stalled.since) == (
            _pk(harness, "stuck"),
            "stuck",
            lease_ran_out,
        )
        assert harness.engine.stalled_count() == 1
    finally:
        harness.close()


def _pk(harness: object, instance_id: str) -> int:
    db = harness.db  # type: ignore[attr-defined]
    with db.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT pk FROM instances WHERE id = :i"), {"i": instance_id}
            ).scalar_one()
        )


PAUSABLE = """
from treadle import WorkflowEntrypoint

class Slow(WorkflowEntrypoint):
    def run(self, event, step):
        def slow():
            n = 0
            for k in range(3000000):
                n += k % 3
            return n
        step.do("slow", slow)
        return step.do("after", lambda: 1)
"""


def test_json_logs_carry_the_tenant_and_the_instance(database_url: str, tmp_path: Path) -> None:
    server = TreadleProcess(database_url, tmp_path, env={"TREADLE_LOG_FORMAT": "json"})
    server.start()
    try:
        with tenant_client(server.base, "acme") as client:
            body = {"source": PAUSABLE, "sandbox": "restricted"}
            assert client.put("/v1/workflows/slow", json=body).status_code == 201
            assert client.post("/v1/workflows/slow/instances", json={"id": "p1"}).status_code == 201
            deadline = time.monotonic() + 30
            while client.get("/v1/workflows/slow/instances/p1").json()["status"] != "running":
                assert time.monotonic() < deadline
                time.sleep(0.02)
            reply = client.patch("/v1/workflows/slow/instances/p1/status", json={"status": "pause"})
            assert reply.status_code == 200, reply.text
            while client.get("/v1/workflows/slow/instances/p1").json()["status"] != "paused":
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        server.stop()
    lines = [json.loads(line) for line in server.log_path.read_text().splitlines() if line]
    assert lines and all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    assert any(line["logger"].startswith("uvicorn") for line in lines)  # uvicorn's too
    paused = [line for line in lines if "paused after its running step" in line["message"]]
    assert paused, [line["message"] for line in lines]
    assert paused[0]["tenant"] == "acme" and paused[0]["instance_id"] == "p1"
    assert len(paused[0]["trace_id"]) == 32
    assert paused[0]["level"] == "info" and paused[0]["ts"].endswith("+00:00")
