"""Concurrent steps, host calls, rollbacks and stops through a real pool."""

from __future__ import annotations

import time

import pytest

from sandbox import Done, Failed, Limits, SandboxPool, Suspended
from tests.sandbox.harness import SMALL, FakeHost, Instance, idle_pids, named

TWO_SLOW = """
from treadle import WorkflowEntrypoint

class Two(WorkflowEntrypoint):
    def run(self, event, step):
        @step.do("left", concurrent=True)
        def left():
            return self.env.fetch("https://x/sleep/1.5").status

        @step.do("right", concurrent=True)
        def right():
            return self.env.fetch("https://x/sleep/1.5").json()["url"]

        @step.do("both", depends=[left, right])
        def both(left, right):
            return [left, right]

        return both()
"""


def test_two_concurrent_bodies_blocked_for_1_5_s_finish_together(pool: SandboxPool) -> None:
    wf = Instance(TWO_SLOW)
    host = FakeHost()
    started = time.monotonic()
    outcome = wf.through(pool, "fan", host)
    assert time.monotonic() - started < 2.5
    assert isinstance(outcome, Done) and outcome.output == [200, "https://x/sleep/1.5"]
    # The first body to finish was committed at once, the other before "both" began; "both"
    # came with the outcome.
    assert sorted(r["name"] for records, _ in host.commits for r in records) == ["left", "right"]
    assert [len(records) for records, _ in host.commits] == [1, 1]
    assert host.running == [True, False]
    assert [r["name"] for r in outcome.records] == ["both"]
    assert len(host.calls) == 2
    again = wf.through(pool, "fan", host)
    assert isinstance(again, Done) and again.output == outcome.output and len(host.calls) == 2


THREE_WAYS = """
from treadle import WorkflowEntrypoint

class Three(WorkflowEntrypoint):
    def run(self, event, step):
        @step.do("quick", concurrent=True)
        def quick():
            return 1

        @step.do("late", concurrent=True, timeout="1 second")
        def late():
            return self.env.fetch("https://x/sleep/1.5").status

        @step.do("waiting", concurrent=True)
        def waiting():
            return self.env.fetch("https://x/sleep/1.5").status

        @step.do("all", depends=[quick, late, waiting])
        def all(quick, late, waiting):
            return None

        return all()
"""


def test_a_timeout_among_concurrent_bodies_fails_each_running_one_for_what_it_was(
    pool: SandboxPool,
) -> None:
    wf = Instance(THREE_WAYS)
    outcome = wf.through(pool, "fan")
    assert isinstance(outcome, Suspended)
    quick, late, waiting = (wf.journal[(n, 1)] for n in ("quick", "late", "waiting"))
    assert quick["status"] == "complete"
    assert late["attempts"][0]["error"] == {
        "name": "StepTimeout",
        "message": "step timed out after 1 s",
    }
    assert waiting["attempts"][0]["error"] == {
        "name": "StepInterrupted",
        "message": "the sandbox worker was stopped because step 'late' timed out",
    }
    assert late["status"] == waiting["status"] == "waiting"
    assert idle_pids(pool, "fan") == [] or True  # the killed worker is not reused
    assert isinstance(Instance(TWO_SLOW).through(pool, "fan"), Done)


def test_a_cpu_limit_death_during_concurrent_bodies_fails_every_running_one(
    pool: SandboxPool,
) -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Burn(WorkflowEntrypoint):
            def run(self, event, step):
                @step.do("spin", concurrent=True, retries={"limit": 0})
                def spin():
                    while True:
                        pass

                # Long enough that 1 s of CPU time runs out first even on a loaded machine.
                @step.do("wait", concurrent=True, retries={"limit": 0})
                def wait():
                    return self.env.fetch("https://x/sleep/4").status

                @step.do("done", concurrent=True)
                def done():
                    return "fine"

                @step.do("all", depends=[spin, wait, done])
                def all(spin, wait, done):
                    return None

                return all()
        """
    )
    outcome = wf.through(pool, "burn")
    assert isinstance(outcome, Suspended)
    cpu = {"name": "ResourceLimitExceeded", "message": "CPU time limit exceeded (step_cpu_ms=1000)"}
    # The process is shared: whichever thread burned the CPU, both running bodies died with it.
    assert wf.journal[("spin", 1)]["error"] == wf.journal[("wait", 1)]["error"] == cpu
    assert wf.journal[("done", 1)]["status"] == "complete"
    final = wf.through(pool, "burn")
    assert isinstance(final, Failed) and named(final.error) == cpu


SAGA = """
from treadle import WorkflowEntrypoint

class Saga(WorkflowEntrypoint):
    def run(self, event, step):
        def cancel(ctx):
            return self.env.fetch("https://x/cancel/" + ctx.output, method="DELETE").status

        step.do("reserve", lambda: "r1", rollback=cancel)
        step.do("charge", lambda: "c1", rollback=cancel)
        if event.payload == "fail":
            raise ValueError("shipping failed")
        step.sleep("wait", "1 hour")
        return "ok"
