"""Fan-out, sagas, bindings (egress, children) and limits, through the HTTP API (issue 3)."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from datetime import datetime

import pytest
from httpx import Client

from tests.integration.app import deploy, new_tenant, wait_status
from tests.integration.slow_server import SlowServer

FANOUT = """
import json
from treadle import WorkflowEntrypoint

class FanOut(WorkflowEntrypoint):
    def run(self, event, step):
        base = event.payload["base"]

        @step.do("left", concurrent=True)
        def left():
            print("left body")
            return self.env.fetch(base + "/sleep?s=1.5&tag=left").json()["tag"]

        @step.do("right", concurrent=True)
        def right():
            print("right body")
            return self.env.fetch(base + "/sleep?s=1.5&tag=right").json()["tag"]

        @step.do("join", depends=[left, right])
        def join(left, right):
            return left + "+" + right

        return join()
"""

SAGA = """
from treadle import WorkflowEntrypoint, NonRetryableError

class Saga(WorkflowEntrypoint):
    def run(self, event, step):
        def undo_reserve(ctx):
            print("undo reserve", ctx.output)
        def undo_charge(ctx):
            print("undo charge", ctx.output, ctx.error["message"])
        step.do("reserve", lambda: "r-1", rollback=undo_reserve)
        step.do("charge", lambda: "c-1", rollback=undo_charge)
        step.do("note", lambda: "no rollback")
        if event.payload and event.payload.get("wait"):
            step.wait_for_event("never", type="never", timeout="1 hour")
        def ship():
            raise NonRetryableError("no courier")
        step.do("ship", ship)
"""

PARENT = """
from treadle import WorkflowEntrypoint, StepError

class Parent(WorkflowEntrypoint):
    def run(self, event, step):
        child = self.env.workflows.create("child", params={"n": event.payload["n"]})
        try:
            got = child.result(timeout="1 minute")
        except StepError as e:
            got = "child failed: " + e.name + ": " + str(e)
        return {"child": child.id, "got": got}
"""

CHILD = """
from treadle import WorkflowEntrypoint

class Child(WorkflowEntrypoint):
    def run(self, event, step):
        n = step.do("square", lambda: event.payload["n"] ** 2)
        if n > 100:
            raise ValueError("too big")
        step.sleep("pause", 0.2)
        return n
