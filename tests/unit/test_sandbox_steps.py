"""step.do semantics (docs/tenant-api.md), run in-process through the restricted backend."""

from __future__ import annotations

from sandbox import Limits
from tests.sandbox.harness import SMALL, T0, Instance, named


def test_steps_run_once_and_replay_from_their_records() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Sum(WorkflowEntrypoint):
            def run(self, event, step):
                def first():
                    print("first runs")
                    return event.payload["x"] + 1
                a = step.do("a", first)
                b = step.do("b", lambda: (a, a * 2))
                return {"a": a, "b": b, "id": event.instance_id, "wf": event.workflow}
        """,
        params={"x": 1},
    )
    first = wf.inline()
    assert first.outcome["t"] == "done"
    assert first.outcome["output"] == {"a": 2, "b": [2, 4], "id": "inst-1", "wf": "wf"}
    assert [(r["name"], r["count"], r["status"], r["output"]) for r in first.records] == [
        ("a", 1, "complete", 2),
        ("b", 1, "complete", [2, 4]),
    ]
    again = wf.inline()
    assert again.outcome == {**first.outcome, "logs": []}
    assert again.begins == [] and again.records == []  # nothing ran: replayed from the journal


def test_a_step_result_is_what_a_replay_will_return() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Shape(WorkflowEntrypoint):
            def run(self, event, step):
                value = step.do("t", lambda: (1, 2))
                return isinstance(value, list)
        """
    )
    assert wf.inline().outcome["output"] is True  # a tuple comes back as JSON gives it: a list


def test_a_name_reused_in_a_loop_counts_up() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Loop(WorkflowEntrypoint):
            def run(self, event, step):
                return [step.do("add", lambda ctx: ctx.step.count * 10) for i in range(3)]
        """
    )
    result = wf.inline()
    assert result.outcome["output"] == [10, 20, 30]
    assert [r["count"] for r in result.records] == [1, 2, 3]


def test_ctx_describes_the_attempt() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Ctx(WorkflowEntrypoint):
            def run(self, event, step):
                def body(ctx):
                    step_info = [ctx.step.name, ctx.step.count]
                    return [ctx.attempt, *step_info, ctx.config, ctx.idempotency_key]
                return step.do("s", body, retries={"limit": 2, "delay": "1 minute"}, timeout=30)
        """,
        instance_id="order-7",
    )
    assert wf.inline().outcome["output"] == [
        1,
        "s",
        1,
        {"retries": {"limit": 2, "delay": 60.0, "backoff": "exponential"}, "timeout": 30.0},
        "order-7:s:1",
    ]


def test_decorated_steps_memoize_and_receive_their_dependencies() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Deps(WorkflowEntrypoint):
            def run(self, event, step):
                @step.do("stock", concurrent=True)
                def stock():
                    return 5

                @step.do("fraud", concurrent=True)
                def fraud():
                    return 0.1

                @step.do("decide", depends=[stock, fraud])
                def decision(stock, fraud, ctx):
                    return [stock, fraud, ctx.step.name]

                return [decision(), decision(), stock()]
        """
    )
    result = wf.inline()
    assert result.outcome["output"] == [[5, 0.1, "decide"], [5, 0.1, "decide"], 5]
    assert [r["name"] for r in result.records] == ["stock", "fraud", "decide"]


def test_three_steps_wait_for_two_acks() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Three(WorkflowEntrypoint):
            def run(self, event, step):
                a = step.do("a", lambda: 1)
                b = step.do("b", lambda: a + 1)
                return step.do("c", lambda: b + 1)
        """
    )
    result = wf.inline()
    assert result.outcome["output"] == 3
    assert [m["t"] for m in result.channel.messages] == [
        "begin", "record", "begin", "record", "begin", "record",
    ]  # fmt: skip
    # No ack before the first body (nothing to commit), one before each later body.
    assert result.channel.acks == 2


