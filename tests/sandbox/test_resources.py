"""Resource abuse through a real pool: each ends as a clear error, and a bystander tenant's
replays in the same pool keep succeeding meanwhile."""

from __future__ import annotations

import time

import pytest

from sandbox import Done, Failed, Limits, SandboxPool, Suspended
from tests.sandbox.harness import SMALL, Instance, alongside, idle_pids, named


def in_a_step(body: str, retries: str = '{"limit": 0}', timeout: str = "None") -> str:
    return f"""
from treadle import WorkflowEntrypoint

class Abuse(WorkflowEntrypoint):
    def run(self, event, step):
        def body():
{body}
        return step.do("abuse", body, retries={retries}, timeout={timeout})
"""


INFINITE_LOOP = "            while True:\n                pass"
HUGE_POWER = "            return 7 ** 10 ** 8"
HUGE_STRING = '            return len("a" * 10 ** 10)'
GROWING_LIST = (
    "            x = []\n            while True:\n                x.append(' ' * 10 ** 6)"
)
SWALLOWING_LOOP = (
    "            while True:\n"
    "                try:\n"
    "                    while True:\n"
    "                        pass\n"
    "                except BaseException:\n"
    "                    pass"
)


@pytest.mark.parametrize(
    "body", [INFINITE_LOOP, HUGE_POWER, SWALLOWING_LOOP], ids=["loop", "7**10**8", "swallowing"]
)
def test_cpu_abuse_in_a_step_fails_the_attempt(pool: SandboxPool, body: str) -> None:
    wf = Instance(in_a_step(body))
    started = time.monotonic()
    first = alongside(pool, lambda: wf.through(pool, "abuser"))
    assert time.monotonic() - started < 4.0  # 1 s of CPU, not the 10-minute step timeout
    assert isinstance(first, Suspended)
    record = wf.journal[("abuse", 1)]
    assert record["status"] == "errored"  # retries={"limit": 0}
    expected = {
        "name": "ResourceLimitExceeded",
        "message": "CPU time limit exceeded (step_cpu_ms=1000)",
    }
    assert record["attempts"][0]["error"] == expected
    assert first.wake_at == record["attempts"][0]["ended_at"]  # due now: the next replay raises
    final = wf.through(pool, "abuser")
    assert isinstance(final, Failed) and named(final.error) == expected


def test_a_killed_attempt_is_retried_by_the_announced_config(pool: SandboxPool) -> None:
    wf = Instance(in_a_step(INFINITE_LOOP, retries='{"limit": 2, "delay": "1 minute"}'))
    first = wf.through(pool, "abuser")
    record = wf.journal[("abuse", 1)]
    assert record["status"] == "waiting"
    assert isinstance(first, Suspended)
    assert (
        first.wake_at == record["wake_at"] == pytest.approx(record["attempts"][0]["ended_at"] + 60)
    )


@pytest.mark.parametrize("body", [HUGE_STRING, GROWING_LIST], ids=["a*10**10", "growing list"])
def test_memory_abuse_is_a_memory_error_and_the_worker_is_recycled(
    pool: SandboxPool, body: str
) -> None:
    wf = Instance(in_a_step(body))
    alongside(pool, lambda: wf.through(pool, "hog"))
    attempt = wf.journal[("abuse", 1)]["attempts"][0]
    assert attempt["error"] == {"name": "MemoryError", "message": "out of memory (memory_mb=256)"}
    assert idle_pids(pool, "hog") == []  # that process is gone; the next replay gets a new one
    final = wf.through(pool, "hog")
    assert isinstance(final, Failed) and final.error["name"] == "MemoryError"


def test_a_step_over_its_timeout_is_killed_by_the_wall_clock(pool: SandboxPool) -> None:
    wf = Instance(in_a_step(INFINITE_LOOP, timeout="1"), limits=Limits(step_cpu_ms=10000))
    started = time.monotonic()
    alongside(pool, lambda: wf.through(pool, "slow"))
    assert 0.9 < time.monotonic() - started < 4.0
    error = wf.journal[("abuse", 1)]["attempts"][0]["error"]
    assert error == {"name": "StepTimeout", "message": "step timed out after 1 s"}


def test_cpu_abuse_outside_steps_fails_the_instance(pool: SandboxPool) -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Spin(WorkflowEntrypoint):
            def run(self, event, step):
                step.do("first", lambda: 1)
                while True:
                    pass
        """
    )
    outcome = alongside(pool, lambda: wf.through(pool, "abuser"))
    assert isinstance(outcome, Failed)
    assert outcome.error == {
        "name": "ResourceLimitExceeded",
        "message": "CPU time limit exceeded (step_cpu_ms=1000), while run() was executing "
        "outside a step body",
    }
    assert [r["name"] for r in outcome.records] == ["first"]  # still committed by the engine


def test_a_caught_suspend_that_keeps_running_fails_clearly(pool: SandboxPool) -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Stubborn(WorkflowEntrypoint):
            def run(self, event, step):
                try:
                    step.sleep("nap", "1 hour")
                except BaseException:
                    pass
                while True:
                    try:
                        step.do("again", lambda: 1)
                    except BaseException:
                        pass
        """
    )
    outcome = alongside(pool, lambda: wf.through(pool, "abuser"))
    assert isinstance(outcome, Failed)
    assert outcome.error["name"] == "SuspendIgnored"
    assert "kept running after it suspended" in outcome.error["message"]
    assert "CPU time limit exceeded" in outcome.error["message"]


def test_a_caught_suspend_that_returns_is_still_a_suspend(pool: SandboxPool) -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Returns(WorkflowEntrypoint):
            def run(self, event, step):
                try:
                    step.sleep("nap", "1 hour")
                except BaseException:
                    return "pretend to be done"
        """
    )
    outcome = wf.through(pool, "abuser")
    assert isinstance(outcome, Suspended) and outcome.wake_at is not None
    woken = wf.settle(pool, "abuser")  # once the sleep is over, it returns normally
    assert isinstance(woken, Done) and woken.output is None


def test_the_limits_apply_per_tenant_policy(pool: SandboxPool) -> None:
    roomy = Limits(memory_mb=512, step_cpu_ms=1000)
    wf = Instance(in_a_step('            return len(" " * (300 * 2 ** 20))'), limits=roomy)
    done = wf.settle(pool, "roomy")
    assert isinstance(done, Done) and done.output == 300 * 2**20
    tight = Instance(in_a_step('            return len(" " * (300 * 2 ** 20))'), limits=SMALL)
    assert isinstance(tight.settle(pool, "tight"), Failed)
