"""Bulk actions over HTTP (docs/bulk.md) on SQLite and PostgreSQL: pause, resume, terminate,
restart and delete what a filter matches (tags, statuses, workflows), with exact counts;
instances outside the filter, created after the job or of another tenant untouched; bad input
refused with nothing written; another tenant's job out of reach."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from dispatcher import Platform
from storage import tables
from tests.integration.app import deploy, new_tenant, wait_for
from tests.integration.slow_server import SlowServer
from tests.integration.test_client_cli import Run, acme, config_file, treadle
from treadle import AsyncClient, Client
from treadle.client import BulkJob
from treadle.errors import InvalidInput

WAIT = """
from treadle import WorkflowEntrypoint

class Wait(WorkflowEntrypoint):
    def run(self, event, step):
        return step.wait_for_event("go", type="go", timeout="1 hour")
"""
BULK = "/v1/instances/bulk"
__all__ = ["acme", "config_file", "treadle"]  # the command line's fixtures, used here too


def _setup(client: httpx.Client, name: str) -> dict[str, str]:
    """A tenant with workflows ``wa`` and ``wb``, each with 3 instances tagged team=ml and
    2 tagged team=web, all waiting."""
    headers = new_tenant(client, name)
    for workflow in ("wa", "wb"):
        deploy(client, headers, workflow, WAIT)
        items = [
            {"id": f"{team}{i}", "tags": {"team": team}}
            for team, n in (("ml", 3), ("web", 2))
            for i in range(n)
        ]
        reply = client.post(
            f"/v1/workflows/{workflow}/instances/batch",
            json={"instances": items},
            headers=headers,
        )
        assert reply.status_code == 200 and not reply.json()["errors"], reply.text
    wait_for(lambda: _statuses(client, headers), lambda s: set(s.values()) == {"waiting"})
    return headers


IDS = [(w, i) for w in ("wa", "wb") for i in ("ml0", "ml1", "ml2", "web0", "web1")]


def _statuses(client: httpx.Client, headers: dict[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for workflow, instance_id in IDS:
        reply = client.get(f"/v1/workflows/{workflow}/instances/{instance_id}", headers=headers)
        found[f"{workflow}/{instance_id}"] = (
            reply.json()["status"] if reply.status_code == 200 else reply.status_code
        )
    return found


def _run(
    client: httpx.Client, headers: dict[str, str], action: str, flt: dict[str, Any]
) -> dict[str, Any]:
    reply = client.post(BULK, json={"filter": flt, "action": action}, headers=headers)
    assert reply.status_code == 202, reply.text
    started = reply.json()
    assert set(started) == {"job", "matched"}
    assert reply.headers["location"] == f"{BULK}/{started['job']}"
    job = wait_for(
        lambda: client.get(f"{BULK}/{started['job']}", headers=headers).json(),
        lambda j: j["status"] != "running",
    )
    assert job["status"] == "done", job
    assert job["matched"] == started["matched"] == job["done"] + job["failed"], job
    # The filter as stored: a single status as a list.
    stored = {**flt, "status": [flt["status"]]} if isinstance(flt.get("status"), str) else flt
    assert (job["action"], job["filter"]) == (action, stored)
    return job


def _ml(statuses: dict[str, Any], want: Any, other: Any) -> dict[str, Any]:
    return {k: (want if "/ml" in k else other) for k in statuses}


def test_bulk_actions_by_tag_and_status(client: httpx.Client) -> None:
    acme = _setup(client, "acme")
    other = _setup(client, "other")  # the same workflows, ids and tags: never touched

    ml = {"tags": {"team": "ml"}}
    job = _run(client, acme, "pause", ml)
    assert (job["matched"], job["done"], job["failed"]) == (6, 6, 0)
    assert job["failures"] == {} and job["ended_at"] is not None
    now = _statuses(client, acme)
    assert now == _ml(now, "paused", "waiting")
    assert set(_statuses(client, other).values()) == {"waiting"}

    job = _run(client, acme, "resume", ml)
    assert (job["matched"], job["done"], job["failed"]) == (6, 6, 0)
    assert set(_statuses(client, acme).values()) == {"waiting"}

    # Nothing paused: every resume fails, and says why; nothing changes.
    job = _run(client, acme, "resume", {"tags": {"team": "ml"}, "workflow": "wa"})
    assert (job["matched"], job["done"], job["failed"]) == (3, 0, 3)
    assert job["failures"] == {"instance.invalid_transition": 3}
    assert set(_statuses(client, acme).values()) == {"waiting"}

    # By status, one workflow.
    job = _run(client, acme, "terminate", {"workflow": "wa", "status": ["waiting"]})
    assert (job["matched"], job["done"], job["failed"]) == (5, 5, 0)
    now = _statuses(client, acme)
    assert now == {k: ("terminated" if k.startswith("wa/") else "waiting") for k in now}

    # Restart across workflows: the terminated ones and the waiting ones of team ml.
    job = _run(client, acme, "restart", {"status": ["terminated"]})
    assert (job["matched"], job["done"], job["failed"]) == (5, 5, 0)
    wait_for(lambda: _statuses(client, acme), lambda s: set(s.values()) == {"waiting"})

    job = _run(client, acme, "delete", {"tags": {"team": "web"}})
    assert (job["matched"], job["done"], job["failed"]) == (4, 4, 0)
    now = _statuses(client, acme)
    assert now == _ml(now, "waiting", 404)
    assert set(_statuses(client, other).values()) == {"waiting"}

    # A filter matching nothing is done at once.
    job = _run(client, acme, "terminate", {"status": "complete"})
    assert (job["matched"], job["done"], job["failed"]) == (0, 0, 0)

    listed = client.get(BULK, headers=acme).json()["jobs"]
    assert [j["action"] for j in listed][:2] == ["terminate", "delete"]
    assert len(listed) == 7 and client.get(BULK, headers=other).json() == {"jobs": []}


def test_bad_input_writes_nothing(client: httpx.Client, platform: Platform) -> None:
    acme = new_tenant(client, "acme")
    other = new_tenant(client, "other")
    deploy(client, other, "theirs", WAIT)
    deploy(client, acme, "wa", WAIT)
    bad = [
        ({"filter": {}, "action": "explode"}, 400),
        ({"filter": {"bogus": 1}, "action": "pause"}, 400),
        ({"filter": {"status": "sleeping"}, "action": "pause"}, 400),
        ({"filter": {"tags": {"team": 1}}, "action": "pause"}, 400),
        ({"filter": {"created_after": "yesterday"}, "action": "pause"}, 400),
        ({"filter": {}}, 400),
        ({"filter": [], "action": "pause"}, 400),
        ({"filter": {}, "action": "pause", "extra": True}, 400),
        ({"filter": {"workflow": "nope"}, "action": "pause"}, 404),
        ({"filter": {"workflow": "theirs"}, "action": "pause"}, 404),
    ]
    for body, status in bad:
        reply = client.post(BULK, json=body, headers=acme)
        assert reply.status_code == status, (body, reply.text)
        assert "code" in reply.json()["error"], reply.text
    assert client.post(BULK, content=b"{", headers=acme).status_code == 400
    with platform.db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.bulk_jobs)).scalar() == 0


def test_other_tenants_job_is_not_found(client: httpx.Client) -> None:
    acme = new_tenant(client, "acme")
    other = new_tenant(client, "other")
    deploy(client, acme, "wa", WAIT)
    started = client.post(BULK, json={"filter": {}, "action": "pause"}, headers=acme).json()
    assert started["matched"] == 0
    path = f"{BULK}/{started['job']}"
    assert client.get(path, headers=acme).status_code == 200
    for reply in (client.get(path, headers=other), client.delete(path, headers=other)):
        assert reply.status_code == 404 and reply.json()["error"]["code"] == "bulk.not_found"
    assert client.get(f"{BULK}/bj_nope", headers=acme).status_code == 404
    # A finished job cannot be canceled.
    assert client.delete(path, headers=acme).status_code == 409


def test_job_covers_only_what_existed(client: httpx.Client, platform: Platform) -> None:
    """Created while the job waits (the worker stopped): not counted, not touched. A
    canceled job stops where it was."""
    acme = _setup(client, "acme")
    worker = platform.engine.bulk.worker
    worker.stop()
    started = client.post(BULK, json={"filter": {}, "action": "terminate"}, headers=acme).json()
    assert started["matched"] == 10
    reply = client.post(
        "/v1/workflows/wa/instances", json={"id": "late", "tags": {"team": "ml"}}, headers=acme
    )
    assert reply.status_code == 201, reply.text
    while worker.work_once():
        pass
    job = client.get(f"{BULK}/{started['job']}", headers=acme).json()
    assert (job["status"], job["matched"], job["done"], job["failed"]) == ("done", 10, 10, 0)
    assert set(_statuses(client, acme).values()) == {"terminated"}
    late = client.get("/v1/workflows/wa/instances/late", headers=acme).json()
    assert late["status"] in ("queued", "running", "waiting")

    # Canceled before any batch: nothing done, and it stays so.
    started = client.post(
        BULK, json={"filter": {"status": "terminated"}, "action": "delete"}, headers=acme
    ).json()
    canceled = client.delete(f"{BULK}/{started['job']}", headers=acme)
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    assert not worker.work_once()
    job = client.get(f"{BULK}/{started['job']}", headers=acme).json()
    assert (job["status"], job["matched"], job["done"]) == ("canceled", 10, 0)
    assert set(_statuses(client, acme).values()) == {"terminated"}


def test_batches_resume_exactly_and_take_turns(client: httpx.Client, platform: Platform) -> None:
    """Small batches by hand: each commits its cursor with its counts, a second job gets a
    batch between two of the first, and the counts come out exact."""
    acme = _setup(client, "acme")
    other = _setup(client, "other")
    worker = platform.engine.bulk.worker
    worker.stop()
    store = worker.store
    first = client.post(BULK, json={"filter": {}, "action": "pause"}, headers=acme).json()
    second = client.post(BULK, json={"filter": {}, "action": "pause"}, headers=other).json()
    order = []
    now = platform.clock.now()
    while True:
        now += 1.0
        job = store.claim("tester", now, now + 30)
        if job is None:
            break
        order.append(job.tenant_id)
        assert store.run_batch(job, "tester", now, limit=3) is not None
        # Taken again with a stale cursor: nothing happens, nothing is counted twice.
        assert store.run_batch(job, "tester", now, limit=3) is None
    assert len(order) == 8 and order[:4] == [order[0], order[1]] * 2 and order[0] != order[1]
    for headers, started in ((acme, first), (other, second)):
        job = client.get(f"{BULK}/{started['job']}", headers=headers).json()
        assert (job["status"], job["matched"], job["done"], job["failed"]) == ("done", 10, 10, 0)
        assert set(_statuses(client, headers).values()) == {"paused"}


LONG = """
from treadle import WorkflowEntrypoint

