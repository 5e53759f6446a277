"""Fan-out and fan-in (``concurrent=True``, ``depends=[...]``), run in-process."""

from __future__ import annotations

import time

from tests.sandbox.harness import FakeHost, Instance, named

FAN = """
from treadle import WorkflowEntrypoint

class Fan(WorkflowEntrypoint):
    def run(self, event, step):
        # Three steps of one name: the first is the slowest, so it finishes last.
        @step.do("fetch", concurrent=True)
        def first(ctx):
            return [ctx.step.count, self.env.fetch("https://x/sleep/0.4").status]

        @step.do("fetch", concurrent=True)
        def second(ctx):
            return [ctx.step.count, self.env.fetch("https://x/sleep/0.2").status]

        @step.do("fetch", concurrent=True)
        def third(ctx):
            return [ctx.step.count, self.env.fetch("https://x/sleep/0").status]

        @step.do("join", depends=[first, second, third])
        def join(first, second, third, ctx):
            return {"first": first, "second": second, "third": third, "count": ctx.step.count}

        return join()
"""


def test_concurrent_dependencies_run_in_parallel_and_are_injected_by_name() -> None:
    wf = Instance(FAN)
    started = time.monotonic()
    result = wf.inline(FakeHost())
    assert time.monotonic() - started < 0.6  # 0.4 s, not 0.6 s one after the other
    assert result.outcome["output"] == {
        "first": [1, 200],
        "second": [2, 200],
        "third": [3, 200],
        "count": 1,
    }
    # Each dependency is recorded on its own, as soon as it finishes.
    assert [(r["name"], r["count"]) for r in result.records] == [
        ("fetch", 3), ("fetch", 2), ("fetch", 1), ("join", 1),
    ]  # fmt: skip


def test_counts_follow_program_order_on_every_replay() -> None:
    # Counts are assigned when join() is called, never in the order threads finish.
    wf = Instance(FAN)
    wf.inline(FakeHost())
    recorded = {key: record["output"] for key, record in wf.journal.items()}
    assert recorded[("fetch", 1)] == [1, 200] and recorded[("fetch", 3)] == [3, 200]
    again = wf.inline(FakeHost())
    assert again.records == [] and again.begins == []  # replayed from the records
    assert again.outcome["output"]["first"] == [1, 200]


def test_a_partly_recorded_fan_out_runs_only_what_is_missing() -> None:
    wf = Instance(FAN)
    wf.inline(FakeHost())
    del wf.journal[("fetch", 2)], wf.journal[("join", 1)]
    result = wf.inline(FakeHost())
    assert [(b["name"], b["count"]) for b in result.begins] == [("fetch", 2), ("join", 1)]
    assert result.outcome["output"]["second"] == [2, 200]


def test_plain_dependencies_run_one_at_a_time_in_order() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Plain(WorkflowEntrypoint):
            def run(self, event, step):
                @step.do("a")
                def a():
                    return 1

                @step.do("b", concurrent=True)
                def b():
                    return 2

                @step.do("c", depends=[a])
                def c(a):
                    return a + 10

                @step.do("d", concurrent=True)
                def d():
                    return 4

                @step.do("e", depends=[b, c, d])
                def e(b, c, d):
                    return [b, c, d]

                return e()
        """
    )
    result = wf.inline()
    assert result.outcome["output"] == [2, 11, 4]
    # The first ready step decides: b (concurrent) runs with d; then a alone, then c, then e.
    assert [b["name"] for b in result.begins] == ["b", "d", "a", "c", "e"]
    assert [r["name"] for r in result.records][2:] == ["a", "c", "e"]
    # Keys were assigned in program order (dependencies first), whatever ran first.
    assert [(b["name"], b["count"]) for b in result.begins][2:] == [("a", 1), ("c", 1), ("e", 1)]


def test_nested_dependencies_and_a_shared_dependency_run_once() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Diamond(WorkflowEntrypoint):
            def run(self, event, step):
                @step.do("root", concurrent=True)
                def root():
                    return 1

                @step.do("left", concurrent=True, depends=[root])
                def left(root):
                    return root + 1

                @step.do("right", concurrent=True, depends=[root])
                def right(root):
                    return root + 2

                @step.do("top", depends=[left, right])
                def top(left, right):
                    return left * right

                return [top(), root(), left()]
        """
    )
    result = wf.inline()
    assert result.outcome["output"] == [6, 1, 2]
    assert sorted((r["name"], r["count"]) for r in result.records) == [
        ("left", 1), ("right", 1), ("root", 1), ("top", 1),
    ]  # fmt: skip


def test_the_first_failed_dependency_in_program_order_fails_the_dependent() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint, NonRetryableError, StepError

        class Fail(WorkflowEntrypoint):
            def run(self, event, step):
                @step.do("slow bad", concurrent=True)
                def slow_bad():
                    self.env.fetch("https://x/sleep/0.2")
                    raise NonRetryableError("first")

                @step.do("fast bad", concurrent=True)
                def fast_bad():
                    raise NonRetryableError("second")

                @step.do("after", depends=[slow_bad, fast_bad])
                def after(slow_bad, fast_bad):
                    return "unreachable"

                try:
                    after()
                except StepError as e:
                    return [str(e), e.name]
        """
    )
    result = wf.inline(FakeHost())
    # "first" is the first dependency in program order, although "second" failed earlier.
    assert result.outcome["output"] == ["first", "NonRetryableError"]
    assert [r["name"] for r in result.records] == ["fast bad", "slow bad"]  # after never ran
    assert wf.inline().outcome["output"] == ["first", "NonRetryableError"]  # and on replay


def test_a_failed_dependency_stops_the_fan_out() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint, NonRetryableError

        class Stop(WorkflowEntrypoint):
            def run(self, event, step):
                @step.do("bad")
                def bad():
                    raise NonRetryableError("no")

                @step.do("never")
                def never():
                    return 1

                @step.do("join", depends=[bad, never])
                def join(bad, never):
                    return 2

                return join()
        """
    )
    result = wf.inline()
    assert named(result.outcome["error"]) == {"name": "NonRetryableError", "message": "no"}
    assert [r["name"] for r in result.records] == ["bad"]


