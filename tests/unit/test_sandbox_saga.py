"""Sagas: rollback handlers of completed steps, and the rollback-only mode, in-process."""

from __future__ import annotations

from tests.sandbox.harness import FakeHost, Instance, named

SAGA = """
from treadle import WorkflowEntrypoint, NonRetryableError

class Trip(WorkflowEntrypoint):
    def run(self, event, step):
        def undo(ctx):
            print("undo", ctx.step.name, ctx.step.count, ctx.attempt)
            return {"undid": ctx.output, "because": ctx.error, "key": ctx.idempotency_key}

        step.do("flight", lambda: "F1", rollback=undo)
        step.do("lookup", lambda: "no rollback")
        step.do("hotel", lambda: "H1", rollback=undo)
        step.do("car", lambda: "C1", rollback=lambda: print("car returned"))
        if event.payload["fail"]:
            def pay():
                raise NonRetryableError("card declined")
            step.do("pay", pay)
        return "booked"
"""
DECLINED = {"name": "NonRetryableError", "message": "card declined"}


def test_rollbacks_run_in_reverse_order_of_completion_each_recorded() -> None:
    wf = Instance(SAGA, params={"fail": True})
    result = wf.inline()
    assert result.outcome["t"] == "failed" and named(result.outcome["error"]) == DECLINED
    assert result.outcome["rollback"] == {"outcome": "complete", "error": None}
    rollbacks = [r for r in result.records if r["type"] == "rollback"]
    assert [(r["name"], r["count"], r["status"]) for r in rollbacks] == [
        ("rollback:car", 1, "complete"),
        ("rollback:hotel", 1, "complete"),
        ("rollback:flight", 1, "complete"),
    ]
    output = rollbacks[1]["output"]
    assert output["undid"] == "H1" and output["key"] == "inst-1:rollback:hotel:1"
    assert named(output["because"]) == DECLINED  # ctx.error: the failure, its frames too
    assert output["because"]["traceback"][-1]["function"] == "pay"
    assert len(rollbacks[1]["attempts"]) == 1 and rollbacks[1]["attempts"][0]["success"]
    assert [b.get("type") for b in result.begins][-3:] == ["rollback"] * 3
    assert [(x["step"], x["message"]) for x in result.logs] == [
        ("rollback:car", "car returned"),
        ("rollback:hotel", "undo hotel 1 1"),
        ("rollback:flight", "undo flight 1 1"),
    ]


def test_a_successful_run_runs_no_rollback() -> None:
    result = Instance(SAGA, params={"fail": False}).inline()
    assert result.outcome["t"] == "done" and "rollback" not in result.outcome


def test_a_failure_without_handlers_reports_no_rollback() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Plain(WorkflowEntrypoint):
            def run(self, event, step):
                step.do("a", lambda: 1)
                raise ValueError("boom")
        """
    )
    result = wf.inline()
    assert named(result.outcome["error"]) == {"name": "ValueError", "message": "boom"}
    assert "rollback" not in result.outcome


def test_the_order_is_that_of_completion_even_for_concurrent_steps() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Both(WorkflowEntrypoint):
            def run(self, event, step):
                def undo(ctx):
                    return ctx.step.name

                @step.do("slow", concurrent=True, rollback=undo)
                def slow():
                    return self.env.fetch("https://x/sleep/0.3").status

                @step.do("fast", concurrent=True, rollback=undo)
                def fast():
                    return 1

                @step.do("both", depends=[slow, fast])
                def both(slow, fast):
                    return None

                both()
                raise ValueError("then it failed")
        """
    )
    result = wf.inline(FakeHost())
    rollbacks = [r["name"] for r in result.records if r["type"] == "rollback"]
    assert rollbacks == ["rollback:slow", "rollback:fast"]  # slow completed last


