"""Workflow semantics (docs/tenant-api.md), end to end through the engine and a real sandbox."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.integration.engine_harness import Harness


@pytest.fixture
def h(database_url: str) -> Iterator[Harness]:
    harness = Harness(database_url)
    yield harness
    harness.close()


def test_steps_run_once_and_their_results_become_the_output(h: Harness) -> None:
    version = h.deploy(
        """
        from treadle import WorkflowEntrypoint

        class Sum(WorkflowEntrypoint):
            def run(self, event, step):
                a = step.do("a", lambda: event.payload["x"] + 1)
                b = step.do("b", lambda: a * 2)

                @step.do("c")
                def c():
                    print("c sees", b)
                    return b + 1

                return {"c": c(), "id": event.instance_id, "wf": event.workflow}
        """
    )
    done = h.wait(h.create(version, "i1", {"x": 1}), "complete")
    assert done["output"] == {"c": 5, "id": "i1", "wf": "wf"}
    assert [(s["name"], s["count"], s["type"], s["status"]) for s in done["steps"]] == [
        ("a", 1, "do", "complete"),
        ("b", 1, "do", "complete"),
        ("c", 1, "do", "complete"),
    ]
    assert [s["output"] for s in done["steps"]] == [2, 4, 5]
    assert all(len(s["attempts"]) == 1 and s["attempts"][0]["success"] for s in done["steps"])
    assert done["started_at"] and done["ended_at"] and done["version"] == version
    assert [(x["step"], x["message"]) for x in h.logs("i1")] == [("c", "c sees 4")]


def test_a_name_reused_in_a_loop_is_a_new_step_each_time(h: Harness) -> None:
    version = h.deploy(
        """
        from treadle import WorkflowEntrypoint

        class Loop(WorkflowEntrypoint):
            def run(self, event, step):
                total = 0
                for i in range(3):
                    total += step.do("add", lambda ctx: ctx.step.count * 10)
                return total
        """
    )
    done = h.wait(h.create(version, "loop"), "complete")
    assert done["output"] == 60
    assert [s["count"] for s in done["steps"]] == [1, 2, 3]


def test_retries_record_every_attempt_then_succeed(h: Harness) -> None:
    version = h.deploy(
        """
        from treadle import WorkflowEntrypoint

        class Flaky(WorkflowEntrypoint):
            def run(self, event, step):
                def flaky(ctx):
                    if ctx.attempt < 3:
                        raise ValueError("attempt " + str(ctx.attempt))
                    return {"attempt": ctx.attempt, "key": ctx.idempotency_key}
                retries = {"limit": 3, "delay": 1, "backoff": "constant"}
                return step.do("flaky", flaky, retries=retries)
        """
    )
    started = time.monotonic()
    done = h.wait(h.create(version, "r1"), "complete")
    assert time.monotonic() - started >= 1.9  # two retry delays of one second
    assert done["output"] == {"attempt": 3, "key": "r1:flaky:1"}
    attempts = done["steps"][0]["attempts"]
    assert [a["success"] for a in attempts] == [False, False, True]
    error = attempts[0]["error"]
    assert (error["name"], error["message"]) == ("ValueError", "attempt 1")
    assert error["traceback"][-1]["file"] == "workflow.py"


def test_a_failed_step_raises_into_run_where_it_can_be_caught(h: Harness) -> None:
    version = h.deploy(
        """
        from treadle import WorkflowEntrypoint, NonRetryableError, StepError

        class Catch(WorkflowEntrypoint):
            def run(self, event, step):
                def bad():
                    raise NonRetryableError("card declined")
                try:
                    step.do("charge", bad)
                except StepError as e:
                    return {"caught": e.name, "message": str(e)}
        """
    )
    done = h.wait(h.create(version, "c1"), "complete")
    assert done["output"] == {"caught": "NonRetryableError", "message": "card declined"}
    assert done["steps"][0]["status"] == "errored"
    assert len(done["steps"][0]["attempts"]) == 1


def test_an_uncaught_step_failure_errors_the_instance(h: Harness) -> None:
    version = h.deploy(
        """
        from treadle import WorkflowEntrypoint

        class Boom(WorkflowEntrypoint):
            def run(self, event, step):
                def bad():
                    raise KeyError("missing")
                step.do("lookup", bad, retries={"limit": 1, "delay": 0})
                return "unreachable"
        """
    )
    done = h.wait(h.create(version, "e1"), "errored")
    assert done["error"]["name"] == "KeyError"
    assert "missing" in done["error"]["message"]
    assert done["output"] is None
    assert len(done["steps"][0]["attempts"]) == 2


def test_sleep_suspends_and_wakes_on_time_without_rerunning_steps(h: Harness) -> None:
    version = h.deploy(
        """
        from treadle import WorkflowEntrypoint

        class Nap(WorkflowEntrypoint):
            def run(self, event, step):
                def before():
                    print("before runs once")
                    return 1
                step.do("before", before)
                step.sleep("nap", "1 second")
                return step.do("after", lambda: 2)
        """
    )
    h.create(version, "s1")
    waiting = h.wait("s1", "waiting")
    assert [(s["name"], s["type"], s["status"]) for s in waiting["steps"]] == [
        ("before", "do", "complete"),
        ("nap", "sleep", "waiting"),
    ]
    started = time.monotonic()
    done = h.wait("s1", "complete")
    assert 0.3 < time.monotonic() - started < 5
    assert done["output"] == 2
    assert [s["status"] for s in done["steps"]] == ["complete"] * 3
    assert [x["message"] for x in h.logs("s1")] == ["before runs once"]


def test_events_are_buffered_delivered_in_order_and_time_out(h: Harness) -> None:
    version = h.deploy(
        """
        from treadle import WorkflowEntrypoint, WaitTimeout

        class Approve(WorkflowEntrypoint):
            def run(self, event, step):
                step.sleep("settle", 1)
                first = step.wait_for_event("first", type="approved", timeout="1 minute")
                second = step.wait_for_event("second", type="approved", timeout="1 minute")
                try:
                    step.wait_for_event("never", type="never", timeout=1)
                    late = "came"
                except WaitTimeout:
                    late = "timed out"
                return [first["payload"], second["payload"], first["type"], late]
        """
    )
    h.create(version, "ev1")
    h.wait("ev1", "waiting")
    h.event("ev1", "approved", {"by": "ann"})  # sent before the wait: buffered
    h.event("ev1", "approved", {"by": "bob"})
    done = h.wait("ev1", "complete")
    assert done["output"] == [{"by": "ann"}, {"by": "bob"}, "approved", "timed out"]
    kinds = [(s["name"], s["type"], s["status"]) for s in done["steps"]]
    assert kinds[-1] == ("never", "wait_for_event", "errored")


def test_an_event_wakes_a_waiting_instance_at_once(h: Harness) -> None:
    version = h.deploy(
        """
        from treadle import WorkflowEntrypoint

        class Wait(WorkflowEntrypoint):
            def run(self, event, step):
                return step.wait_for_event("go", type="go", timeout="1 hour")["payload"]
        """
    )
    h.create(version, "w1")
    h.wait("w1", "waiting")
    started = time.monotonic()
    h.event("w1", "go", [1, 2])
    assert h.wait("w1", "complete")["output"] == [1, 2]
    assert time.monotonic() - started < 3


def test_many_instances_run_concurrently_with_about_one_commit_per_step(h: Harness) -> None:
    version = h.deploy(
        """
        from treadle import WorkflowEntrypoint

        class Three(WorkflowEntrypoint):
            def run(self, event, step):
                a = step.do("a", lambda: 1)
                b = step.do("b", lambda: a + 1)
                return step.do("c", lambda: b + 1)
        """
    )
    before = h.db.commits
    ids = [h.create(version, f"m{i}") for i in range(30)]
    for i in ids:
        assert h.wait(i, "complete")["output"] == 3
    commits = h.db.commits - before
    assert h.step_rows() == 90
    # 30 creates + claims + 90 step commits at most, fewer when grouped.
    assert commits <= 30 + 30 + 90
