"""Usage metering: what each tenant used, committed with what it counts, exact across kill -9.

Two tenants run known workloads on a real `treadle serve`, killed with SIGKILL while they run;
each tenant's usage must then equal what its committed records say happened: instances
created, step results, attempts, egress requests and bytes, and its storage to the byte.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from bench._processes import TreadleProcess
from bench._server import ADMIN_TOKEN, tenant_client
from storage import Database
from tests.integration.slow_server import SlowServer

ALPHA = """
from treadle import WorkflowEntrypoint

class Metered(WorkflowEntrypoint):
    def run(self, event, step):
        def burn():
            n = 0
            for k in range(300000):
                n += k % 7
            return n
        step.do("burn", burn)

        def flaky(ctx):
            if ctx.attempt == 1:
                raise ValueError("first attempt fails")
            return ctx.attempt
        step.do("flaky", flaky, retries={"limit": 2, "delay": "1 second"})

        def call():
            reply = self.env.fetch(event.payload["url"])
            return len(reply.text.encode())
        received = step.do("fetch", call)
        step.sleep("pause", "1 second")
        return received
"""

BETA = """
from treadle import WorkflowEntrypoint

class Plain(WorkflowEntrypoint):
    def run(self, event, step):
        a = step.do("a", lambda: 1)
        return step.do("b", lambda: a + 1)
"""


def _deploy(client: httpx.Client, name: str, source: str) -> None:
    reply = client.put(f"/v1/workflows/{name}", json={"source": source, "sandbox": "restricted"})
    assert reply.status_code == 201, reply.text


def _wait_all(client: httpx.Client, workflow: str, ids: list[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    for id_ in ids:
        while (status := client.get(f"/v1/workflows/{workflow}/instances/{id_}").json())[
            "status"
        ] != "complete":
            assert status["status"] not in ("errored", "terminated"), status
            assert time.monotonic() < deadline, status
            time.sleep(0.2)


def _recorded(url: str, tenant: str) -> dict[str, int]:
    """What the database says the tenant's committed records add up to."""
    db = Database(url)
    try:
        with db.connect() as conn:
            tenant_id = conn.execute(
                sa.text("SELECT id FROM tenants WHERE name = :n"), {"n": tenant}
            ).scalar_one()
            steps = conn.execute(
                sa.text(
                    "SELECT s.status, s.type, s.attempts FROM steps s"
                    " JOIN instances i ON i.pk = s.instance_pk WHERE i.tenant_id = :t"
                ),
                {"t": tenant_id},
            ).all()
            stored = conn.execute(
                sa.text("SELECT coalesce(sum(bytes), 0) FROM storage_usage WHERE tenant_id = :t"),
                {"t": tenant_id},
            ).scalar_one()
            created = conn.execute(
                sa.text("SELECT count(*) FROM instances WHERE tenant_id = :t"), {"t": tenant_id}
            ).scalar_one()
    finally:
        db.dispose()

    def attempts(raw: Any) -> int:
        return len(json.loads(raw) if isinstance(raw, str) else raw or [])

    return {
        "instances_created": int(created),
        "steps": sum(1 for status, _, _ in steps if status in ("complete", "errored")),
        "step_attempts": sum(attempts(a) for _, kind, a in steps if kind in ("do", "rollback")),
        "storage_bytes": int(stored),
    }


