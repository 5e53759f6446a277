"""Pause, resume, terminate, restart, delete and the live stream, through the HTTP API."""

from __future__ import annotations

import json
import threading
import time

import pytest
from httpx import Client, Response

from dispatcher import Platform
from tests.integration.app import deploy, new_tenant, wait_status

BASE = "/v1/workflows/flow/instances"

FLOW = """
from treadle import WorkflowEntrypoint

class Flow(WorkflowEntrypoint):
    def run(self, event, step):
        a = step.do("a", lambda: 1)
        step.sleep("nap", (event.payload or {}).get("nap", 1))
        got = step.wait_for_event("go", type="go", timeout="1 hour")
        def b():
            print("b runs")
            return a + got["payload"]
        return step.do("b", b)
"""

SLOW = """
from treadle import WorkflowEntrypoint

class Slow(WorkflowEntrypoint):
    def run(self, event, step):
        total = 0
        for i in range(6):
            def spin():
                n = 0
                for k in range(600000):
                    n += 1
                return 1
            total += step.do("spin", spin)
        return total
"""


@pytest.fixture
def acme(client: Client) -> dict[str, str]:
    headers = new_tenant(client, "acme", step_cpu_ms=5000)
    deploy(client, headers, "flow", FLOW)
    return headers


def _status(client: Client, headers: dict[str, str], id_: str, body: dict[str, object]) -> Response:
    return client.patch(f"{BASE}/{id_}/status", json=body, headers=headers)


def test_pause_stops_timers_and_resume_shifts_them(client: Client, acme: dict[str, str]) -> None:
    client.post(BASE, json={"id": "p1", "params": {"nap": 1}}, headers=acme)
    wait_status(client, acme, f"{BASE}/p1", "waiting")
    paused = _status(client, acme, "p1", {"status": "pause"})
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    time.sleep(1.5)  # the sleep would have ended by now
    assert client.get(f"{BASE}/p1", headers=acme).json()["status"] == "paused"
    again = _status(client, acme, "p1", {"status": "pause"})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "instance.invalid_transition"
    resumed = _status(client, acme, "p1", {"status": "resume"})
    assert resumed.json()["status"] == "waiting"
    nap = next(s for s in resumed.json()["steps"] if s["name"] == "nap")
    assert nap["status"] == "waiting"  # shifted by the paused time, not yet elapsed
    client.post(f"{BASE}/p1/events/go", json=2, headers=acme)
    done = wait_status(client, acme, f"{BASE}/p1", "complete")
    assert done["output"] == 3


def test_a_running_step_finishes_before_the_pause(client: Client) -> None:
    headers = new_tenant(client, "slow", step_cpu_ms=10000)
    deploy(client, headers, "slow", SLOW)
    base = "/v1/workflows/slow/instances"
    client.post(base, json={"id": "s1"}, headers=headers)
    wait_status(client, headers, f"{base}/s1", "running")
    reply = client.patch(f"{base}/s1/status", json={"status": "pause"}, headers=headers)
    assert reply.json()["status"] in ("waitingForPause", "paused", "complete")
    paused = wait_status(client, headers, f"{base}/s1", "paused", "complete")
    if paused["status"] == "paused":
        done_before = len(paused["steps"])
        time.sleep(0.5)
        assert len(client.get(f"{base}/s1", headers=headers).json()["steps"]) == done_before
        client.patch(f"{base}/s1/status", json={"status": "resume"}, headers=headers)
    done = wait_status(client, headers, f"{base}/s1", "complete")
    assert done["output"] == 6
    assert [s["count"] for s in done["steps"]] == [1, 2, 3, 4, 5, 6]


def test_terminate_is_final(client: Client, acme: dict[str, str]) -> None:
    client.post(BASE, json={"id": "t1"}, headers=acme)
    wait_status(client, acme, f"{BASE}/t1", "waiting")
    reply = _status(client, acme, "t1", {"status": "terminate"})
    assert reply.json()["status"] == "terminated"
    assert reply.json()["ended_at"]
    for action in ("pause", "resume", "terminate"):
        late = _status(client, acme, "t1", {"status": action})
        assert late.status_code == 409, action
    sent = client.post(f"{BASE}/t1/events/go", json=1, headers=acme)
    assert sent.status_code == 409


