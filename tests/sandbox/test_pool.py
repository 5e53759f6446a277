"""SandboxPool behaviour: commits per step, worker reuse and limits, capacity, failures."""

from __future__ import annotations

import fcntl
import os
import signal
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sandbox import Artifact, Done, Failed, Limits, SandboxPool, Suspended
from sandbox._driver import ReplayDriver
from sandbox._worker import Worker
from tests.sandbox.harness import GOOD, SMALL, T0, FakeHost, Instance, artifact, idle_pids
from treadle.errors import CodeInvalid

THREE = """
from treadle import WorkflowEntrypoint

class Three(WorkflowEntrypoint):
    def run(self, event, step):
        print("starting")
        a = step.do("a", lambda: 1)
        b = step.do("b", lambda: a + 1)
        return step.do("c", lambda: b + 1)
"""


def test_three_steps_cost_three_commits(pool: SandboxPool) -> None:
    wf = Instance(THREE)
    host = FakeHost()
    outcome = wf.through(pool, "acme", host)
    assert isinstance(outcome, Done) and outcome.output == 3
    # Steps 1 and 2 are committed when steps 2 and 3 begin; step 3 travels with the outcome,
    # for the engine to commit together with the instance's final state.
    assert [[r["name"] for r in records] for records, _ in host.commits] == [["a"], ["b"]]
    assert [r["name"] for r in outcome.records] == ["c"]
    assert [x["message"] for x in host.commits[0][1]] == ["starting"]  # logs ride along
    assert outcome.logs == []