def test_a_pending_rollback_retry_suspends_and_the_next_replay_resumes_it() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Flaky(WorkflowEntrypoint):
            def run(self, event, step):
                def undo_a():
                    print("undo a")

                def undo_b(ctx):
                    if ctx.attempt < 3:
                        raise ConnectionError("refund service down")
                    return "refunded"

                config = {"retries": {"limit": 5, "delay": "1 minute", "backoff": "constant"}}
                step.do("a", lambda: 1, rollback=undo_a)
                step.do("b", lambda: 2, rollback=undo_b, rollback_config=config)
                raise KeyError("lost")
        """
    )
    first = wf.inline()
    assert first.outcome["t"] == "suspended" and first.outcome["event_type"] is None
    waiting = wf.journal[("rollback:b", 1)]
    assert waiting["status"] == "waiting" and waiting["type"] == "rollback"
    assert first.outcome["wake_at"] == waiting["wake_at"]
    assert ("rollback:a", 1) not in wf.journal  # a's handler waits for b's
    assert wf.inline().begins == []  # not due: nothing runs, the failure is raised again
    done = wf.settle_inline()
    assert named(done.outcome["error"]) == {"name": "KeyError", "message": "'lost'"}
    assert done.outcome["rollback"] == {"outcome": "complete", "error": None}
    assert len(wf.journal[("rollback:b", 1)]["attempts"]) == 3
    assert wf.journal[("rollback:a", 1)]["status"] == "complete"
    assert [b["name"] for b in done.begins] == ["rollback:b", "rollback:a"]


def test_rollbacks_stop_at_the_first_that_fails_for_good() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint, NonRetryableError

        class Stuck(WorkflowEntrypoint):
            def run(self, event, step):
                def cannot():
                    raise NonRetryableError("already shipped")

                step.do("a", lambda: 1, rollback=lambda: "undone")
                step.do("b", lambda: 2, rollback=cannot)
                raise ValueError("failed")
        """
    )
    result = wf.inline()
    assert named(result.outcome["error"]) == {"name": "ValueError", "message": "failed"}
    assert result.outcome["rollback"] == {
        "outcome": "failed",
        "error": {
            "name": "NonRetryableError",
            "message": "already shipped",
            "traceback": [
                {
                    "file": "workflow.py",
                    "line": 6,
                    "function": "cannot",
                    "source": 'raise NonRetryableError("already shipped")',
                }
            ],
        },
    }
    assert [r["name"] for r in result.records if r["type"] == "rollback"] == ["rollback:b"]
    assert wf.inline().outcome["rollback"] == result.outcome["rollback"]  # replays say the same


def test_handlers_cannot_call_steps_but_may_fetch() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Undo(WorkflowEntrypoint):
            def run(self, event, step):
                def nested():
                    step.do("inner", lambda: 1)

                def refund(ctx):
                    return self.env.fetch("https://x/refund", method="POST", body="7").status

                step.do("a", lambda: 1, rollback=refund)
                step.do("b", lambda: 2, rollback=nested)
                raise ValueError("failed")
        """
    )
    result = wf.inline(FakeHost())
    error = result.outcome["rollback"]["error"]
    assert error["name"] == "NonRetryableError" and "steps cannot be nested" in error["message"]

    wf = Instance(wf.artifact.source.replace("rollback=nested", "rollback=None"))
    result = wf.inline(FakeHost())
    assert result.outcome["rollback"] == {"outcome": "complete", "error": None}
    assert wf.journal[("rollback:a", 1)]["output"] == 200


def test_rollback_options_are_checked_and_rollback_names_are_reserved() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Bad(WorkflowEntrypoint):
            def run(self, event, step):
                problems = []
                for kwargs in (
                    {"rollback": 5},
                    {"rollback_config": {"retries": {"limit": 1}}},
                    {"rollback": print, "rollback_config": {"retry": 1}},
                ):
                    try:
                        step.do("x", lambda: 1, **kwargs)
                    except (TypeError, ValueError) as e:
                        problems.append(str(e))
                try:
                    step.do("rollback:x", lambda: 1)
                except ValueError as e:
                    problems.append(str(e))
                return problems
        """
    )
    assert wf.inline().outcome["output"] == [
        "step.do: rollback must be callable",
        "step.do: rollback_config needs a rollback handler",
        "rollback_config must be a dict with 'retries' and/or 'timeout'",
        "step names starting with 'rollback:' are reserved for the records of rollback handlers",
    ]


# -- rollback-only mode (terminate with rollback) ------------------------------------------------