def test_restart_from_a_step_keeps_what_came_before(client: Client, acme: dict[str, str]) -> None:
    client.post(BASE, json={"id": "r1", "params": {"nap": 0}}, headers=acme)
    wait_status(client, acme, f"{BASE}/r1", "waiting")
    client.post(f"{BASE}/r1/events/go", json=10, headers=acme)
    first = wait_status(client, acme, f"{BASE}/r1", "complete")
    assert first["output"] == 11
    a_output = first["steps"][0]["output"]
    reply = _status(client, acme, "r1", {"status": "restart", "from": {"name": "b"}})
    assert reply.json()["status"] == "queued"
    again = wait_status(client, acme, f"{BASE}/r1", "complete")
    assert again["output"] == 11  # the consumed event was given back to the rerun step
    assert again["steps"][0]["output"] == a_output
    logs = client.get(f"{BASE}/r1/logs", headers=acme).json()["logs"]
    assert [x["message"] for x in logs] == ["b runs", "b runs"]
    missing = _status(client, acme, "r1", {"status": "restart", "from": {"name": "zz"}})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "instance.step_not_found"


def test_restart_from_the_beginning_and_delete(client: Client, acme: dict[str, str]) -> None:
    client.post(BASE, json={"id": "d1"}, headers=acme)
    wait_status(client, acme, f"{BASE}/d1", "waiting")
    assert _status(client, acme, "d1", {"status": "restart"}).json()["steps"] == []
    wait_status(client, acme, f"{BASE}/d1", "waiting")
    assert client.delete(f"{BASE}/d1", headers=acme).status_code == 204
    assert client.get(f"{BASE}/d1", headers=acme).status_code == 404
    assert client.delete(f"{BASE}/d1", headers=acme).status_code == 404


def test_bad_status_changes_are_clear_400s(client: Client, acme: dict[str, str]) -> None:
    client.post(BASE, json={"id": "b1"}, headers=acme)
    for body in (
        {"status": "explode"},
        {"status": "pause", "rollback": True},
        {"status": "pause", "from": {"name": "a"}},
        {},
    ):
        assert _status(client, acme, "b1", body).status_code == 400, body


def test_another_tenants_instance_cannot_be_changed(client: Client, acme: dict[str, str]) -> None:
    other = new_tenant(client, "other")
    deploy(client, other, "flow", FLOW)
    client.post(BASE, json={"id": "x1"}, headers=acme)
    assert _status(client, other, "x1", {"status": "terminate"}).status_code == 404
    assert client.delete(f"{BASE}/x1", headers=other).status_code == 404
    assert client.get(f"{BASE}/x1/stream", headers=other).status_code == 404


def _events(body: str) -> list[dict[str, object]]:
    events = []
    for block in body.split("\n\n"):
        data = [line[6:] for line in block.splitlines() if line.startswith("data: ")]
        if data:
            events.append(json.loads(data[0]))
    return events