@pytest.mark.slow
def test_usage_is_exact_for_two_tenants_across_kill_9(
    crashable_server: TreadleProcess, database_url: str
) -> None:
    with (
        SlowServer().running() as slow,
        tenant_client(crashable_server.base, "alpha", egress_allow=["127.0.0.1"]) as alpha,
        tenant_client(crashable_server.base, "beta") as beta,
    ):
        _deploy(alpha, "metered", ALPHA)
        _deploy(beta, "plain", BETA)
        a_ids = [f"a{i}" for i in range(6)]
        b_ids = [f"b{i}" for i in range(5)]
        params = {"url": slow.url + "/sleep?s=0.3&tag=metered"}
        batch = {"instances": [{"id": i, "params": params} for i in a_ids]}
        assert not alpha.post("/v1/workflows/metered/instances/batch", json=batch).json()["errors"]
        for id_ in b_ids:
            assert beta.post("/v1/workflows/plain/instances", json={"id": id_}).status_code == 201
        # Kill the server while alpha's fetches are in flight, then at another moment.
        deadline = time.monotonic() + 60
        while slow.calls["metered"] == 0:
            assert time.monotonic() < deadline, "no fetch started"
            time.sleep(0.01)
        crashable_server.kill()
        crashable_server.start()
        time.sleep(0.8)
        crashable_server.kill()
        crashable_server.start()
        _wait_all(alpha, "metered", a_ids)
        _wait_all(beta, "plain", b_ids)

        received = [
            alpha.get(f"/v1/workflows/metered/instances/{i}").json()["output"] for i in a_ids
        ]
        usage_a = alpha.get("/v1/usage").json()
        usage_b = beta.get("/v1/usage").json()

    assert usage_a["tenant"] == "alpha" and usage_b["tenant"] == "beta"
    a, b = usage_a["totals"], usage_b["totals"]
    # Alpha: 6 instances of 4 steps (burn, flaky, fetch, the sleep); flaky took 2 attempts.
    assert _recorded(database_url, "alpha") == {
        "instances_created": 6,
        "steps": 24,
        "step_attempts": 6 * 4,
        "storage_bytes": a["storage_bytes"],
    }
    assert {k: a[k] for k in ("instances_created", "steps", "step_attempts")} == {
        "instances_created": 6,
        "steps": 24,
        "step_attempts": 24,
    }
    # Egress: one committed fetch per instance, counted once however often it was killed.
    assert a["egress_requests"] == 6
    assert a["egress_bytes"] == sum(received)
    assert a["storage_bytes"] > 0
    # The burn step's loop: tens of milliseconds of CPU per instance, in the sandbox worker.
    assert a["cpu_ms"] > 6 * 10, a
    assert a["wall_ms"] > 0
    assert b == {
        "instances_created": 5,
        "steps": 10,
        "step_attempts": 10,
        "cpu_ms": b["cpu_ms"],
        "wall_ms": b["wall_ms"],
        "egress_requests": 0,
        "egress_bytes": 0,
        "storage_bytes": _recorded(database_url, "beta")["storage_bytes"],
    }
    assert 0 < b["cpu_ms"] < a["cpu_ms"]
    # Hour by hour: the sums of the hours are the totals.
    for report in (usage_a, usage_b):
        assert report["hours"], report
        for field in ("instances_created", "steps", "step_attempts", "egress_requests"):
            assert sum(h[field] for h in report["hours"]) == report["totals"][field]
        assert report["hours"][-1]["storage_bytes"] == report["totals"]["storage_bytes"]


def test_usage_routes_answer_each_tenant_its_own_only(crashable_server: TreadleProcess) -> None:
    admin_headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with (
        tenant_client(crashable_server.base, "alpha") as alpha,
        tenant_client(crashable_server.base, "beta") as beta,
        httpx.Client(base_url=crashable_server.base, headers=admin_headers) as admin,
    ):
        _deploy(beta, "plain", BETA)
        assert beta.post("/v1/workflows/plain/instances", json={"id": "x"}).status_code == 201
        _wait_all(beta, "plain", ["x"])
        assert alpha.get("/v1/usage").json()["totals"]["instances_created"] == 0
        assert beta.get("/v1/usage").json()["totals"]["instances_created"] == 1
        # A tenant's key is no admin credential: another tenant's usage is not its to read.
        reply = alpha.get("/v1/admin/tenants/beta/usage")
        assert reply.status_code in (401, 403), reply.text
        assert admin.get("/v1/admin/tenants/beta/usage").json()["totals"]["steps"] == 2
        assert admin.get("/v1/admin/tenants/nobody/usage").status_code == 404
        # The operator's overview: every tenant, its instances by status, no stalled run.
        overview = admin.get("/v1/admin/overview").json()
        by_tenant = {t["tenant"]: t for t in overview["tenants"]}
        assert by_tenant["beta"] == {"tenant": "beta", "instances": {"complete": 1}, "stalled": 0}
        assert by_tenant["alpha"]["instances"] == {} and overview["stalled"] == []
        assert alpha.get("/v1/admin/overview").status_code in (401, 403)
        # Bad spans name their parameter; unknown parameters are refused.
        for query, word in (
            ({"from": "yesterday"}, "from"),
            ({"to": "2026-13-01T00:00:00Z"}, "to"),
            ({"from": "2026-12-02T00:00:00Z", "to": "2026-12-01T00:00:00Z"}, "from"),
            ({"from": "2024-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "366 days"),
            ({"since": "2026-12-01T00:00:00Z"}, "since"),
        ):
            reply = beta.get("/v1/usage", params=query)
            assert reply.status_code == 400, (query, reply.text)
            assert word in reply.text, (query, reply.text)
        # Times at the ends of what ISO 8601 can say, with offsets, are taken (within them).
        first = {"from": "0001-01-01T00:00:00+14:00", "to": "0001-01-02T00:00:00Z"}
        early = beta.get("/v1/usage", params=first)
        assert early.status_code == 200 and early.json()["from"].startswith("0001-01-01T00:00")
        far = beta.get("/v1/usage", params={"to": "9999-12-31T23:59:59-23:59"})
        assert far.status_code == 200 and far.json()["to"].startswith("9999-12-31T23:59:59")
        # An explicit span: the hour of the work is in it, the report says the span asked.
        span = {"from": "2000-01-01T00:00:00Z", "to": "2000-01-02T00:00:00Z"}
        empty = beta.get("/v1/usage", params=span).json()
        assert empty["hours"] == [] and empty["totals"]["steps"] == 0
        assert empty["from"].startswith("2000-01-01T00:00:00")