PARTIAL = """
from treadle import WorkflowEntrypoint

class Partial(WorkflowEntrypoint):
    def run(self, event, step):
        def undo(ctx):
            return "undid " + ctx.step.name + ": " + ctx.error["message"]

        step.do("a", lambda: 1, rollback=undo)
        step.sleep("nap", "1 hour")
        step.do("b", lambda: 2, rollback=undo)
        got = step.wait_for_event("go", type="go")
        step.do("c", lambda: got, rollback=undo)
        return "done"
"""


def test_rollback_mode_replays_what_is_recorded_then_rolls_back() -> None:
    wf = Instance(PARTIAL)
    napping = wf.inline().outcome  # a done, napping
    wf.now = napping["wake_at"]
    assert wf.inline().outcome["event_type"] == "go"  # b done, waiting for go
    wf.send_event("go", 1)  # sent, but the instance is terminated before it is consumed
    wf.mode = "rollback"
    result = wf.inline()
    assert result.outcome["t"] == "failed"
    assert result.outcome["error"] == {"name": "Terminated", "message": "terminated with rollback"}
    assert result.outcome["rollback"] == {"outcome": "complete", "error": None}
    # Nothing of run() ran: only the handlers' bodies, b's first.
    assert [b["name"] for b in result.begins] == ["rollback:b", "rollback:a"]
    assert wf.journal[("rollback:b", 1)]["output"] == "undid b: terminated with rollback"
    assert ("c", 1) not in wf.journal and [e["type"] for e in wf.events] == ["go"]
    assert result.channel.of("suspend") == []


def test_rollback_mode_stops_at_a_pending_retry_without_suspending_for_it() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Retrying(WorkflowEntrypoint):
            def run(self, event, step):
                step.do("a", lambda: 1, rollback=lambda: "undone")
                def flaky():
                    raise ValueError("later")
                step.do("b", flaky, retries={"limit": 3, "delay": "1 hour"})
        """
    )
    assert wf.inline().outcome["t"] == "suspended"
    wf.mode = "rollback"
    result = wf.inline()
    assert result.outcome["error"]["name"] == "Terminated"
    assert [b["name"] for b in result.begins] == ["rollback:a"]
    assert len(wf.journal[("b", 1)]["attempts"]) == 1  # b did not run again


def test_rollback_mode_keeps_completed_concurrent_steps_whose_sibling_is_missing() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Fan(WorkflowEntrypoint):
            def run(self, event, step):
                @step.do("x", concurrent=True, rollback=lambda: "undid x")
                def x():
                    return 1

                @step.do("y", concurrent=True, rollback=lambda: "undid y")
                def y():
                    return 2

                @step.do("z", depends=[x, y])
                def z(x, y):
                    return 3

                return z()
        """
    )
    wf.inline()
    del wf.journal[("x", 1)], wf.journal[("z", 1)]  # as if the worker died while x ran
    wf.mode = "rollback"
    result = wf.inline()
    assert [b["name"] for b in result.begins] == ["rollback:y"]


def test_rollback_mode_without_handlers_just_terminates() -> None:
    wf = Instance(PARTIAL.replace(", rollback=undo", ""))
    wf.inline()
    wf.mode = "rollback"
    outcome = wf.inline().outcome
    assert outcome["error"]["name"] == "Terminated" and "rollback" not in outcome


def test_a_run_that_catches_the_stop_cannot_continue() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Sneaky(WorkflowEntrypoint):
            def run(self, event, step):
                step.do("a", lambda: 1, rollback=lambda: "undone")
                try:
                    step.do("b", lambda: 2)
                except BaseException:
                    pass
                try:
                    step.do("c", lambda: 3)
                except BaseException:
                    pass
                return "finished anyway"
        """
    )
    wf.inline()
    del wf.journal[("b", 1)], wf.journal[("c", 1)]
    wf.mode = "rollback"
    result = wf.inline()
    assert result.outcome["error"]["name"] == "Terminated"
    assert result.outcome["rollback"] == {"outcome": "complete", "error": None}
    assert [b["name"] for b in result.begins] == ["rollback:a"]  # neither b nor c ran