def test_the_stream_replays_history_then_ends_when_finished(
    client: Client, acme: dict[str, str]
) -> None:
    client.post(BASE, json={"id": "s1", "params": {"nap": 0}}, headers=acme)
    wait_status(client, acme, f"{BASE}/s1", "waiting")
    client.post(f"{BASE}/s1/events/go", json=1, headers=acme)
    wait_status(client, acme, f"{BASE}/s1", "complete")
    with client.stream("GET", f"{BASE}/s1/stream", headers=acme) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = _events(reply.read().decode())
    kinds = [e["type"] for e in events]
    assert kinds[0] == "workflow.queued" and kinds[-1] == "workflow.complete"
    for expected in ("step.completed", "sleep.completed", "wait.started", "wait.completed", "log"):
        assert expected in kinds
    # A wait for an event names the type it waits for (the playground offers to send it).
    waits = [e["data"].get("event_type") for e in events if e["type"] == "workflow.waiting"]
    assert waits == ["go"]
    ids = [int(str(e["id"])) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # Resuming after the third event gives exactly the rest.
    resumed = client.get(f"{BASE}/s1/stream", headers={**acme, "Last-Event-ID": str(ids[2])}).text
    assert [e["id"] for e in _events(resumed)] == [e["id"] for e in events[3:]]


def test_the_stream_delivers_live_events(client: Client, acme: dict[str, str]) -> None:
    client.post(BASE, json={"id": "l1", "params": {"nap": 0}}, headers=acme)
    wait_status(client, acme, f"{BASE}/l1", "waiting")
    seen: list[str] = []
    with client.stream("GET", f"{BASE}/l1/stream", headers=acme) as reply:
        buffer = ""
        sent = False
        for chunk in reply.iter_text():
            buffer += chunk
            seen = [str(e["type"]) for e in _events(buffer)]
            if "wait.started" in seen and not sent:
                client.post(f"{BASE}/l1/events/go", json=5, headers=acme)
                sent = True
    assert seen[-1] == "workflow.complete"
    assert "wait.completed" in seen


def test_finished_instances_are_purged_after_the_retention(
    client: Client, acme: dict[str, str], platform: Platform
) -> None:
    client.post(BASE, json={"id": "old"}, headers=acme)
    wait_status(client, acme, f"{BASE}/old", "waiting")
    client.post(BASE, json={"id": "live"}, headers=acme)
    _status(client, acme, "old", {"status": "terminate"})
    assert platform.purge_expired() == 0  # finished just now: within the 7 days
    tenant_id = platform.tenants.tenant("acme").id
    assert platform.engine.purge_finished(tenant_id, retention_days=0) == 1
    assert client.get(f"{BASE}/old", headers=acme).status_code == 404
    assert client.get(f"{BASE}/live", headers=acme).status_code == 200


def test_an_event_over_the_policy_size_is_refused_and_nothing_is_kept(
    client: Client, platform: Platform
) -> None:
    headers = new_tenant(client, "tiny", max_step_result_bytes=1024)
    deploy(client, headers, "flow", FLOW)
    base = "/v1/workflows/flow/instances"
    client.post(base, json={"id": "e1", "params": {"nap": 0}}, headers=headers)
    wait_status(client, headers, f"{base}/e1", "waiting")
    big = client.post(f"{base}/e1/events/go", json="x" * 2000, headers=headers)
    assert big.status_code == 413
    assert big.json()["error"]["message"].startswith("event payload is")
    client.post(f"{base}/e1/events/go", json=1, headers=headers)
    assert wait_status(client, headers, f"{base}/e1", "complete")["output"] == 2


def test_resuming_at_the_latest_event_of_a_live_instance_sends_only_what_follows(
    client: Client, acme: dict[str, str], platform: Platform
) -> None:
    client.post(BASE, json={"id": "z1", "params": {"nap": 0}}, headers=acme)
    wait_status(client, acme, f"{BASE}/z1", "waiting")
    tenant_id = platform.tenants.tenant("acme").id
    so_far, _ = platform.engine.history(tenant_id, "flow", "z1")
    latest = so_far[-1]["pk"]
    seen: list[dict[str, object]] = []
    resume = {**acme, "Last-Event-ID": str(latest)}
    # Sent once the stream is open, so its first batch is empty.
    later = threading.Timer(0.6, lambda: client.post(f"{BASE}/z1/events/go", json=1, headers=acme))
    later.start()
    with client.stream("GET", f"{BASE}/z1/stream", headers=resume) as reply:
        buffer = ""
        for chunk in reply.iter_text():
            buffer += chunk
            seen = _events(buffer)
    later.join()
    ids = [int(str(e["id"])) for e in seen]
    assert ids and min(ids) > latest, ids
    assert seen[-1]["type"] == "workflow.complete"