def test_a_failed_attempt_waits_for_its_retry() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Flaky(WorkflowEntrypoint):
            def run(self, event, step):
                def flaky(ctx):
                    if ctx.attempt < 3:
                        raise ValueError("attempt " + str(ctx.attempt))
                    return ctx.attempt
                retries = {"limit": 3, "delay": "1 minute", "backoff": "linear"}
                return step.do("flaky", flaky, retries=retries)
        """
    )
    first = wf.inline()
    assert first.outcome["t"] == "suspended"
    (record,) = first.records
    assert record["status"] == "waiting"
    assert named(record["attempts"][0]["error"]) == {"name": "ValueError", "message": "attempt 1"}
    assert first.outcome["wake_at"] == record["wake_at"] == record["attempts"][0]["ended_at"] + 60
    assert wf.inline().outcome["t"] == "suspended"  # not due yet: the body does not run
    done = wf.settle_inline()
    assert done.outcome["output"] == 3
    attempts = wf.journal[("flaky", 1)]["attempts"]
    assert [a["success"] for a in attempts] == [False, False, True]
    assert attempts[1]["started_at"] >= attempts[0]["ended_at"] + 60  # linear: 60 s, then 120 s
    assert attempts[2]["started_at"] >= attempts[1]["ended_at"] + 120


def test_a_zero_delay_retries_in_the_same_replay_after_a_commit() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Quick(WorkflowEntrypoint):
            def run(self, event, step):
                def flaky(ctx):
                    if ctx.attempt < 3:
                        raise KeyError("no")
                    return "ok"
                return step.do("flaky", flaky, retries={"limit": 5, "delay": 0})
        """
    )
    result = wf.inline()
    assert result.outcome["output"] == "ok"
    assert [b["attempt"] for b in result.begins] == [1, 2, 3]
    assert result.channel.acks == 2  # each failed attempt is durable before the retry runs
    assert len(wf.journal[("flaky", 1)]["attempts"]) == 3


def test_non_retryable_errors_fail_the_step_at_once_and_can_be_caught() -> None:
    wf = Instance(
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
    result = wf.inline()
    assert result.outcome["output"] == {"caught": "NonRetryableError", "message": "card declined"}
    (record,) = result.records
    assert record["status"] == "errored" and len(record["attempts"]) == 1
    assert wf.inline().outcome == {**result.outcome, "logs": []}  # replays raise it again


def test_an_uncaught_step_failure_fails_the_instance_with_the_original_name() -> None:
    wf = Instance(
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
    result = wf.inline()
    assert result.outcome["t"] == "failed"
    assert named(result.outcome["error"]) == {"name": "KeyError", "message": "'missing'"}
    assert len(wf.journal[("lookup", 1)]["attempts"]) == 2


def test_results_must_be_json_and_within_the_size_limit() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint, StepError

        class Results(WorkflowEntrypoint):
            def run(self, event, step):
                caught = []
                for name, fn in [("set", lambda: {1, 2}), ("nan", lambda: float("nan")),
                                 ("big", lambda: "x" * 2000)]:
                    try:
                        step.do(name, fn)
                    except StepError as e:
                        caught.append([e.name, str(e)])
                return caught
        """,
        limits=Limits(max_step_result_bytes=1000),
    )
    result = wf.inline()
    caught = result.outcome["output"]
    assert [c[0] for c in caught] == ["TypeError", "TypeError", "LimitExceeded"]
    assert "the result of step 'set' is not JSON-serializable" in caught[0][1]
    assert "2002 bytes, over the limit of 1000" in caught[2][1]
    assert all(len(r["attempts"]) == 1 for r in result.records)  # not retried


def test_results_the_platform_cannot_store_fail_the_step_once() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint, StepError

        class Results(WorkflowEntrypoint):
            def run(self, event, step):
                def deep():
                    value = []
                    for _ in range(300):
                        value = [value]
                    return value

                caught = []
                for name, fn in [("big", lambda: [2**53, 2**64 + 1]),
                                 ("nul", lambda: {"a": "x" + chr(0)}),
                                 ("lone", lambda: chr(0xD800)),
                                 ("deep", deep),
                                 ("min", lambda: -(2**53))]:
                    try:
                        caught.append(step.do(name, fn))
                    except StepError as e:
                        caught.append([e.name, str(e)])
                return caught
        """
    )
    result = wf.inline()
    caught = result.outcome["output"]
    assert [c[0] for c in caught[:4]] == ["ValueNotStorable"] * 4
    assert caught[0][1] == (
        "the result of step 'big' cannot be stored: at [1], the integer 18446744073709551617 "
        "is beyond ±2^53 (9007199254740992), where JSON numbers lose precision; send it as a "
        "string"
    )
    assert "at a, a string holds U+0000 (NUL)" in caught[1][1]
    assert "a string holds a lone surrogate (U+D800)" in caught[2][1]
    assert "nested more than 256 levels deep" in caught[3][1]
    assert caught[4] == -(2**53)
    assert all(len(r["attempts"]) == 1 for r in result.records)  # not retried


def test_step_names_and_printed_text_that_cannot_be_stored() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Names(WorkflowEntrypoint):
            def run(self, event, step):
                print("a" + chr(0) + "b", chr(0xDFFF))
                try:
                    step.do("x" + chr(0), lambda: 1)
                except ValueError as e:
                    return str(e)
        """
    )
    result = wf.inline()
    assert result.outcome["output"] == "a step name holds U+0000 (NUL), which cannot be stored"
    assert [line["message"] for line in result.logs] == ["a\ufffdb \ufffd"]
    assert result.records == []


def test_steps_cannot_be_nested() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Nest(WorkflowEntrypoint):
            def run(self, event, step):
                return step.do("outer", lambda: step.do("inner", lambda: 1))
        """
    )
    result = wf.inline()
    assert result.outcome["error"]["name"] == "NonRetryableError"
    assert "steps cannot be nested" in result.outcome["error"]["message"]
    assert [r["name"] for r in result.records] == ["outer"]