"""


@pytest.fixture
def slow() -> Iterator[SlowServer]:
    with SlowServer().running() as server:
        yield server


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_concurrent_steps_run_in_parallel_and_join(client: Client, slow: SlowServer) -> None:
    headers = new_tenant(client, "fan", egress_allow=["127.0.0.1"])
    deploy(client, headers, "fan", FANOUT)
    base = "/v1/workflows/fan/instances"
    client.post(base, json={"id": "f1", "params": {"base": slow.url}}, headers=headers)
    done = wait_status(client, headers, f"{base}/f1", "complete")
    assert done["output"] == "left+right"
    steps = {s["name"]: s for s in done["steps"]}
    attempts = [steps[n]["attempts"][0] for n in ("left", "right")]
    wall = max(_ts(a["ended_at"]) for a in attempts) - min(_ts(a["started_at"]) for a in attempts)
    each = [_ts(a["ended_at"]) - _ts(a["started_at"]) for a in attempts]
    assert min(each) >= 1.45
    assert wall < 2.4, f"fan-out took {wall:.2f} s for two 1.5 s steps"
    assert slow.calls == {"left": 1, "right": 1}
    assert steps["join"]["output"] == "left+right"


def test_egress_outside_the_policy_or_outside_a_step_is_a_clear_error(
    client: Client, slow: SlowServer
) -> None:
    headers = new_tenant(client, "closed")  # egress_allow: []
    deploy(client, headers, "fan", FANOUT)
    base = "/v1/workflows/fan/instances"
    client.post(base, json={"id": "d1", "params": {"base": slow.url}}, headers=headers)
    failed = wait_status(client, headers, f"{base}/d1", "errored")
    assert "not allowed" in failed["error"]["message"]
    assert slow.calls == {}
    outside = """
    from treadle import WorkflowEntrypoint

    class Outside(WorkflowEntrypoint):
        def run(self, event, step):
            return self.env.fetch("http://127.0.0.1:1/").status
    """
    deploy(client, headers, "outside", outside)
    client.post("/v1/workflows/outside/instances", json={"id": "o1"}, headers=headers)
    bad = wait_status(client, headers, "/v1/workflows/outside/instances/o1", "errored")
    assert "inside a step" in bad["error"]["message"]


def test_a_failed_instance_rolls_back_completed_steps_in_reverse(client: Client) -> None:
    headers = new_tenant(client, "saga")
    deploy(client, headers, "saga", SAGA)
    base = "/v1/workflows/saga/instances"
    client.post(base, json={"id": "s1"}, headers=headers)
    done = wait_status(client, headers, f"{base}/s1", "errored")
    error = done["error"]
    assert (error["name"], error["message"]) == ("NonRetryableError", "no courier")
    assert done["rollback"] == {"outcome": "complete", "error": None}
    rollbacks = [s["name"] for s in done["steps"] if s["type"] == "rollback"]
    assert rollbacks == ["rollback:charge", "rollback:reserve"]
    logs = [x["message"] for x in client.get(f"{base}/s1/logs", headers=headers).json()["logs"]]
    assert logs == ["undo charge c-1 no courier", "undo reserve r-1"]


def test_terminate_with_rollback_runs_the_handlers(client: Client) -> None:
    headers = new_tenant(client, "saga2")
    deploy(client, headers, "saga", SAGA)
    base = "/v1/workflows/saga/instances"
    client.post(base, json={"id": "t1", "params": {"wait": True}}, headers=headers)
    wait_status(client, headers, f"{base}/t1", "waiting")
    reply = client.patch(
        f"{base}/t1/status", json={"status": "terminate", "rollback": True}, headers=headers
    )
    assert reply.status_code == 200, reply.text
    done = wait_status(client, headers, f"{base}/t1", "terminated")
    assert done["rollback"]["outcome"] == "complete"
    logs = [x["message"] for x in client.get(f"{base}/t1/logs", headers=headers).json()["logs"]]
    assert logs[-2:] == ["undo charge c-1 terminated with rollback", "undo reserve r-1"]


def test_a_parent_starts_a_child_once_and_gets_its_output(client: Client) -> None:
    headers = new_tenant(client, "family")
    deploy(client, headers, "parent", PARENT)
    deploy(client, headers, "child", CHILD)
    parents = "/v1/workflows/parent/instances"
    client.post(parents, json={"id": "p1", "params": {"n": 7}}, headers=headers)
    client.post(parents, json={"id": "p2", "params": {"n": 11}}, headers=headers)
    ok = wait_status(client, headers, f"{parents}/p1", "complete")
    assert ok["output"]["got"] == 49
    bad = wait_status(client, headers, f"{parents}/p2", "complete")
    assert bad["output"]["got"] == "child failed: ValueError: too big"
    children = client.get("/v1/workflows/child/instances", headers=headers).json()["instances"]
    assert collections.Counter(c["status"] for c in children) == {"complete": 1, "errored": 1}
    child = client.get(f"/v1/workflows/child/instances/{ok['output']['child']}", headers=headers)
    assert child.json()["output"] == 49


def test_a_child_of_another_tenant_cannot_be_started(client: Client) -> None:
    mine = new_tenant(client, "mine")
    theirs = new_tenant(client, "theirs")
    deploy(client, mine, "parent", PARENT)
    deploy(client, theirs, "child", CHILD)
    client.post(
        "/v1/workflows/parent/instances", json={"id": "p1", "params": {"n": 2}}, headers=mine
    )
    done = wait_status(client, mine, "/v1/workflows/parent/instances/p1", "errored")
    assert "not found" in done["error"]["message"]
    assert client.get("/v1/workflows/child/instances", headers=theirs).json()["instances"] == []


LIMITS = """
from treadle import WorkflowEntrypoint, StepError

class Limits(WorkflowEntrypoint):
    def run(self, event, step):
        kind = event.payload["kind"]
        if kind == "result":
            try:
                step.do("big", lambda: "x" * 5000)
            except StepError as e:
                return e.name
        if kind == "name":
            step.do("n" * 257, lambda: 1)
        if kind == "type":
            step.wait_for_event("w", type="bad.type")
        if kind == "steps":
            for i in range(10):
                step.do("s", lambda: i)
        return "ok"
"""


@pytest.mark.parametrize(
    ("kind", "status", "expect"),
    [
        ("result", "complete", "LimitExceeded"),
        ("name", "errored", "256"),
        ("type", "errored", "event type"),
        ("steps", "errored", "LimitExceeded"),
    ],
)
def test_limits_are_clear_errors_at_the_point_of_use(
    client: Client, kind: str, status: str, expect: str
) -> None:
    headers = new_tenant(client, "limits", max_step_result_bytes=1024, max_steps_per_instance=5)
    deploy(client, headers, "limits", LIMITS)
    base = "/v1/workflows/limits/instances"
    client.post(base, json={"id": "l1", "params": {"kind": kind}}, headers=headers)
    done = wait_status(client, headers, f"{base}/l1", status)
    shown = done["output"] if status == "complete" else str(done["error"])
    assert expect in shown, done
    if kind == "steps":
        assert len(done["steps"]) == 5  # nothing half-written past the limit


def test_a_child_with_the_longest_id_reports_back(client: Client) -> None:
    headers = new_tenant(client, "longid")
    parent = PARENT.replace(
        'create("child", params={"n": event.payload["n"]})',
        'create("child", params={"n": event.payload["n"]}, id="c" * 100)',
    )
    deploy(client, headers, "parent", parent)
    deploy(client, headers, "child", CHILD)
    client.post(
        "/v1/workflows/parent/instances", json={"id": "p", "params": {"n": 3}}, headers=headers
    )
    done = wait_status(client, headers, "/v1/workflows/parent/instances/p", "complete")
    assert done["output"] == {"child": "c" * 100, "got": 9}
