"""Validation through a real pool: a deadline the platform enforces, and no wait for a worker."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

from sandbox import Limits, SandboxPool
from tests.sandbox.harness import GOOD, Instance, artifact, idle_pids
from treadle.errors import CodeInvalid

ENDLESS = GOOD + "\nwhile True:\n    pass\n"
BUSY = """
from treadle import WorkflowEntrypoint

class Busy(WorkflowEntrypoint):
    def run(self, event, step):
        def spin():
            while True:
                pass
        return step.do("spin", spin)
"""


@pytest.fixture
def one_each() -> Iterator[SandboxPool]:
    pool = SandboxPool(max_workers=2, per_tenant=1, acquire_timeout=0.5)
    yield pool
    pool.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_module_that_never_loads_is_refused_at_the_deadline_and_its_worker_killed(
    one_each: SandboxPool,
) -> None:
    Instance(GOOD).through(one_each, "looper")
    (pid,) = idle_pids(one_each, "looper")
    started = time.monotonic()
    with pytest.raises(CodeInvalid) as caught:
        one_each.validate("looper", artifact(ENDLESS), timeout=0.5)
    assert time.monotonic() - started < 3  # not its CPU limit (30 s by default)
    (problem,) = caught.value.problems
    assert problem["message"] == (
        "the code could not be checked in the sandbox: it did not finish loading within 0.5 s"
    )
    deadline = time.monotonic() + 5
    while _alive(pid):
        assert time.monotonic() < deadline, "the looping worker is still alive"
        time.sleep(0.02)
    assert idle_pids(one_each, "looper") == [] and one_each._counts.get("looper") is None
    assert one_each.validate("looper", artifact(GOOD), timeout=5) == "Good"


def test_validation_does_not_wait_for_workers_busy_replaying(one_each: SandboxPool) -> None:
    busy = Instance(BUSY, limits=Limits(step_cpu_ms=3000))  # spins until its CPU limit
    thread = threading.Thread(target=lambda: busy.through(one_each, "busy"))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while one_each._counts.get("busy") != 1 or idle_pids(one_each, "busy"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        started = time.monotonic()
        assert one_each.validate("busy", artifact(GOOD), timeout=5) == "Good"
        assert time.monotonic() - started < 2.5
        # The spare worker was stopped: the tenant still has its one, replaying.
        assert one_each._counts["busy"] == 1 and idle_pids(one_each, "busy") == []
    finally:
        thread.join()
