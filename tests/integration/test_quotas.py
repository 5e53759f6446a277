"""Quotas (max_running_instances, max_queued_instances, creates_per_second) and fairness."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa
from httpx import Client

from dispatcher import Platform, create_app
from storage import tables
from tests.integration.app import (
    ADMIN,
    APPROVAL,
    SUM,
    deploy,
    new_tenant,
    served,
    settings,
    wait_for,
    wait_status,
)
from tests.integration.slow_server import SlowServer

GATED = """
from treadle import WorkflowEntrypoint

class Gated(WorkflowEntrypoint):
    def run(self, event, step):
        step.do("call", lambda: self.env.fetch(event.payload["url"]).json())
        return "done"
"""
BASE = "/v1/workflows/{}/instances"


def _statuses(client: Client, headers: dict[str, str], workflow: str) -> list[str]:
    reply = client.get(BASE.format(workflow), params={"limit": 1000}, headers=headers)
    return [i["status"] for i in reply.json()["instances"]]


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@contextlib.contextmanager
def _another_process(database_url: str, client: Client) -> Iterator[Client]:
    """On PostgreSQL, a second platform on the same database, as a second ``treadle serve``
    would be. One process owns a SQLite file: there, the one platform serves alone."""
    if database_url.startswith("sqlite"):
        yield client
        return
    second = Platform(settings(database_url))
    try:
        with served(create_app(second)) as other:
            yield other
    finally:
        second.close()


def _create_gated(
    client: Client, headers: dict[str, str], ids: list[str], url: str
) -> dict[str, Any]:
    batch = {"instances": [{"id": i, "params": {"url": url}} for i in ids]}
    reply = client.post(BASE.format("gated") + "/batch", json=batch, headers=headers)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def test_no_more_than_max_running_instances_run_at_once_across_workers(
    client: Client, database_url: str
) -> None:
    headers = new_tenant(client, "capped", max_running_instances=2, egress_allow=["127.0.0.1"])
    deploy(client, headers, "gated", GATED)
    with SlowServer().running() as slow, _another_process(database_url, client):
        ids = [f"g{i}" for i in range(10)]
        assert not _create_gated(client, headers, ids, f"{slow.url}/sleep?s=0.3&tag=g")["errors"]
        seen_running = 0
        deadline = time.monotonic() + 60
        while (statuses := _statuses(client, headers, "gated")).count("complete") < 10:
            assert statuses.count("running") <= 2, statuses
            seen_running = max(seen_running, statuses.count("running"))
            assert time.monotonic() < deadline, statuses
            time.sleep(0.02)
        assert seen_running == 2
        assert slow.calls["g"] == 10 and slow.peak["g"] == 2


def test_waiting_instances_take_no_slot(client: Client) -> None:
    headers = new_tenant(client, "single", max_running_instances=1)
    deploy(client, headers, "approval", APPROVAL)
    deploy(client, headers, "sum", SUM)
    client.post(BASE.format("approval"), json={"id": "a1"}, headers=headers)
    wait_status(client, headers, BASE.format("approval") + "/a1", "waiting")
    client.post(BASE.format("sum"), json={"id": "s1", "params": {"x": 1}}, headers=headers)
    assert wait_status(client, headers, BASE.format("sum") + "/s1", "complete")["output"]["a"] == 2
    sent = client.post(
        BASE.format("approval") + "/a1/events/approved", json={"by": "ann"}, headers=headers
    )
    assert sent.status_code == 202
    done = wait_status(client, headers, BASE.format("approval") + "/a1", "complete")
    assert done["output"] == {"by": "ann"}


def test_a_tenant_at_its_cap_does_not_hold_up_others(client: Client) -> None:
    capped = new_tenant(client, "full", max_running_instances=1, egress_allow=["127.0.0.1"])
    other = new_tenant(client, "free")
    deploy(client, capped, "gated", GATED)
    deploy(client, other, "sum", SUM)
    with SlowServer().running() as slow:
        _create_gated(client, capped, ["f0", "f1", "f2"], f"{slow.url}/sleep?s=3")
        wait_for(
            lambda: {"s": sorted(_statuses(client, capped, "gated"))},
            lambda v: v["s"] == ["queued", "queued", "running"],
        )
        client.post(BASE.format("sum"), json={"id": "s1", "params": {"x": 1}}, headers=other)
        done = wait_status(client, other, BASE.format("sum") + "/s1", "complete")
        assert _ts(done["started_at"]) - _ts(done["created_at"]) < 1.0, done
        assert sorted(_statuses(client, capped, "gated")) == ["queued", "queued", "running"]


def test_raising_max_running_instances_applies_to_a_running_tenant(client: Client) -> None:
    headers = new_tenant(client, "growing", max_running_instances=1, egress_allow=["127.0.0.1"])
    deploy(client, headers, "gated", GATED)
    with SlowServer().running() as slow:
        _create_gated(client, headers, ["l0", "l1", "l2"], f"{slow.url}/sleep?s=5&tag=l")
        one_at_a_time = wait_for(
            lambda: {"s": sorted(_statuses(client, headers, "gated"))},
            lambda v: v["s"] == ["queued", "queued", "running"],
        )
        assert one_at_a_time
        patched = client.patch(
            "/v1/admin/tenants/growing/policy", json={"max_running_instances": 3}, headers=ADMIN
        )
        assert patched.status_code == 200, patched.text
        # Within the policy cache's second and a claim, while the first is still in its call:
        # as many as the tenant may have sandbox workers in this process (2, see ``settings``).
        all_running = wait_for(
            lambda: {"s": sorted(_statuses(client, headers, "gated"))},
            lambda v: v["s"] == ["queued", "running", "running"],
            timeout=4,
        )
        assert all_running and slow.calls["l"] >= 1
        wait_for(
            lambda: {"s": _statuses(client, headers, "gated")},
            lambda v: v["s"] == ["complete"] * 3,
        )


def test_creates_beyond_max_queued_instances_are_refused_and_not_written(client: Client) -> None:
    headers = new_tenant(
        client,
        "queue",
        max_running_instances=1,
        max_queued_instances=3,
        egress_allow=["127.0.0.1"],
    )
    deploy(client, headers, "gated", GATED)
    base = BASE.format("gated")
    with SlowServer().running() as slow:
        url = f"{slow.url}/sleep?s=3"
        _create_gated(client, headers, ["blocker"], url)
        wait_status(client, headers, f"{base}/blocker", "running")  # it holds the only slot
        batch = _create_gated(client, headers, [f"q{i}" for i in range(5)], url)
        assert [c["id"] for c in batch["created"]] == ["q0", "q1", "q2"]
        assert [(e["index"], e["id"], e["code"]) for e in batch["errors"]] == [
            (3, "q3", "quota.queue_full"),
            (4, "q4", "quota.queue_full"),
        ]
        refused = client.post(base, json={"id": "q5", "params": {"url": url}}, headers=headers)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "quota.exceeded"
        assert "max_queued_instances" in refused.json()["error"]["message"]
        assert int(refused.headers["Retry-After"]) >= 1
        listed = client.get(base, headers=headers).json()["instances"]
        assert sorted(i["id"] for i in listed) == ["blocker", "q0", "q1", "q2"]
        for missing in ("q3", "q4", "q5"):
            assert client.get(f"{base}/{missing}", headers=headers).status_code == 404
        # As the queue drains, creates are admitted again.
        deadline = time.monotonic() + 30
        while (
            client.post(
                base, json={"id": "q5", "params": {"url": url}}, headers=headers
            ).status_code
            == 429
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert client.get(f"{base}/q5", headers=headers).json()["status"] in ("queued", "running")


# It must send faster than the rate: on a machine shared with other tests it may not.
@pytest.mark.serial
def test_the_rate_is_shared_by_every_api_process(client: Client, database_url: str) -> None:
    headers = new_tenant(client, "rated", creates_per_second=20)
    deploy(client, headers, "sum", SUM)
    with _another_process(database_url, client) as other:
        started = time.monotonic()
        accepted = refused = 0
        # Until the bucket has clearly run dry (on a slow machine 1.5 s may hold fewer than
        # twenty requests, so the count of refusals ends the run, not the clock alone).
        for n in range(1000):
            api = client if n % 2 else other
            reply = api.post(
                BASE.format("sum"), json={"id": f"r{n}", "params": {"x": n}}, headers=headers
            )
            assert reply.status_code in (201, 429), reply.text
            accepted += reply.status_code == 201
            refused += reply.status_code == 429
            elapsed = time.monotonic() - started
            if (elapsed > 1.5 and refused >= 10) or elapsed > 20:
                break
    assert refused >= 10, (accepted, refused, elapsed)
    # One second's burst plus the refill: each process alone would have allowed about as much.
    assert 20 <= accepted <= 20 + 20 * elapsed + 1, (accepted, elapsed)


def _backlog(platform: Platform, tenant: str, version: str, count: int) -> None:
    """``count`` queued instances of ``tenant``'s "sum", all due a minute ago, inserted as
    rows (the create path would take minutes for 100,000 on a busy machine)."""
    tenant_id = platform.tenants.tenant(tenant).id
    due = time.time() - 60
    rows = [
        {
            "tenant_id": tenant_id,
            "workflow": "sum",
            "id": f"a{i}",
            "version": version,
            "status": "queued",
            "params": {"x": i},
            "created_at": due,
            "due_at": due + i * 1e-6,
            "epoch": 0,
        }
        for i in range(count)
    ]
    with platform.db.begin() as conn:
        conn.execute(tables.instances.insert(), rows)


def test_another_tenants_instance_starts_within_a_second_of_a_big_backlog(
    client: Client, platform: Platform
) -> None:
    a = new_tenant(client, "backlogged")
    b = new_tenant(client, "other")
    version = deploy(client, a, "sum", SUM)
    deploy(client, b, "sum", SUM)
    begun = time.monotonic()
    _backlog(platform, "backlogged", version, 100_000)
    print(f"backlog of 100,000 created in {time.monotonic() - begun:.1f} s")
    reply = client.post(BASE.format("sum"), json={"id": "b1", "params": {"x": 1}}, headers=b)
    assert reply.status_code == 201
    started = wait_status(client, b, BASE.format("sum") + "/b1", "running", "complete")
    waited = _ts(started["started_at"]) - _ts(started["created_at"])
    print(f"the other tenant's instance started {waited * 1000:.0f} ms after its create")
    assert waited < 1.0, started
    assert wait_status(client, b, BASE.format("sum") + "/b1", "complete")["output"]["a"] == 2
    with platform.db.connect() as conn:
        instances = tables.instances
        waiting = conn.execute(
            sa.select(sa.func.count()).where(instances.c.status == "queued")
        ).scalar_one()
    assert waiting > 90_000  # the backlog was still there all along