class Long(WorkflowEntrypoint):
    def run(self, event, step):
        url = event.payload["url"] + "&tag=" + event.instance_id
        slept = step.do("long", lambda: self.env.fetch(url).json()["slept"])
        return {"slept": slept, "after": step.do("after", lambda: "done")}
"""


def _long_path(instance_id: str) -> str:
    return f"/v1/workflows/long/instances/{instance_id}"


def test_actions_on_instances_whose_step_is_running(client: httpx.Client) -> None:
    """Bodies in flight when their batch comes: a pause waits for the step to finish and keeps
    its result (it never runs again); a terminate fences it (its result is never recorded, and
    the instance stays terminated); a restart runs the instance again from the beginning. (Two
    tenants: a tenant runs at most two bodies at once here, ``sandbox_per_tenant``.)"""
    acme = new_tenant(client, "acme", egress_allow=["127.0.0.1"])
    beta = new_tenant(client, "beta", egress_allow=["127.0.0.1"])
    with SlowServer().running() as slow:
        plan = ((acme, "pause"), (acme, "terminate"), (beta, "restart"))
        for headers in (acme, beta):
            deploy(client, headers, "long", LONG)
            items = [
                {"id": name, "params": {"url": f"{slow.url}/sleep?s=2"}, "tags": {"do": name}}
                for owner, name in plan
                if owner is headers
            ]
            reply = client.post(
                "/v1/workflows/long/instances/batch", json={"instances": items}, headers=headers
            )
            assert reply.status_code == 200 and not reply.json()["errors"], reply.text
        wait_for(lambda: dict(slow.calls), lambda c: all(c.get(name) for _, name in plan))
        for headers, name in plan:
            job = _run(client, headers, name, {"tags": {"do": name}, "status": "running"})
            assert (job["matched"], job["done"], job["failed"]) == (1, 1, 0), job

        def get(headers: dict[str, str], instance_id: str) -> dict[str, Any]:
            return dict(client.get(_long_path(instance_id), headers=headers).json())

        paused = wait_for(lambda: get(acme, "pause"), lambda i: i["status"] == "paused")
        assert [(s["name"], s["status"]) for s in paused["steps"]] == [("long", "complete")]
        restarted = wait_for(lambda: get(beta, "restart"), lambda i: i["status"] == "complete")
        assert restarted["output"] == {"slept": 2.0, "after": "done"}
        assert slow.calls["restart"] == 2  # from the beginning: its body ran again
        # The terminated one's body has long returned: nothing of it was recorded.
        terminated = get(acme, "terminate")
        assert (terminated["status"], terminated["steps"]) == ("terminated", [])
        assert slow.calls["terminate"] == 1

        job = _run(client, acme, "resume", {"tags": {"do": "pause"}})
        assert (job["done"], job["failed"]) == (1, 0)
        done = wait_for(lambda: get(acme, "pause"), lambda i: i["status"] == "complete")
        assert done["output"] == {"slept": 2.0, "after": "done"}
        assert slow.calls["pause"] == 1  # the step ran once, across the pause
        assert get(acme, "terminate")["status"] == "terminated"


def test_sdk(client: httpx.Client) -> None:
    acme = _setup(client, "acme")
    with Client(str(client.base_url), api_key=acme["Authorization"][7:]) as sdk:
        started = sdk.bulk("pause", workflow="wb", tags={"team": "web"})
        assert started.matched == 2
        seen: list[int] = []
        job = sdk.wait_bulk(started.job, timeout=30, progress=lambda j: seen.append(j.done))
        assert (job.status, job.done, job.failed, job.finished) == ("done", 2, 0, True)
        assert sdk.bulk_job(started.job).done == 2 and seen[-1] == 2
        assert [j.job for j in sdk.bulk_jobs()] == [started.job]
        with pytest.raises(InvalidInput):
            sdk.bulk("explode")
    assert _statuses(client, acme)["wb/web0"] == "paused"

    async def resume() -> BulkJob:
        async with AsyncClient(str(client.base_url), api_key=acme["Authorization"][7:]) as sdk:
            started = await sdk.bulk("resume", status=["paused"])
            assert started.matched == 2
            return await sdk.wait_bulk(started.job, timeout=30)

    job = asyncio.run(resume())
    assert (job.status, job.done, job.failed) == ("done", 2, 0)
    assert set(_statuses(client, acme).values()) == {"waiting"}


def test_cli(acme: Run) -> None:
    for i in range(3):
        assert acme("run", "approval", "--id", f"a{i}", "--tag", f"n={i % 2}")[0] == 0
    wait_for(
        lambda: {"s": acme("instances", "list", "approval", "--status", "waiting", "--json")[1]},
        lambda got: len(json.loads(got["s"])["instances"]) == 3,
    )
    code, out, err = acme("instances", "bulk", "pause", "--workflow", "approval", "--tag", "n=0")
    assert code == 0, err
    assert out.startswith("bulk job bj_") and out.endswith(": 2 matched\n"), out
    job = out.split()[2].rstrip(":")
    code, out, err = acme("instances", "bulk-status", job, "--follow")
    assert code == 0, err
    lines = out.splitlines()
    assert "status:   done" in lines and "done:     2" in lines and "failed:   0" in lines, out
    assert "2/2 (100%), done 2, failed 0" in out  # a plain line: stderr is not a terminal
    code, out, err = acme("instances", "bulk", "resume", "--status", "paused", "--follow", "--json")
    assert code == 0, err
    found = json.loads(out)
    assert (found["status"], found["matched"], found["done"], found["failed"]) == (
        "done",
        2,
        2,
        0,
    )
    code, out, _ = acme("instances", "bulk-list", "--json")
    assert [j["action"] for j in json.loads(out)] == ["resume", "pause"]
    code, _, err = acme("instances", "bulk-status", "bj_nope")
    assert code == 2 and "[bulk.not_found]" in err
