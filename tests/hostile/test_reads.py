"""Reads under pressure: another tenant's reads and the engine's commits never wait for them.

On SQLite, reads run in deferred transactions under WAL: they take no lock that a writer or
another reader waits for. (They used to begin with ``BEGIN IMMEDIATE``, so every read, and
every authentication, queued for the one write lock behind the others and behind commits.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import sqlalchemy as sa
from httpx import Client

from storage import Database, tables
from tests.hostile.server import Victim, assert_quiet_log, assert_unharmed, report, serve
from tests.integration.app import APPROVAL, SUM, deploy, new_tenant, wait_status

if TYPE_CHECKING:
    from dispatcher import Platform

STEPS = """
from treadle import WorkflowEntrypoint

class Steps(WorkflowEntrypoint):
    def run(self, event, step):
        return sum(step.do(f"s{i}", lambda: i) for i in range(event.payload["n"]))
"""
BIG = "/v1/workflows/approval/instances/big"


@contextmanager
def _write_held_open(platform: Platform) -> Iterator[None]:
    """A write transaction that stays open (it holds SQLite's write lock) for the block."""
    held, release = threading.Event(), threading.Event()

    def write() -> None:
        with platform.db.begin() as conn:
            values = {"id": "held", "secret_hash": "x", "created_at": 0.0}
            conn.execute(tables.admin_tokens.insert().values(**values))
            held.set()
            release.wait(30)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert held.wait(10)
        yield
    finally:
        release.set()
        writer.join()


def _timed_get(client: Client, path: str, headers: dict[str, str]) -> float:
    started = time.monotonic()
    reply = client.get(path, headers=headers)
    assert reply.status_code == 200, reply.text
    return time.monotonic() - started


def test_reads_and_sign_ins_do_not_wait_for_an_open_write(
    client: Client, platform: Platform
) -> None:
    acme = new_tenant(client, "acme")
    deploy(client, acme, "sum", SUM)
    assert client.post("/v1/workflows/sum/instances", json={"id": "i1", "params": {"x": 1}},
                       headers=acme).status_code == 201  # fmt: skip
    wait_status(client, acme, "/v1/workflows/sum/instances/i1", "complete")
    # The key's use was recorded at its first request; for a minute now it is only read.
    with _write_held_open(platform):
        latencies = []
        until = time.monotonic() + 2.0
        while time.monotonic() < until:
            latencies.append(_timed_get(client, "/v1/workflows", acme))
            latencies.append(_timed_get(client, "/v1/workflows/sum/instances/i1", acme))
    assert max(latencies) < 0.5, latencies


def test_a_storm_of_heavy_reads_holds_up_neither_another_tenant_nor_the_engine(
    client: Client, platform: Platform
) -> None:
    acme = new_tenant(client, "acme")
    deploy(client, acme, "approval", APPROVAL)
    assert client.post("/v1/workflows/approval/instances", json={"id": "big"},
                       headers=acme).status_code == 201  # fmt: skip
    wait_status(client, acme, BIG, "waiting")
    _record_steps(platform, "big", 300)
    globex = new_tenant(client, "globex")
    deploy(client, globex, "steps", STEPS)
    _timed_get(client, "/v1/workflows", globex)  # its key's first use, recorded

    stop = threading.Event()

    def storm() -> int:
        reads = 0
        while not stop.is_set():
            reply = client.get(BIG, headers=acme)
            assert reply.status_code == 200, reply.text
            assert len(reply.json()["steps"]) == 301
            reads += 1
        return reads

    with ThreadPoolExecutor(40) as readers:
        storms = [readers.submit(storm) for _ in range(40)]
        try:
            reply = client.post("/v1/workflows/steps/instances", json={"id": "s", "params":
                                {"n": 20}}, headers=globex)  # fmt: skip
            assert reply.status_code == 201, reply.text
            latencies = [_timed_get(client, "/v1/workflows", globex) for _ in range(10)]
            done = wait_status(client, globex, "/v1/workflows/steps/instances/s", "complete")
        finally:
            stop.set()
        reads = sum(s.result() for s in storms)
    assert max(latencies) < 1.0, latencies
    assert done["output"] == sum(range(20))
    assert reads >= 40


def _record_steps(platform: Platform, instance_id: str, count: int) -> None:
    """Give an instance ``count`` completed steps, as if it had run them."""
    _insert_steps(platform.db, instance_id, count)


def _insert_steps(database: Database, instance_id: str, count: int) -> None:
    instances, steps = tables.instances, tables.steps
    with database.begin() as conn:
        pk = conn.execute(sa.select(instances.c.pk).where(instances.c.id == instance_id)).scalar()
        attempt = {"started_at": 1.0, "ended_at": 2.0, "success": True, "error": None}
        rows = [
            {
                "instance_pk": pk,
                "name": f"step {n}",
                "count": 1,
                "seq": n,
                "type": "do",
                "status": "complete",
                "output": {"n": n, "text": "x" * 200},
                "error": None,
                "attempts": [attempt],
                "wake_at": None,
                "event_pk": None,
            }
            for n in range(1, count + 1)
        ]
        conn.execute(steps.insert(), rows)


def test_a_read_storm_against_a_real_server(database_url: str, tmp_path: Path) -> None:
    """40 readers of one large instance of the attacker, for as long as the victim probes."""
    with serve(database_url, tmp_path) as server:
        victim = Victim(server)
        before = victim.baseline()
        attacker = server.tenant("attacker")
        server.deploy(attacker, "approval", APPROVAL)
        reply = server.http.post("/v1/workflows/approval/instances", json={"id": "big"},
                                 headers=attacker)  # fmt: skip
        assert reply.status_code == 201, reply.text
        server.wait_status(attacker, BIG, ("waiting",))
        database = Database(database_url)
        try:
            _insert_steps(database, "big", 300)
        finally:
            database.dispose()
        stop = threading.Event()

        def storm() -> int:
            reads = 0
            with httpx.Client(base_url=server.base, timeout=60) as reader:
                while not stop.is_set():
                    got = reader.get(BIG, headers=attacker)
                    assert got.status_code in (200, 429), got.text
                    reads += 1
            return reads

        with ThreadPoolExecutor(40) as readers, victim.watching() as during:
            storms = [readers.submit(storm) for _ in range(40)]
            while len(during.runs) < 5 and not during.failures:
                time.sleep(0.1)
            stop.set()
            reads = sum(s.result() for s in storms)
        assert reads >= 40
        assert_unharmed(during, probes=5)
        report("40 readers of a 300-step instance", database_url, before, during)
        assert_quiet_log(server)
