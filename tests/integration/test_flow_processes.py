"""Per-key flow control across processes (docs/flow-control.md): two ``treadle serve``
processes and a ``treadle worker`` on one PostgreSQL database, driven over HTTP.

The key's limits live in the database, so they hold whichever process claims: 20 instances of
one key with ``concurrency_per_key: 2`` never have more than 2 started and unfinished (sampled
from the database throughout) while another key's instance starts within a second. Creates
racing through both API processes at once still leave one pending instance per debounced key
and one live instance per singleton key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from bench._processes import TreadleProcess
from bench._server import tenant_client

pytestmark = pytest.mark.slow

NAP = """
from treadle import WorkflowEntrypoint

class Nap(WorkflowEntrypoint):
    def run(self, event, step):
        step.sleep("nap", (event.payload or {}).get("nap", 0))
        return event.payload
"""


class _Cluster:
    def __init__(self, url: str, tmp: Path) -> None:
        self.url = url
        self.processes = [
            TreadleProcess(url, tmp, name="serve-a"),
            TreadleProcess(url, tmp, name="serve-b"),
            TreadleProcess(url, tmp, kind="worker"),
        ]
        for process in self.processes:
            process.start()
        self.a = tenant_client(self.processes[0].base, creates_per_second=1000)
        key = self.a.headers["Authorization"]
        self.b = httpx.Client(
            base_url=self.processes[1].base, headers={"Authorization": key}, timeout=60
        )

    def close(self) -> None:
        self.a.close()
        self.b.close()
        for process in self.processes:
            process.stop()


@pytest.fixture
def cluster(postgresql_url: str, tmp_path: Path) -> Iterator[_Cluster]:
    running = _Cluster(postgresql_url, tmp_path)
    yield running
    running.close()


def _deploy(client: httpx.Client, name: str, flow: dict[str, Any]) -> None:
    body = {"source": NAP, "sandbox": "restricted", "flow": flow}
    reply = client.put(f"/v1/workflows/{name}", json=body)
    assert reply.status_code in (200, 201), reply.text


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _until_complete(client: httpx.Client, name: str, ids: list[str], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for instance_id in ids:
        while client.get(f"/v1/workflows/{name}/instances/{instance_id}").json()["status"] != (
            "complete"
        ):
            assert time.monotonic() < deadline, f"{instance_id} not complete in {seconds} s"
            time.sleep(0.05)


def test_a_keys_concurrency_holds_across_processes(cluster: _Cluster) -> None:
    _deploy(cluster.a, "nap", {"concurrency_per_key": 2})
    most, samples, done = [0], [0], threading.Event()

    def sample() -> None:
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            while not done.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM instances WHERE flow_key = 'hot'"
                    " AND status IN ('running', 'waiting', 'waitingForPause')"
                ).fetchone()
                assert row is not None
                most[0] = max(most[0], int(row[0]))
                samples[0] += 1
                time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    hot = [{"id": f"hot-{n}", "params": {"nap": 0.2}, "key": "hot"} for n in range(20)]
    for client, half in ((cluster.a, hot[:10]), (cluster.b, hot[10:])):
        reply = client.post("/v1/workflows/nap/instances/batch", json={"instances": half})
        assert reply.status_code == 200 and not reply.json()["errors"], reply.text
    time.sleep(0.5)
    asked = time.time()
    reply = cluster.b.post("/v1/workflows/nap/instances", json={"id": "cold", "key": "cold"})
    assert reply.status_code == 201, reply.text
    _until_complete(cluster.a, "nap", ["cold"], 10)
    cold = cluster.a.get("/v1/workflows/nap/instances/cold").json()
    assert _ts(cold["started_at"]) - asked < 1.0, cold
    _until_complete(cluster.a, "nap", [h["id"] for h in hot], 60)
    done.set()
    sampler.join()
    assert samples[0] > 100
    assert most[0] == 2


def test_racing_creates_through_two_processes_keep_one_instance_per_key(
    cluster: _Cluster,
) -> None:
    _deploy(cluster.a, "single", {"singleton": True})
    _deploy(cluster.a, "bounce", {"debounce": "2 seconds"})

    def create(n: int, workflow: str) -> httpx.Response:
        client = cluster.a if n % 2 else cluster.b
        body = {"id": f"{workflow}-{n}", "params": {"n": n, "nap": 1}, "key": "k"}
        return client.post(f"/v1/workflows/{workflow}/instances", json=body)

    with ThreadPoolExecutor(16) as pool:
        singles = list(pool.map(lambda n: create(n, "single"), range(16)))
        bounces = list(pool.map(lambda n: create(n, "bounce"), range(16)))
    created = [r.json()["id"] for r in singles if r.status_code == 201]
    assert len(created) == 1, [r.text for r in singles]
    refused = [r.json()["error"] for r in singles if r.status_code == 409]
    assert len(refused) == 15
    assert {e["code"] for e in refused} == {"instance.singleton"}
    assert all(created[0] in e["message"] for e in refused), refused
    assert {r.status_code for r in bounces} == {201}, [r.text for r in bounces]
    survivors = {r.json()["id"] for r in bounces}
    assert len(survivors) == 1, survivors
    with psycopg.connect(cluster.url) as conn:
        rows = conn.execute(
            "SELECT workflow, count(*) FROM instances GROUP BY workflow ORDER BY workflow"
        ).fetchall()
    assert rows == [("bounce", 1), ("single", 1)]
    (survivor,) = survivors
    queued = cluster.a.get(f"/v1/workflows/bounce/instances/{survivor}").json()
    assert queued["status"] == "queued" and queued["waiting_reason"] == "debounce"
    assert queued["key"] == "k"
