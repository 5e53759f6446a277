"""`kill -9` of `treadle serve` in the middle of a bulk terminate of 100,000 instances: the
server started again goes on from the last committed batch, and the counts come out exact
(every instance terminated once, none counted twice, none lost)."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from bench._processes import TreadleProcess
from bench._server import tenant_client
from storage import Database

N = 100_000
WAIT = """
from treadle import WorkflowEntrypoint

class Wait(WorkflowEntrypoint):
    def run(self, event, step):
        return step.wait_for_event("go", type="go", timeout="1 hour")
"""


def _insert(database_url: str, tenant: str, workflow: str, version: str, n: int) -> None:
    """``n`` paused instances (``p0`` ...) of the workflow, in one statement: nothing runs them
    meanwhile, and terminate takes paused instances as any live ones."""
    if database_url.startswith("sqlite"):
        numbers = (
            "WITH RECURSIVE seq(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM seq WHERE n < :last) "
        )
        source = "seq"
        ident = "'p' || n"
    else:
        numbers = ""
        source = "generate_series(0, :last) AS seq(n)"
        ident = "'p' || n::text"
    statement = sa.text(
        f"{numbers}INSERT INTO instances (tenant_id, workflow, id, version, status, created_at, "
        "paused_at, epoch, stored_bytes, log_bytes, priority) "
        f"SELECT t.id, :workflow, {ident}, :version, 'paused', :now, :now, 0, 0, 0, 5 "
        f"FROM {source}, tenants t WHERE t.name = :tenant"
    )
    db = Database(database_url)
    try:
        with db.begin() as conn:
            params = {"last": n - 1, "workflow": workflow, "version": version}
            conn.execute(statement, {**params, "now": time.time(), "tenant": tenant})
    finally:
        db.dispose()


def _terminated(database_url: str, workflow: str) -> int:
    db = Database(database_url)
    try:
        with db.connect() as conn:
            where = "workflow = :w AND status = 'terminated'"
            query = sa.text(f"SELECT count(*) FROM instances WHERE {where}")
            return int(conn.execute(query, {"w": workflow}).scalar() or 0)
    finally:
        db.dispose()


@pytest.mark.slow
def test_sigkill_mid_bulk_counts_exactly(
    crashable_server: TreadleProcess, database_url: str
) -> None:
    began = time.monotonic()
    with tenant_client(crashable_server.base, "crash") as client:
        reply = client.put("/v1/workflows/w", json={"source": WAIT, "sandbox": "restricted"})
        assert reply.status_code == 201, reply.text
        _insert(database_url, "crash", "w", reply.json()["version"], N)
        inserted = time.monotonic()

        reply = client.post(
            "/v1/instances/bulk", json={"filter": {"workflow": "w"}, "action": "terminate"}
        )
        assert reply.status_code == 202, reply.text
        started = reply.json()
        assert started["matched"] == N
        path = f"/v1/instances/bulk/{started['job']}"

        deadline = time.monotonic() + 120
        while True:
            job = client.get(path).json()
            assert job["status"] == "running", job
            if job["done"] >= N // 5:
                break
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        assert job["done"] <= 4 * N // 5, f"too fast to kill in the middle: {job}"
        crashable_server.kill()
        killed_at = job["done"]
        crashable_server.start()

        deadline = time.monotonic() + 120
        while (job := client.get(path).json())["status"] == "running":
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        ended = time.monotonic()

    assert job["status"] == "done", job
    assert (job["matched"], job["done"], job["failed"]) == (N, N, 0), job
    assert job["done"] + job["failed"] == job["matched"]
    assert _terminated(database_url, "w") == N
    print(
        f"\nbulk terminate of {N}: insert {inserted - began:.1f} s, killed at {killed_at}, "
        f"job {ended - inserted:.1f} s"
    )