def test_concurrent_retries_run_again_when_due_and_suspend_when_not() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Retry(WorkflowEntrypoint):
            def run(self, event, step):
                @step.do("quick", concurrent=True, retries={"limit": 3, "delay": 0})
                def quick(ctx):
                    if ctx.attempt < 2:
                        raise ValueError("again")
                    return ctx.attempt

                @step.do("slow", concurrent=True, retries={"limit": 3, "delay": "1 minute"})
                def slow(ctx):
                    if ctx.attempt < 2:
                        raise ValueError("later")
                    return ctx.attempt

                @step.do("join", depends=[quick, slow])
                def join(quick, slow):
                    return [quick, slow]

                return join()
        """
    )
    first = wf.inline()
    assert first.outcome["t"] == "suspended"
    assert first.outcome["wake_at"] == wf.journal[("slow", 1)]["wake_at"]
    assert wf.journal[("quick", 1)]["status"] == "complete"  # its 0 s retry ran at once
    assert wf.inline().begins == []  # not due yet: nothing runs
    done = wf.settle_inline()
    assert done.outcome["output"] == [2, 2]


def test_calling_an_unsettled_handle_inside_a_body_is_nesting() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint, NonRetryableError, StepError

        class Nest(WorkflowEntrypoint):
            def run(self, event, step):
                @step.do("inner")
                def inner():
                    return 1

                @step.do("outer", depends=[inner])
                def outer(inner):
                    return inner

                @step.do("bad")
                def bad():
                    raise NonRetryableError("no")

                @step.do("left over")  # keyed when join() was called, never run
                def left_over():
                    return 2

                @step.do("join", depends=[bad, left_over])
                def join(bad, left_over):
                    return 3

                problems = []
                for sneaky in (outer, left_over):
                    try:
                        join()
                    except StepError:
                        pass
                    try:
                        step.do("sneaky", lambda: sneaky())
                    except StepError as e:
                        problems.append(str(e))
                return problems
        """
    )
    assert wf.inline().outcome["output"] == [
        "steps cannot be nested: step.do('outer') was called inside the body of step 'sneaky'",
        "steps cannot be nested: step.do('left over') was called inside the body of step 'sneaky'",
    ]


def test_concurrent_bodies_log_under_their_own_step() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Logs(WorkflowEntrypoint):
            def run(self, event, step):
                @step.do("a", concurrent=True)
                def a():
                    print("in a")
                    self.env.fetch("https://x/sleep/0.05")
                    print("still a")

                @step.do("b", concurrent=True)
                def b():
                    print("in b")
                    self.env.fetch("https://x/sleep/0.05")
                    print("still b")

                @step.do("both", depends=[a, b])
                def both(a, b):
                    return None

                both()
        """
    )
    logs = wf.inline(FakeHost()).logs
    assert sorted((x["step"], x["message"]) for x in logs) == [
        ("a", "in a"), ("a", "still a"), ("b", "in b"), ("b", "still b"),
    ]  # fmt: skip


def test_a_fan_out_made_in_a_loop_fans_in_without_parameters() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Many(WorkflowEntrypoint):
            def run(self, event, step):
                parts = []
                for i in range(20):  # more than a worker's 8 threads
                    @step.do("part", concurrent=True)
                    def part(ctx):
                        return ctx.step.count * 10

                    parts.append(part)

                @step.do("all parts", depends=parts)
                def all_parts():  # waits for every part; takes none of their values
                    return len(parts)

                return [all_parts(), [p() for p in parts]]
        """
    )
    result = wf.inline()
    assert result.outcome["output"] == [20, [n * 10 for n in range(1, 21)]]
    assert len(result.records) == 21 and result.records[-1]["name"] == "all parts"


def test_dependencies_passed_under_one_name_are_refused() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Clash(WorkflowEntrypoint):
            def run(self, event, step):
                @step.do("a")
                def value():
                    return 1

                first = value

                @step.do("b")
                def value():
                    return 2

                try:
                    @step.do("sum", depends=[first, value])
                    def total(value):
                        return value
                except TypeError as e:
                    return str(e)
        """
    )
    assert wf.inline().outcome["output"] == (
        "step.do('sum'): several values would be passed as 'value'; "
        "give the dependencies' functions different names"
    )


def test_begins_go_out_in_program_order_and_records_are_acked_before_later_bodies() -> None:
    wf = Instance(FAN)
    result = wf.inline(FakeHost())
    messages = result.channel.messages
    begins = [(m["name"], m["count"]) for m in messages if m["t"] == "begin"]
    assert begins == [("fetch", 1), ("fetch", 2), ("fetch", 3), ("join", 1)]
    for count in (1, 2, 3):  # each body's host call comes after its begin
        begin = next(i for i, m in enumerate(messages) if m.get("count") == count)
        assert any(m["t"] == "call" for m in messages[begin:])
    # join begins after the three records, and waits for their commit (one ack) first.
    kinds = [m["t"] for m in messages]
    assert kinds[-5:] == ["record", "record", "record", "begin", "record"]
    assert result.channel.acks == 1
