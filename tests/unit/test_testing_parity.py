"""treadle.testing gives what the platform gives: the same workflows, run in the harness and in
the restricted sandbox the engine uses (driven like the engine, on a clock the test advances),
end with the same status, output, step records and logs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.sandbox.harness import T0, FakeHost, Instance, source
from treadle.testing import RunResult, WorkflowTest

CHECKOUT = """
from treadle import WorkflowEntrypoint, NonRetryableError

class Checkout(WorkflowEntrypoint):
    def run(self, event, step):
        print("replaying", event.instance_id)
        cart = step.do("load cart", lambda: {"items": event.payload["items"]})

        def price(ctx):
            if ctx.attempt < 3:
                raise ValueError("price service flaky, attempt " + str(ctx.attempt))
            return sum(i["price"] for i in cart["items"])

        total = step.do("price", price, retries={"limit": 3, "delay": "2 seconds"})

        @step.do("fetch stock", concurrent=True)
        def stock():
            return self.env.fetch("https://x/stock", method="POST", body="sku-1").json()

        @step.do("fetch fraud score", concurrent=True)
        def fraud(ctx):
            return [0.1, ctx.idempotency_key]

        @step.do("decide", depends=[stock, fraud])
        def decision(stock, fraud):
            print("deciding")
            return fraud[0] < 0.5 and stock["method"] == "POST"

        if not decision():
            raise NonRetryableError("rejected")
        step.sleep("cool off", "10 seconds")
        approval = step.wait_for_event("approval", type="approved", timeout="1 hour")
        return {"total": total, "by": approval["payload"]["by"], "at": approval["timestamp"],
                "region": self.env.vars["region"], "fraud": fraud()}
"""

SAGA = """
from treadle import WorkflowEntrypoint, NonRetryableError, StepError

class Saga(WorkflowEntrypoint):
    def run(self, event, step):
        def release(ctx):
            print("releasing", ctx.output, ctx.error["name"])

        step.do("reserve", lambda: "r-1", rollback=release)
        step.do("charge", lambda: {"id": "c-1"}, rollback=lambda: print("refunding"))
        try:
            step.do("optional", lambda: 1 / 0, retries={"limit": 1, "delay": 5})
        except StepError as exc:
            print("optional failed:", exc.name, exc.message)

        def ship():
            raise NonRetryableError("no courier")

        step.do("ship", ship)
"""

WAITS = """
import datetime
from treadle import WorkflowEntrypoint, WaitTimeout

class Waits(WorkflowEntrypoint):
    def run(self, event, step):
        seen = []
        for i in range(3):
            try:
                seen.append(step.wait_for_event("tick", type="tick", timeout=60)["payload"])
            except WaitTimeout as exc:
                seen.append("timeout")
        step.sleep_until("later", datetime.datetime(2023, 11, 15, tzinfo=datetime.timezone.utc))
        step.sleep("short", datetime.timedelta(minutes=2))
        child = self.env.workflows.create("resize", {"w": 10})
        return {"seen": seen, "child": child.id, "result": child.result(timeout="1 hour"),
                "counts": [step.do("n", lambda ctx: ctx.step.count) for i in range(2)]}
"""

BAD = """
from treadle import WorkflowEntrypoint

class Bad(WorkflowEntrypoint):
    def run(self, event, step):
        first = step.do("ok", lambda: (1, 2))
        step.do("not json", lambda: {"a": {1, 2}})
        return first