def test_step_names_are_checked() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Names(WorkflowEntrypoint):
            def run(self, event, step):
                problems = []
                for name in ["", "x" * 257, 3]:
                    try:
                        step.do(name, lambda: 1)
                    except ValueError as e:
                        problems.append(str(e))
                step.do("x" * 256, lambda: 1)
                return problems
        """
    )
    problems = wf.inline().outcome["output"]
    assert len(problems) == 3
    assert all("non-empty string of at most 256 characters" in p for p in problems)


def test_too_many_steps_fail_the_instance_even_if_caught() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Many(WorkflowEntrypoint):
            def run(self, event, step):
                try:
                    for i in range(10):
                        step.do("s", lambda: 1)
                except BaseException:
                    pass
                return "swallowed"
        """,
        limits=Limits(max_steps_per_instance=3),
    )
    result = wf.inline()
    assert result.outcome["t"] == "failed"
    assert result.outcome["error"]["name"] == "LimitExceeded"
    assert "more than 3 steps" in result.outcome["error"]["message"]
    assert len(result.records) == 3


def test_calling_steps_differently_on_replay_is_reported() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Changed(WorkflowEntrypoint):
            def run(self, event, step):
                return step.do("x", lambda: 1)
        """
    )
    wf.journal[("x", 1)] = {"name": "x", "count": 1, "type": "sleep", "status": "complete"}
    error = wf.inline().outcome["error"]
    assert error["name"] == "NondeterminismError"
    assert "recorded as sleep" in error["message"]


def test_print_goes_to_the_log_tagged_with_its_step() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Logs(WorkflowEntrypoint):
            def run(self, event, step):
                print("outside", 1)
                def body():
                    print("inside", "a", sep="-")
                    return 1
                step.do("b", body)
                return None
        """
    )
    logs = wf.inline().logs
    assert [(x["step"], x["message"]) for x in logs] == [(None, "outside 1"), ("b", "inside-a")]
    assert all(x["ts"] >= T0 for x in logs)


def test_log_volume_is_capped_per_replay() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Chatty(WorkflowEntrypoint):
            def run(self, event, step):
                for i in range(5000):
                    print("line", i)
                print("x" * 100000)
        """
    )
    logs = wf.inline().logs
    assert len(logs) == 1001
    assert "dropped" in logs[-1]["message"]


def test_run_must_return_json() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Bad(WorkflowEntrypoint):
            def run(self, event, step):
                return step
        """
    )
    error = wf.inline().outcome["error"]
    assert error["name"] == "TypeError"
    assert "the value run() returned is not JSON-serializable" in error["message"]


def test_env_vars_are_read_only_and_self_is_writable() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Env(WorkflowEntrypoint):
            def run(self, event, step):
                self.seen = self.env.vars["region"]
                try:
                    self.env.vars["region"] = "mars"
                except TypeError:
                    self.blocked = True
                return [self.seen, self.blocked, event.timestamp]
        """,
        vars={"region": "eu"},
    )
    assert wf.inline().outcome["output"] == ["eu", True, "2023-11-14T22:13:20.000Z"]


def test_module_state_does_not_leak_between_replays() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        calls = []

        class Fresh(WorkflowEntrypoint):
            def run(self, event, step):
                calls.append(1)
                return len(calls)
        """
    )
    assert [wf.inline().outcome["output"] for _ in range(3)] == [1, 1, 1]


def test_memory_errors_are_named_and_spend_the_worker() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Hungry(WorkflowEntrypoint):
            def run(self, event, step):
                raise MemoryError()
        """,
        limits=SMALL,
    )
    result = wf.inline()
    assert result.outcome["error"] == {
        "name": "MemoryError",
        "message": "out of memory (memory_mb=256)",
    }
    assert result.spent