def test_replays_pick_up_from_the_journal(pool: SandboxPool) -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Flow(WorkflowEntrypoint):
            def run(self, event, step):
                got = step.wait_for_event("go", type="go", timeout="1 hour")
                step.sleep("nap", "1 day")
                return step.do("end", lambda: got["payload"] * 2)
        """
    )
    waiting = wf.through(pool, "acme")
    assert isinstance(waiting, Suspended) and waiting.event_type == "go"
    wf.send_event("go", 21)
    napping = wf.through(pool, "acme")
    assert isinstance(napping, Suspended) and napping.event_type is None
    done = wf.settle(pool, "acme")
    assert isinstance(done, Done) and done.output == 42


def test_validation_runs_in_a_worker_and_lists_problems(pool: SandboxPool) -> None:
    assert pool.validate("acme", artifact(GOOD)) == "Good"
    bad = artifact("import os\nfrom treadle import WorkflowEntrypoint\nx = y.__dict__\n")
    with pytest.raises(CodeInvalid) as caught:
        pool.validate("acme", bad)
    assert [(p["line"], p["column"]) for p in caught.value.problems] == [(1, 1), (1, 1), (3, 5)]
    with pytest.raises(CodeInvalid, match="sandbox 'docker' is not available"):
        pool.validate("acme", Artifact("v", "docker", "", None))


def test_a_failing_commit_kills_the_worker_and_propagates(pool: SandboxPool) -> None:
    wf = Instance(THREE)
    with pytest.raises(RuntimeError, match="lease lost"):
        wf.through(pool, "lossy", FakeHost(fail_with=RuntimeError("lease lost")))
    assert idle_pids(pool, "lossy") == []
    assert isinstance(Instance(THREE).through(pool, "lossy"), Done)


def test_workers_are_reused_per_tenant_and_recycled_when_limits_change(pool: SandboxPool) -> None:
    Instance(GOOD).through(pool, "reuse")
    (first,) = idle_pids(pool, "reuse")
    Instance(GOOD).through(pool, "reuse")
    assert idle_pids(pool, "reuse") == [first]
    Instance(GOOD, limits=Limits(memory_mb=300, step_cpu_ms=1000)).through(pool, "reuse")
    assert len(idle_pids(pool, "reuse")) == 2  # under per_tenant: a second worker
    Instance(GOOD, limits=Limits(memory_mb=320, step_cpu_ms=1000)).through(pool, "reuse")
    pids = idle_pids(pool, "reuse")
    assert len(pids) == 2 and first not in pids  # at per_tenant: the oldest mismatch went


def test_a_worker_that_forgot_a_version_is_sent_the_source_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[bool] = []
    send = ReplayDriver._send_replay

    def spy(driver: ReplayDriver, artifact: Artifact, *, with_source: bool) -> None:
        sent.append(with_source)
        send(driver, artifact, with_source=with_source)

    monkeypatch.setattr(ReplayDriver, "_send_replay", spy)
    small = SandboxPool(max_workers=1, per_tenant=1)
    try:
        for n in range(66):  # one worker caches 64 versions
            assert isinstance(Instance(GOOD.replace("20", str(n))).through(small, "many"), Done)
        sent.clear()
        outcome = Instance(GOOD.replace("20", "0")).through(small, "many")
        assert isinstance(outcome, Done) and outcome.output == 1
        assert sent == [False, True]  # the parent thought it cached; the worker asked again
    finally:
        small.close()


@pytest.fixture
def tiny() -> Iterator[SandboxPool]:
    tiny = SandboxPool(max_workers=2, per_tenant=1, idle_seconds=0.5, acquire_timeout=0.5)
    yield tiny
    tiny.close()


def test_idle_workers_of_other_tenants_are_evicted_least_recently_used_first(
    tiny: SandboxPool,
) -> None:
    for tenant in ("a", "b", "a", "c"):
        Instance(GOOD).through(tiny, tenant)
    assert sorted(w.tenant for w in tiny._idle.values()) == ["a", "c"]


def test_callers_wait_for_a_busy_tenant_and_give_up_in_time(tiny: SandboxPool) -> None:
    slow = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Slow(WorkflowEntrypoint):
            def run(self, event, step):
                def spin():
                    while True:
                        pass
                return step.do("spin", spin)
        """,
        limits=Limits(step_cpu_ms=1500),
    )
    thread = threading.Thread(target=lambda: slow.through(tiny, "busy"))
    thread.start()
    deadline = time.monotonic() + 10
    while tiny._counts.get("busy") != 1 or idle_pids(tiny, "busy"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(TimeoutError, match="no sandbox worker for tenant 'busy'"):
        Instance(GOOD).through(tiny, "busy")
    assert isinstance(Instance(GOOD).through(tiny, "other"), Done)  # another tenant is served
    thread.join()
    assert isinstance(Instance(GOOD).through(tiny, "busy"), Done)


def test_idle_workers_are_stopped_after_idle_seconds(tiny: SandboxPool) -> None:
    Instance(GOOD).through(tiny, "sleepy")
    assert len(idle_pids(tiny, "sleepy")) == 1
    deadline = time.monotonic() + 10
    while idle_pids(tiny, "sleepy"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert tiny._total == 0


def test_many_threads_replay_at_once(pool: SandboxPool) -> None:
    outcomes: list[object] = []

    def work(n: int) -> None:
        for i in range(5):
            outcomes.append(Instance(THREE, instance_id=f"t{n}-{i}").through(pool, f"t{n % 2}"))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 40
    assert all(isinstance(o, Done) and o.output == 3 for o in outcomes)


def test_a_closed_pool_refuses_work() -> None:
    closed = SandboxPool()
    closed.close()
    with pytest.raises(RuntimeError, match="closed"):
        Instance(GOOD).through(closed, "late")


def test_unknown_sandboxes_are_refused(pool: SandboxPool) -> None:
    wf = Instance(GOOD)
    wf.artifact = Artifact("v", "docker", "", None)
    with pytest.raises(ValueError, match="not available"):
        wf.through(pool, "acme")


def test_failures_are_outcomes_not_exceptions(pool: SandboxPool) -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Raise(WorkflowEntrypoint):
            def run(self, event, step):
                raise SystemExit("tenant code cannot stop the worker")
        """,
        limits=SMALL,
    )
    frame = {
        "file": "workflow.py",
        "line": 5,
        "function": "run",
        "source": 'raise SystemExit("tenant code cannot stop the worker")',
    }
    failure = {"name": "SystemExit", "message": "tenant code cannot stop the worker"}
    assert wf.through(pool, "acme") == Failed({**failure, "traceback": [frame]}, [], [])
    assert isinstance(Instance(GOOD, limits=SMALL).through(pool, "acme"), Done)


def _wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return []


def _busy_child(pid: int) -> bool:
    """Whether a worker of the zygote ``pid`` (a child of a keeper) has used a tenth of a
    second of CPU."""
    workers = [w for keeper in _children(pid) for w in _children(int(keeper))]
    for child in workers:
        try:
            fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        if int(fields[11]) > os.sysconf("SC_CLK_TCK") // 10:  # utime, in clock ticks
            return True
    return False


def test_a_worker_that_died_while_idle_is_replaced_silently(tiny: SandboxPool) -> None:
    Instance(GOOD).through(tiny, "fragile")
    (pid,) = idle_pids(tiny, "fragile")
    os.kill(pid, signal.SIGKILL)
    _wait_until(lambda: not Path(f"/proc/{pid}").exists())
    assert isinstance(Instance(GOOD).through(tiny, "fragile"), Done)
    assert idle_pids(tiny, "fragile") != [pid]


@pytest.fixture
def steady() -> Iterator[SandboxPool]:
    """One worker per tenant, and none stopped for idling while a test holds it stopped."""
    steady = SandboxPool(max_workers=2, per_tenant=1, acquire_timeout=5.0)
    yield steady
    steady.close()


def _worker(pool: SandboxPool, pid: int) -> Worker:
    with pool._lock:
        return next(w for w in pool._live.values() if w.pid == pid)


def _unread(worker: Worker) -> int:
    """Bytes the parent sent that the worker has not read yet (``SIOCOUTQ``)."""
    out = fcntl.ioctl(worker._conn.fileno(), termios.TIOCOUTQ, b"\0" * 4)
    return int(struct.unpack("i", out)[0])


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return int(fields[11]) / os.sysconf("SC_CLK_TCK")  # utime


@pytest.mark.parametrize("request_kind", ["replay", "validate"])
def test_a_worker_killed_before_it_took_the_request_is_replaced_silently(
    steady: SandboxPool, request_kind: str
) -> None:
    # The worker passes the pool's check of idle workers, then dies with the request unread
    # (it is stopped meanwhile, so it cannot read it): the request goes to a fresh worker.
    Instance(GOOD).through(steady, "fragile")
    (pid,) = idle_pids(steady, "fragile")
    worker = _worker(steady, pid)
    os.kill(pid, signal.SIGSTOP)
    results: list[object] = []

    def run() -> None:
        try:
            if request_kind == "replay":
                results.append(Instance(GOOD).through(steady, "fragile"))
            else:
                results.append(steady.validate("fragile", artifact(GOOD)))
        except BaseException as exc:
            results.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        _wait_until(lambda: _unread(worker) > 0)  # handed out: the request waits in its socket
    finally:
        os.kill(pid, signal.SIGKILL)
    thread.join(30)
    (result,) = results
    if request_kind == "validate":
        assert result == "Good"
    else:
        assert isinstance(result, Done) and result.output == 21, result
    assert idle_pids(steady, "fragile") not in ([], [pid])


def test_a_worker_killed_in_run_before_it_said_anything_fails_the_attempt(
    steady: SandboxPool,
) -> None:
    # It took the request and ran tenant code: a death now is the attempt's, never retried
    # elsewhere, even though the worker has sent nothing yet.
    spin = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Spin(WorkflowEntrypoint):
            def run(self, event, step):
                while True:
                    pass
        """,
        limits=Limits(step_cpu_ms=20000),
    )
    Instance(GOOD, limits=spin.limits).through(steady, "doomed")
    (pid,) = idle_pids(steady, "doomed")
    outcomes: list[object] = []
    thread = threading.Thread(target=lambda: outcomes.append(spin.through(steady, "doomed")))
    thread.start()
    _wait_until(lambda: _cpu_seconds(pid) > 0.1)  # run() is spinning
    os.kill(pid, signal.SIGKILL)
    thread.join(30)
    assert outcomes == [
        Failed(
            {
                "name": "ResourceLimitExceeded",
                "message": "the sandbox worker was killed (SIGKILL); it may have run out of "
                "memory (memory_mb=256), while run() was executing outside a step body",
            },
            [],
            [],
        )
    ]


def test_a_dead_zygote_is_restarted_and_not_blamed_on_tenants(tiny: SandboxPool) -> None:
    spin = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Spin(WorkflowEntrypoint):
            def run(self, event, step):
                def spin():
                    while True:
                        pass
                return step.do("spin", spin)
        """,
        limits=Limits(step_cpu_ms=20000),
    )
    errors: list[BaseException] = []

    def replay() -> None:
        try:
            spin.through(tiny, "victim")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=replay)
    thread.start()
    _wait_until(lambda: tiny._spawner is not None and tiny._counts.get("victim") == 1)
    zygote = tiny._spawner._process.pid  # type: ignore[union-attr]
    _wait_until(lambda: _busy_child(zygote))  # the step body is spinning
    os.kill(zygote, signal.SIGKILL)
    thread.join(10)
    assert [str(e) for e in errors] == ["the sandbox zygote stopped during the replay"]
    assert spin.journal == {}  # nothing recorded against the instance
    assert isinstance(Instance(GOOD).through(tiny, "victim"), Done)


def test_a_replay_that_waited_for_a_worker_keeps_the_engine_s_time() -> None:
    # The only worker of the tenant is busy for 1.5 s; a replay asked for meanwhile starts
    # then: its clock must have moved on by that much, or its sleep would end early.
    busy = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Busy(WorkflowEntrypoint):
            def run(self, event, step):
                return step.do("a", lambda: self.env.fetch("https://x/sleep/1.5")["status"])
        """
    )
    napper = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Nap(WorkflowEntrypoint):
            def run(self, event, step):
                step.sleep("nap", "1 second")
        """,
        instance_id="inst-2",
    )
    pool = SandboxPool(max_workers=1, per_tenant=1)
    try:
        first = threading.Thread(target=busy.through, args=(pool, "acme"))
        first.start()
        time.sleep(0.3)  # the busy replay holds the worker
        napping = napper.through(pool, "acme")
        first.join(30)
    finally:
        pool.close()
    assert isinstance(napping, Suspended)
    assert napping.wake_at is not None and napping.wake_at - T0 >= 2.0
