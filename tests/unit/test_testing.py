"""treadle.testing: a tenant's unit tests of their own workflows, in-process."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest

import treadle.testing
from tests.sandbox.harness import named
from treadle import NonRetryableError, StepError, WaitTimeout, WorkflowEntrypoint
from treadle.testing import HarnessError, Limits, ReplayMismatch, StepTimeout, WorkflowTest

START = "2026-01-01T00:00:00Z"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()


class Checkout(WorkflowEntrypoint):
    def run(self, event: Any, step: Any) -> Any:
        cart = step.do("load cart", lambda: {"items": event.payload["items"]})
        total = step.do(
            "price",
            lambda: sum(i["price"] for i in cart["items"]),
            retries={"limit": 3, "delay": "2 seconds", "backoff": "exponential"},
        )

        @step.do("fetch stock", concurrent=True)
        def stock() -> Any:
            return self.env.fetch("https://inventory.example/api").json()

        @step.do("fetch fraud score", concurrent=True)
        def fraud() -> float:
            return 0.1

        @step.do("decide", depends=[stock, fraud])
        def decision(stock: Any, fraud: float) -> bool:
            return fraud < 0.5 and stock["count"] > 0

        if not decision():
            raise NonRetryableError("rejected")
        receipt = step.do("charge card", lambda: self.env.fetch("https://pay.example").json())
        step.sleep("cool off", "2 seconds")
        approval = step.wait_for_event("approval", type="approved", timeout="1 hour")
        return {
            "total": total,
            "approved_by": approval["payload"]["by"],
            "receipt": receipt,
            "region": self.env.vars["region"],
        }


def checkout(**options: Any) -> WorkflowTest:
    t = WorkflowTest(Checkout, vars={"region": "eu"}, start=START, **options)
    t.mock_fetch("https://inventory.example/api", json={"count": 3})
    t.mock_step("charge card", return_value={"ok": True})
    return t


def test_the_public_api_is_pinned() -> None:
    assert treadle.testing.__all__ == sorted(treadle.testing.__all__)
    assert treadle.testing.__all__ == [
        "HarnessError",
        "Limits",
        "LogLine",
        "ReplayMismatch",
        "Response",
        "RunResult",
        "StepResult",
        "StepTimeout",
        "Steps",
        "WorkflowTest",
    ]


def test_a_workflow_runs_to_completion_with_mocks_and_an_event() -> None:
    t = checkout()
    t.send_event("approved", {"by": "ann"})
    result = t.run({"items": [{"price": 2}, {"price": 3}]})
    assert result.status == "complete" and result.error is None
    assert result.output == {
        "total": 5,
        "approved_by": "ann",
        "receipt": {"ok": True},
        "region": "eu",
    }
    assert list(result.steps) == [
        "load cart", "price", "fetch stock", "fetch fraud score", "decide", "charge card",
        "cool off", "approval",
    ]  # fmt: skip
    assert result.steps["price"].output == 5
    assert result.steps["charge card"].attempts == 1
    assert result.steps["cool off"].type == "sleep"
    assert result.steps["approval"].output == {
        "type": "approved",
        "payload": {"by": "ann"},
        "timestamp": "2026-01-01T00:00:00.000Z",
    }
    assert result.sleeps == [("cool off", 2.0)]
    assert result.fetches == [
        {"url": "https://inventory.example/api", "method": "GET", "headers": {}, "body": None}
    ]  # the mocked charge card never fetched
    assert result.elapsed == 2.0  # the sleep was skipped: virtual time only
    assert result.replays == 2  # once up to the sleep, once after it, as the engine would


def test_an_event_sent_after_a_while_arrives_then() -> None:
    t = checkout()
    t.send_event("approved", {"by": "bo"}, after="10 minutes")
    result = t.run({"items": []})
    assert result.output["approved_by"] == "bo"
    assert result.elapsed == 600.0
    assert result.steps["approval"].output["timestamp"] == "2026-01-01T00:10:00.000Z"


def test_a_wait_without_an_event_times_out_or_fails_loudly() -> None:
    result = checkout().run({"items": []})
    assert result.status == "errored"
    assert named(result.error) == {
        "name": "WaitTimeout",
        "message": "step 'approval': no 'approved' event arrived before the timeout",
    }
    assert result.elapsed == 2.0 + 3600.0
    with pytest.raises(HarnessError, match="'approval' waits for a 'approved' event"):
        checkout(missing_events="error").run({"items": []})


class Waits(WorkflowEntrypoint):
    def run(self, event: Any, step: Any) -> Any:
        try:
            first = step.wait_for_event("first", type="ping", timeout=60)["payload"]
        except WaitTimeout:
            first = "timed out"
        second = step.wait_for_event("second", type="ping", timeout=60)["payload"]
        return [first, second]


def test_events_are_buffered_per_type_in_order_and_a_timeout_is_catchable() -> None:
    t = WorkflowTest(Waits)
    t.send_event("other", 0)
    t.send_event("ping", 1)
    t.send_event("ping", 2)
    assert t.run().output == [1, 2]
    t = WorkflowTest(Waits)
    t.send_event("ping", 3, after=90)  # after the first wait's timeout: the second gets it
    assert t.run().output == ["timed out", 3]


def test_an_event_can_be_sent_by_a_mock_during_the_run() -> None:
    t = checkout()
    t.mock_step("charge card", side_effect=lambda: t.send_event("approved", {"by": "cy"}) or {})
    assert t.run({"items": []}).output["approved_by"] == "cy"


def test_retries_are_recorded_with_virtual_delays() -> None:
    t = checkout()
    t.send_event("approved", {"by": "ann"})
    t.mock_step("price", side_effect=[ValueError("flaky"), ValueError("flaky"), 7])
    result = t.run({"items": []})
    price = result.steps["price"]
    assert price.output == 7 and price.attempts == 3
    assert price.errors == [{"name": "ValueError", "message": "flaky"}] * 2
    assert price.delays == (2.0, 4.0)  # exponential: 2 s, then 4 s
    assert result.elapsed == 2.0 + 4.0 + 2.0


def test_a_step_that_fails_for_good_raises_step_error_into_run() -> None:
    class Catches(WorkflowEntrypoint):
        def run(self, event: Any, step: Any) -> Any:
            try:
                step.do("boom", lambda: 1 / 0, retries={"limit": 1, "delay": 1})
            except StepError as exc:
                return {"name": exc.name, "message": exc.message}
            return None

    result = WorkflowTest(Catches).run()
    assert result.output == {"name": "ZeroDivisionError", "message": "division by zero"}
    assert result.steps["boom"].status == "errored" and result.steps["boom"].attempts == 2


def test_non_retryable_errors_stop_retries_and_an_uncaught_error_ends_errored() -> None:
    t = checkout()
    t.mock_step("price", side_effect=NonRetryableError("bad cart"))
    result = t.run({"items": []})
    assert result.status == "errored"
    assert named(result.error) == {"name": "NonRetryableError", "message": "bad cart"}
    assert result.steps["price"].attempts == 1
    assert "fetch stock" not in result.steps


def test_a_timeout_can_be_simulated() -> None:
    class Slow(WorkflowEntrypoint):
        def run(self, event: Any, step: Any) -> Any:
            return step.do("slow", lambda: 1, timeout="30 seconds", retries={"limit": 0})

    t = WorkflowTest(Slow)
    t.mock_step("slow", side_effect=StepTimeout)
    result = t.run()
    assert named(result.error) == {"name": "StepTimeout", "message": "step timed out after 30 s"}


def test_ctx_and_a_callable_mock_get_what_the_body_would() -> None:
    class Ctx(WorkflowEntrypoint):
        def run(self, event: Any, step: Any) -> Any:
            def body(ctx: Any) -> Any:
                if ctx.attempt < 2:
                    raise RuntimeError("again")
                return [ctx.step.name, ctx.step.count, ctx.idempotency_key, ctx.config]

            step.do("x", lambda: 0)
            return step.do("x", body, retries={"delay": 1, "backoff": "constant"})

    assert WorkflowTest(Ctx, instance_id="i-1").run().output == [
        "x",
        2,
        "i-1:x:2",
        {"retries": {"limit": 5, "delay": 1.0, "backoff": "constant"}, "timeout": 600.0},
    ]
    t = WorkflowTest(Ctx)
    t.mock_step("x", count=2, side_effect=lambda ctx: f"mocked attempt {ctx.attempt}")
    assert t.run().output == "mocked attempt 1"


def test_rollbacks_run_in_reverse_order_when_the_run_fails() -> None:
    class Saga(WorkflowEntrypoint):
        def run(self, event: Any, step: Any) -> Any:
            step.do("reserve", lambda: "r1", rollback=lambda ctx: print("release", ctx.output))
            step.do("charge", lambda: "c1", rollback=lambda: print("refund"))
            step.do("ship", lambda: 1 / 0, retries={"limit": 0})

    result = WorkflowTest(Saga).run()
    assert result.status == "errored"
    assert named(result.error) == {"name": "ZeroDivisionError", "message": "division by zero"}
    assert result.rollback == {"outcome": "complete", "error": None}
    assert [(line.step, line.message) for line in result.logs] == [
        ("rollback:charge", "refund"),
        ("rollback:reserve", "release r1"),
    ]
    assert result.steps["rollback:charge"].type == "rollback"


def test_print_is_logged_with_its_step_and_repeats_outside_steps() -> None:
    class Prints(WorkflowEntrypoint):
        def run(self, event: Any, step: Any) -> Any:
            print("top")
            step.do("a", lambda: print("in", "a", sep="-"))
            step.sleep("nap", dt.timedelta(hours=1))
            return None

    assert WorkflowTest(Prints).run().logs == [(None, "top"), ("a", "in-a"), (None, "top")]


def test_sleep_until_skips_to_the_time() -> None:
    class Until(WorkflowEntrypoint):
        def run(self, event: Any, step: Any) -> Any:
            step.sleep_until("new year", "2026-01-02T00:00:00Z")
            step.sleep_until("past", T0 - 5)
            return event.timestamp

    result = WorkflowTest(Until, start=START).run()
    assert result.sleeps == [("new year", 86400.0), ("past", 0.0)]
    assert result.output == "2026-01-01T00:00:00.000Z" and result.elapsed == 86400.0


def test_fetch_outside_a_step_and_unmocked_fetch() -> None:
    class Outside(WorkflowEntrypoint):
        def run(self, event: Any, step: Any) -> Any:
            return self.env.fetch("https://x.example").status

    result = WorkflowTest(Outside).run()
    assert result.error is not None and result.error["name"] == "NonRetryableError"
    assert "only allowed inside a step body" in result.error["message"]

    class Swallows(WorkflowEntrypoint):
        def run(self, event: Any, step: Any) -> Any:
            def body() -> Any:
                try:
                    return self.env.fetch("https://y.example/a").text
                except BaseException:
                    return "swallowed"

            return step.do("get", body)

    with pytest.raises(HarnessError, match=r"'https://y.example/a'.* is not mocked"):
        WorkflowTest(Swallows).run()
    t = WorkflowTest(Swallows)
    t.mock_fetch("https://y.example/*", text="hello", status=201)
    assert t.run().output == "hello"


def test_results_must_be_json_like_on_the_platform() -> None:
    class Bad(WorkflowEntrypoint):
        def run(self, event: Any, step: Any) -> Any:
            return step.do("set", lambda: {1, 2})

    result = WorkflowTest(Bad).run()
    assert result.error is not None and result.error["name"] == "TypeError"
    assert result.steps["set"].status == "errored" and result.steps["set"].attempts == 1
    assert result.steps["set"].error == {
        "name": "TypeError",
        "message": "the result of step 'set' is not JSON-serializable: "
        "Object of type set is not JSON serializable",
    }


def test_step_names_and_nesting_are_checked() -> None:
    class Long(WorkflowEntrypoint):
        def run(self, event: Any, step: Any) -> Any:
            step.do("x" * 257, lambda: 1)

    result = WorkflowTest(Long).run()
    assert result.error is not None and result.error["name"] == "ValueError"

    class Nested(WorkflowEntrypoint):
        def run(self, event: Any, step: Any) -> Any:
            return step.do("outer", lambda: step.do("inner", lambda: 1))

    result = WorkflowTest(Nested).run()
    assert result.steps["outer"].errors[0]["message"].startswith("steps cannot be nested")


def test_children_run_in_the_harness_or_are_mocked() -> None:
    class Child(WorkflowEntrypoint):
        def run(self, event: Any, step: Any) -> Any:
            step.sleep("wait", 30)
            return {"doubled": event.payload["n"] * 2, "id": event.instance_id}

    class Parent(WorkflowEntrypoint):
        def run(self, event: Any, step: Any) -> Any:
            child = self.env.workflows.create("child", {"n": 21})
            return child.result()

    t = WorkflowTest(Parent, instance_id="p")
    t.register_workflow("child", Child)
    result = t.run()
    assert result.output == {"doubled": 42, "id": "p-child-1"}
    assert result.elapsed == 30.0
    assert [r.name for r in result.records] == [
        "workflows.create:child",
        "workflows.result:p-child-1",
    ]
    assert result.children[0]["result"].steps["wait"].status == "complete"

    t = WorkflowTest(Parent)
    t.mock_workflow("child", error={"name": "Boom", "message": "no"}, after="1 hour")
    result = t.run()
    assert named(result.error) == {"name": "Boom", "message": "no"} and result.elapsed == 3600.0
    with pytest.raises(HarnessError, match="knows no such workflow"):
        WorkflowTest(Parent).run()


def test_the_replay_check_catches_a_nondeterministic_run() -> None:
    class Random(WorkflowEntrypoint):
        def run(self, event: Any, step: Any) -> Any:
            if random.random() < 2:
                step.do(f"step {random.random()}", lambda: 1)
            return None

    with pytest.raises(ReplayMismatch, match="must make the same step calls"):
        WorkflowTest(Random).run()
    assert WorkflowTest(Random, check_replay=False).run().status == "complete"


def test_a_changed_step_type_is_a_nondeterminism_error() -> None:
    calls: list[int] = []

    class Flips(WorkflowEntrypoint):
        def run(self, event: Any, step: Any) -> Any:
            calls.append(1)
            if len(calls) == 1:
                step.sleep("x", 1)
            return step.do("x", lambda: 1)

    result = WorkflowTest(Flips, check_replay=False).run()
    assert result.error is not None and result.error["name"] == "NondeterminismError"


def test_the_step_limit_applies() -> None:
    class Many(WorkflowEntrypoint):
        def run(self, event: Any, step: Any) -> Any:
            for _ in range(20):
                step.do("n", lambda: 1)

    result = WorkflowTest(Many, limits=Limits(max_steps_per_instance=10)).run()
    assert result.error is not None and result.error["name"] == "LimitExceeded"


def test_bad_arguments_are_refused_in_the_test() -> None:
    with pytest.raises(TypeError):
        WorkflowTest(dict)  # type: ignore[arg-type]
    t = WorkflowTest(Waits)
    with pytest.raises(ValueError, match="event type"):
        t.send_event("bad type!", 1)
    with pytest.raises(TypeError, match="exactly one"):
        t.mock_step("x")
    with pytest.raises(ValueError, match="JSON"):
        t.run({"x": object()})


def test_a_side_effect_list_that_runs_out_is_a_mistake_in_the_test() -> None:
    t = checkout()
    t.mock_step("price", side_effect=[ValueError("once")])
    with pytest.raises(HarnessError, match="side_effect list ran out"):
        t.run({"items": []})


def test_fetch_errors_keep_their_name_and_non_retryable_ones_fail_the_step() -> None:
    class EgressDenied(NonRetryableError):
        pass

    class Get(WorkflowEntrypoint):
        def run(self, event: Any, step: Any) -> Any:
            return step.do("get", lambda: self.env.fetch("https://x.example").text)

    t = WorkflowTest(Get)
    t.mock_fetch("https://x.example", side_effect=EgressDenied("not allowed"))
    result = t.run()
    assert named(result.error) == {"name": "EgressDenied", "message": "not allowed"}
    assert result.steps["get"].attempts == 1
    t = WorkflowTest(Get)
    t.mock_fetch("https://x.example", side_effect=ConnectionError("reset"))
    result = t.run()
    assert result.steps["get"].attempts == 6 and len(result.fetches) == 6
    assert result.steps["get"].delays == (10.0, 20.0, 40.0, 80.0, 160.0)


def test_a_rollback_that_fails_once_is_retried_after_its_delay() -> None:
    attempts: list[int] = []

    class Undo(WorkflowEntrypoint):
        def run(self, event: Any, step: Any) -> Any:
            def undo(ctx: Any) -> None:
                attempts.append(ctx.attempt)
                if ctx.attempt == 1:
                    raise RuntimeError("not yet")

            config = {"retries": {"delay": "1 minute"}}
            step.do("book", lambda: 1, rollback=undo, rollback_config=config)
            raise NonRetryableError("give up")

    result = WorkflowTest(Undo).run()
    assert result.rollback == {"outcome": "complete", "error": None}
    assert result.steps["rollback:book"].attempts == 2 and attempts == [1, 2]
    assert result.elapsed == 60.0 and named(result.error) == {
        "name": "NonRetryableError",
        "message": "give up",
    }


def test_a_prepared_child_test_and_a_terminated_child() -> None:
    class Child(WorkflowEntrypoint):
        def run(self, event: Any, step: Any) -> Any:
            return step.do("work", lambda: "real")

    class Parent(WorkflowEntrypoint):
        def run(self, event: Any, step: Any) -> Any:
            try:
                return self.env.workflows.create("child", id="kid").result()
            except StepError as exc:
                return [exc.name, exc.message]

    child = WorkflowTest(Child)
    child.mock_step("work", return_value="mocked")
    t = WorkflowTest(Parent)
    t.register_workflow("child", child)
    result = t.run()
    assert result.output == "mocked" and result.children[0]["id"] == "kid"
    t = WorkflowTest(Parent)
    t.mock_workflow("child", status="terminated")
    assert t.run().output == ["Terminated", "the child instance 'kid' terminated"]


def test_a_workflow_can_be_tested_from_the_source_you_upload() -> None:
    text = """
from treadle import WorkflowEntrypoint

class Helper:
    pass

class One(WorkflowEntrypoint):
    def run(self, event, step):
        return step.do("one", lambda: 1)

class Two(WorkflowEntrypoint):
    def run(self, event, step):
        return step.do("two", lambda: 2)
"""
    assert WorkflowTest.from_source(text, class_name="Two").run().output == 2
    with pytest.raises(ValueError, match=r"set class_name to one .*\(One, Two\)"):
        WorkflowTest.from_source(text)
    with pytest.raises(ValueError, match="'Helper' not found"):
        WorkflowTest.from_source(text, class_name="Helper")
    one = text.split("class Two")[0]
    assert WorkflowTest.from_source(one, instance_id="x").run().steps["one"].output == 1
