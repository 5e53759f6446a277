"""`kill -9` of `treadle serve` at arbitrary moments loses nothing and re-runs no completed step."""

from __future__ import annotations

import collections
import time

import httpx
import pytest

from bench._processes import TreadleProcess
from bench._server import tenant_client

SOURCE = """
from treadle import WorkflowEntrypoint

class Crunch(WorkflowEntrypoint):
    def run(self, event, step):
        total = 0
        for i in range(4):
            def work(ctx):
                print("body", ctx.step.name, ctx.step.count)
                n = 0
                for k in range(200000):
                    n += k % 7
                return n % 100 + i
            total += step.do("work", work)
            step.sleep("breathe", "1 second")
        got = step.wait_for_event("finish", type="finish", timeout="10 minutes")
        return {"total": total, "by": got["payload"]["by"]}
"""


def _client(base: str, **policy: object) -> httpx.Client:
    return tenant_client(base, "crash", **policy)


def _statuses(client: httpx.Client, n: int) -> list[str]:
    return [client.get(f"/v1/workflows/crunch/instances/c{i}").json()["status"] for i in range(n)]


@pytest.mark.slow
def test_sigkill_mid_workflow_loses_nothing(crashable_server: TreadleProcess) -> None:
    with _client(crashable_server.base) as client:
        _crash_and_recover(crashable_server, client)


def _crash_and_recover(crashable_server: TreadleProcess, client: httpx.Client) -> None:
    reply = client.put("/v1/workflows/crunch", json={"source": SOURCE, "sandbox": "restricted"})
    assert reply.status_code == 201, reply.text
    n = 12
    batch = {"instances": [{"id": f"c{i}"} for i in range(n)]}
    assert not client.post("/v1/workflows/crunch/instances/batch", json=batch).json()["errors"]
    # An event sent before the crash must survive it.
    client.post("/v1/workflows/crunch/instances/c0/events/finish", json={"by": "early"})

    for pause in (0.7, 1.9, 1.3):
        time.sleep(pause)  # let work happen, then crash at an arbitrary point
        crashable_server.kill()
        crashable_server.start()

    for i in range(1, n):
        client.post(f"/v1/workflows/crunch/instances/c{i}/events/finish", json={"by": f"b{i}"})
    deadline = time.monotonic() + 90
    while set(_statuses(client, n)) != {"complete"}:
        assert time.monotonic() < deadline, _statuses(client, n)
        time.sleep(0.2)

    for i in range(n):
        instance = client.get(f"/v1/workflows/crunch/instances/c{i}").json()
        assert instance["output"]["by"] == ("early" if i == 0 else f"b{i}")
        works = [s for s in instance["steps"] if s["name"] == "work"]
        assert [s["count"] for s in works] == [1, 2, 3, 4]
        assert instance["output"]["total"] == sum(s["output"] for s in works)
        # Each recorded step body ran exactly once as far as the durable record shows.
        logs = client.get(f"/v1/workflows/crunch/instances/c{i}/logs").json()["logs"]
        bodies = collections.Counter(x["message"] for x in logs)
        assert bodies == {f"body work {k}": 1 for k in range(1, 5)}, bodies


FANOUT = """
from treadle import WorkflowEntrypoint

class Fan(WorkflowEntrypoint):
    def run(self, event, step):
        base = event.payload["base"]

        def fetch(ctx):
            print("body", ctx.step.name)
            return self.env.fetch(base + "/sleep?s=1&tag=" + ctx.step.name).json()["tag"]

        @step.do("a", concurrent=True)
        def a(ctx):
            return fetch(ctx)

        @step.do("b", concurrent=True)
        def b(ctx):
            return fetch(ctx)

        @step.do("c", concurrent=True)
        def c(ctx):
            return fetch(ctx)

        @step.do("join", depends=[a, b, c])
        def join(a, b, c):
            return [a, b, c, "joined"]

        return join()
"""


UNDO = """
from treadle import WorkflowEntrypoint, NonRetryableError

class Undo(WorkflowEntrypoint):
    def run(self, event, step):
        base = event.payload["base"]
        for name in ("one", "two", "three"):
            def undo(ctx):
                print("undo", ctx.step.name)
                self.env.fetch(base + "/sleep?s=0.7&tag=undo-" + ctx.step.name)
            step.do(name, lambda: name, rollback=undo)
        def fail():
            raise NonRetryableError("boom")
        step.do("fail", fail)
"""


@pytest.mark.slow
def test_sigkill_during_a_fan_out_and_during_a_rollback(crashable_server: TreadleProcess) -> None:
    from tests.integration.slow_server import SlowServer

    with (
        SlowServer().running() as slow,
        _client(crashable_server.base, egress_allow=["127.0.0.1"]) as client,
    ):
        for name, source in (("fan", FANOUT), ("undo", UNDO)):
            body = {"source": source, "sandbox": "restricted"}
            reply = client.put(f"/v1/workflows/{name}", json=body)
            assert reply.status_code == 201, reply.text
        params = {"base": slow.url}
        for name in ("fan", "undo"):
            batch = {"instances": [{"id": f"{name}{i}", "params": params} for i in range(4)]}
            assert not client.post(f"/v1/workflows/{name}/instances/batch", json=batch).json()[
                "errors"
            ]
        # Crash while fan-out bodies are blocked in their fetches, then while rollback
        # handlers are, then once more at an arbitrary moment.
        for in_flight in ("a", "undo-three", None):
            deadline = time.monotonic() + 60
            while in_flight is not None and slow.calls[in_flight] == 0:
                assert time.monotonic() < deadline, slow.calls
                time.sleep(0.01)
            time.sleep(0.2)
            crashable_server.kill()
            crashable_server.start()
        for name, final in (("fan", "complete"), ("undo", "errored")):
            for i in range(4):
                path = f"/v1/workflows/{name}/instances/{name}{i}"
                deadline = time.monotonic() + 90
                while (instance := client.get(path).json())["status"] != final:
                    assert instance["status"] not in ("complete", "errored"), instance
                    assert time.monotonic() < deadline, instance
                    time.sleep(0.2)
                logs = collections.Counter(
                    x["message"] for x in client.get(path + "/logs").json()["logs"]
                )
                if name == "fan":
                    assert instance["output"] == ["a", "b", "c", "joined"]
                    assert logs == {"body a": 1, "body b": 1, "body c": 1}
                else:
                    assert instance["rollback"] == {"outcome": "complete", "error": None}
                    assert logs == {"undo three": 1, "undo two": 1, "undo one": 1}
