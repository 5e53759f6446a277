"""treadle.testing against the real thing: the same workflows, run by the engine on SQLite and
PostgreSQL through a real sandbox pool, and in the harness, end with the same status, output,
error, step records and logs."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.engine_harness import Harness
from treadle.testing import WorkflowTest

ORDER = """
from treadle import WorkflowEntrypoint, NonRetryableError

class Order(WorkflowEntrypoint):
    def run(self, event, step):
        print("executing run()")
        items = step.do("load", lambda: event.payload["items"])

        def price(ctx):
            if ctx.attempt == 1:
                raise ValueError("flaky")
            return sum(items)

        total = step.do("price", price, retries={"limit": 2, "delay": 1, "backoff": "constant"})

        @step.do("stock", concurrent=True)
        def stock():
            return {"left": 3}

        @step.do("fraud", concurrent=True)
        def fraud(ctx):
            return [0.1, ctx.idempotency_key]

        @step.do("decide", depends=[stock, fraud])
        def decide(stock, fraud):
            print("deciding")
            return stock["left"] > 0 and fraud[0] < 0.5

        if not decide():
            raise NonRetryableError("rejected")
        step.sleep("cool off", 1)
        approval = step.wait_for_event("approval", type="approved", timeout="1 hour")
        return {"total": total, "by": approval["payload"]["by"], "region": self.env.vars["region"]}
"""

SAGA = """
from treadle import WorkflowEntrypoint, StepError

class Saga(WorkflowEntrypoint):
    def run(self, event, step):
        step.do("reserve", lambda: "r-1", rollback=lambda ctx: print("release", ctx.output))
        step.do("charge", lambda: {"id": "c-1"}, rollback=lambda: print("refund"))
        try:
            step.do("optional", lambda: 1 / 0, retries={"limit": 1, "delay": 1})
        except StepError as exc:
            print("optional failed:", exc.name)
        step.do("ship", lambda: [][1], retries={"limit": 0})
"""

CASES = {
    "order": (ORDER, {"items": [2, 5]}, [("approved", {"by": "ann"})]),
    "saga": (SAGA, None, []),
}


@pytest.fixture
def h(database_url: str) -> Iterator[Harness]:
    harness = Harness(database_url)
    harness.vars = {"region": "eu"}
    yield harness
    harness.close()


def on_the_engine(h: Harness, case: str) -> dict[str, Any]:
    text, params, events = CASES[case]
    instance = h.create(h.deploy(text), f"{case}-1", params)
    for type_, payload in events:
        h.event(instance, type_, payload)  # buffered until the wait takes it
    ended = h.wait(instance, "complete", "errored")
    logs = [(line["step"], line["message"]) for line in h.logs(instance)]
    return summary(ended["status"], ended["output"], ended["error"], ended["steps"], logs)


def in_the_harness(case: str) -> dict[str, Any]:
    text, params, events = CASES[case]
    t = WorkflowTest.from_source(
        textwrap.dedent(text), vars={"region": "eu"}, instance_id=f"{case}-1", name="wf"
    )
    for type_, payload in events:
        t.send_event(type_, payload)
    result = t.run(params)
    steps = [r.record for r in result.records]
    return summary(result.status, result.output, result.error, steps, list(result.logs))


def summary(
    status: str, output: Any, error: Any, steps: list[dict[str, Any]], logs: list[Any]
) -> dict[str, Any]:
    """What a user sees, without what depends on the wall clock (times, the order in which
    parallel bodies finished)."""
    return {
        "status": status,
        "output": output,
        "error": error,
        "steps": sorted(
            (
                s["name"],
                s["count"],
                s["type"],
                s["status"],
                _steady(s["output"]),
                [(a["success"], a["error"]) for a in s["attempts"]],
            )
            for s in steps
        ),
        "logs": [tuple(line) for line in logs],
    }


def _steady(output: Any) -> Any:
    if isinstance(output, dict) and set(output) == {"type", "payload", "timestamp"}:
        return {**output, "timestamp": "<time>"}
    return output


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_engine_and_the_harness_agree(h: Harness, case: str) -> None:
    engine = on_the_engine(h, case)
    assert engine == in_the_harness(case)
    assert engine["steps"], "no steps ran: the comparison would be empty"