"""


def test_rollbacks_run_through_the_pool(pool: SandboxPool) -> None:
    wf = Instance(SAGA, params="fail")
    host = FakeHost()
    outcome = wf.through(pool, "saga", host)
    assert isinstance(outcome, Failed)
    assert named(outcome.error) == {"name": "ValueError", "message": "shipping failed"}
    assert outcome.rollback == {"outcome": "complete", "error": None}
    rollbacks = [(r["name"], r["type"], r["output"]) for r in wf.journal.values()]
    assert rollbacks[-2:] == [
        ("rollback:charge", "rollback", 200),
        ("rollback:reserve", "rollback", 200),
    ]
    assert [args["url"] for _, args in host.calls] == ["https://x/cancel/c1", "https://x/cancel/r1"]


def test_terminate_with_rollback_through_the_pool(pool: SandboxPool) -> None:
    wf = Instance(SAGA, params="wait")
    assert isinstance(wf.through(pool, "saga"), Suspended)  # sleeping for an hour
    wf.mode = "rollback"
    host = FakeHost()
    outcome = wf.through(pool, "saga", host)
    assert isinstance(outcome, Failed)
    assert outcome.error == {"name": "Terminated", "message": "terminated with rollback"}
    assert outcome.rollback == {"outcome": "complete", "error": None}
    assert len(host.calls) == 2 and ("wait", 1) in wf.journal


def test_a_failing_commit_stops_a_fan_out_and_nothing_more_is_reported(
    pool: SandboxPool,
) -> None:
    # The engine pauses or terminates a running instance by raising from commit.
    wf = Instance(TWO_SLOW)
    host = FakeHost(RuntimeError("pause requested"))
    with pytest.raises(RuntimeError, match="pause requested"):
        wf.through(pool, "stopped", host)
    assert host.events == ["call fetch", "call fetch", "commit"] and host.commits == []
    assert idle_pids(pool, "stopped") == []  # the worker was killed
    assert isinstance(Instance(TWO_SLOW).through(pool, "stopped"), Done)


def test_children_through_the_pool(pool: SandboxPool) -> None:
    parent_id = "p" * 100  # the child's default id is hashed to 94 characters
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Parent(WorkflowEntrypoint):
            def run(self, event, step):
                child = self.env.workflows.create("resize", params={"w": 10})
                return [child.id, child.result()]
        """,
        instance_id=parent_id,
    )
    host = FakeHost()
    waiting = wf.through(pool, "parent", host)
    (child,) = host.children
    assert isinstance(waiting, Suspended) and waiting.event_type == f"child.{child}"
    assert len(child) == 94
    wf.send_event(f"child.{child}", {"status": "complete", "output": 20, "error": None})
    done = wf.through(pool, "parent", host)
    assert isinstance(done, Done) and done.output == [child, 20]
    assert len(host.calls) == 1


def test_a_small_pool_still_serves_everyone_while_bodies_wait(pool: SandboxPool) -> None:
    # Bodies waiting on host calls hold their worker, not the pool: others are served.
    slow = Instance(TWO_SLOW)
    started = time.monotonic()
    outcome = slow.through(pool, "fan2")
    assert isinstance(outcome, Done) and time.monotonic() - started < 2.5
    assert SMALL.step_cpu_ms == 1000


def test_eight_threads_leave_the_memory_limit_to_tenant_code(pool: SandboxPool) -> None:
    # glibc would give each thread a malloc arena reserving 64 MiB of the address space that
    # RLIMIT_AS counts: 8 threads of a 128 MB worker would run out of it on their own.
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Wide(WorkflowEntrypoint):
            def run(self, event, step):
                parts = []
                for i in range(8):
                    @step.do("part", concurrent=True, retries={"limit": 0})
                    def part(ctx):
                        kept = ["x" * 1000 + str(n) for n in range(2000)]  # malloc'd
                        self.env.fetch("https://x/sleep/0.2")
                        if ctx.step.count == 8:  # while the others still hold theirs
                            return len("y" * (40 * 1024 * 1024))
                        return len(kept)

                    parts.append(part)

                @step.do("all", depends=parts)
                def all():
                    return None

                all()
                return [p() for p in parts]
        """,
        limits=Limits(memory_mb=128, step_cpu_ms=1000),
    )
    started = time.monotonic()
    outcome = wf.through(pool, "wide")
    assert isinstance(outcome, Done), outcome
    assert outcome.output == [2000] * 7 + [40 * 1024 * 1024]
    assert time.monotonic() - started < 1.5  # in parallel, not 8 times 0.2 s


def test_host_calls_do_not_give_a_busy_body_more_cpu_time(pool: SandboxPool) -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Busy(WorkflowEntrypoint):
            def run(self, event, step):
                def body():
                    for chunk in range(40):  # about 4 s of CPU, in 100 ms pieces between calls
                        total = 0
                        for n in range(1500000):
                            total += n
                        self.env.fetch("https://x/api")
                    return "finished"

                return step.do("busy", body, retries={"limit": 0})
        """
    )
    started = time.monotonic()
    outcome = wf.through(pool, "busy")
    assert isinstance(outcome, Suspended) and time.monotonic() - started < 3.5
    assert wf.journal[("busy", 1)]["error"] == {
        "name": "ResourceLimitExceeded",
        "message": "CPU time limit exceeded (step_cpu_ms=1000)",
    }