"""


@dataclass
class Case:
    text: str
    params: Any = None
    events: list[tuple[float, str, Any]] = field(default_factory=list)  # (seconds after T0, ...)
    child: dict[str, Any] | None = None  # the child's outcome, and when it ends
    vars: dict[str, Any] = field(default_factory=dict)


CASES = {
    "checkout": Case(
        CHECKOUT,
        params={"items": [{"price": 2}, {"price": 5}]},
        events=[(0, "other", 1), (300, "approved", {"by": "ann"})],
        vars={"region": "eu"},
    ),
    "saga": Case(SAGA),
    "waits": Case(
        WAITS,
        events=[(0, "tick", "a"), (90, "tick", "b")],
        child={"after": 120, "payload": {"status": "complete", "output": {"h": 5}, "error": None}},
    ),
    "bad": Case(BAD),
}


def on_the_platform(case: Case) -> dict[str, Any]:
    """Replay in the restricted sandbox until the outcome is final, as the engine does: wake
    at the wake time or when an awaited event arrives, whichever comes first."""
    wf = Instance(case.text, params=case.params, vars=case.vars)
    pending = sorted((T0 + at, type_, payload) for at, type_, payload in case.events)
    host, logs, children = FakeHost(), [], set()
    for _ in range(100):
        while pending and pending[0][0] <= wf.now:
            at, type_, payload = pending.pop(0)
            wf.send_event(type_, payload)
            wf.events[-1]["timestamp"] = at
        result = wf.inline(host)
        logs += [(line["step"], line["message"]) for line in result.logs]
        outcome = result.outcome
        if outcome["t"] != "suspended":
            break
        for child in set(host.children) - children:  # created in this replay: it ends later
            assert case.child is not None
            children.add(child)
            ended = wf.now + case.child["after"]
            pending = sorted([*pending, (ended, "child." + child, case.child["payload"])])
        coming = [at for at, type_, _ in pending if type_ == outcome["event_type"]]
        wf.now = max(wf.now, min([outcome["wake_at"], *coming]))
    return summary(outcome, list(wf.journal.values()), logs)


def in_the_harness(case: Case) -> dict[str, Any]:
    t = WorkflowTest.from_source(
        source(case.text), vars=case.vars, instance_id="inst-1", name="wf", start=T0
    )
    for at, type_, payload in case.events:
        t.send_event(type_, payload, after=at)
    t.mock_fetch("https://x/*", side_effect=echo)
    if case.child is not None:
        child = case.child["payload"]
        t.mock_workflow("resize", output=child["output"], after=case.child["after"])
    result = t.run(case.params)
    return summary_of(result)


def echo(request: dict[str, Any]) -> dict[str, Any]:
    """What the platform-side FakeHost answers for https://x/... URLs."""
    text = json.dumps({k: request[k] for k in ("url", "method", "body")})
    return {"status": 200, "headers": {"content-type": "application/json"}, "text": text}


def summary(
    outcome: dict[str, Any], records: list[dict[str, Any]], logs: list[Any]
) -> dict[str, Any]:
    status = {"done": "complete", "failed": "errored"}[outcome["t"]]
    return {
        "status": status,
        "output": outcome.get("output"),
        "error": outcome.get("error"),
        "rollback": outcome.get("rollback"),
        "steps": steady(records),
        "logs": logs,
    }


def summary_of(result: RunResult) -> dict[str, Any]:
    return {
        "status": result.status,
        "output": result.output,
        "error": result.error,
        "rollback": result.rollback,
        "steps": steady([r.record for r in result.records]),
        "logs": [tuple(line) for line in result.logs],
    }


def steady(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Step records without what depends on the wall clock, which moves on while the
    platform's bodies run: attempt times, wake times, the order in which concurrent steps
    finished, and the milliseconds of event timestamps (a child ends a few ms "later")."""
    steps = []
    for record in sorted(records, key=lambda r: (r["name"], r["count"])):
        output = record["output"]
        if record["type"] == "wait_for_event" and output is not None:
            output = {**output, "timestamp": output["timestamp"][:19]}
        steps.append(
            {
                "name": record["name"],
                "count": record["count"],
                "type": record["type"],
                "status": record["status"],
                "output": output,
                "error": record["error"],
                "attempts": [(a["success"], a["error"]) for a in record["attempts"]],
            }
        )
    return steps


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_harness_ends_a_workflow_as_the_platform_does(name: str) -> None:
    platform = on_the_platform(CASES[name])
    harness = in_the_harness(CASES[name])
    assert harness == platform
    assert platform["steps"], "the workflow ran no steps: the comparison would be empty"
