"""The parent's side of a replay, against a scripted worker: commits, deaths, bad messages."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from sandbox import Artifact, Deadline, Failed, Limits, ReplayRequest, Suspended
from sandbox._driver import ReplayDriver
from sandbox._hostcalls import HostCalls
from sandbox._worker import Worker, WorkerGone, describe_exit
from tests.sandbox.harness import T0, FakeHost
from treadle.runtime._records import new_record

RETRIES = {"limit": 2, "delay": 60.0, "backoff": "constant"}


SILENCE = object()  # in a script: nothing arrives before the driver's deadline
UNTIL_KILLED = object()  # in a script: nothing arrives until the worker is killed (then EOF)


class ScriptedWorker:
    """Replies with ``script`` (messages, exceptions to raise, ``SILENCE``, or callables that
    return the next message) and records what it got, host call replies included."""

    def __init__(self, script: list[Any], death: tuple[str, str] = ("SandboxCrashed", "died")):
        self.script = list(script)
        self.sent: list[dict[str, Any]] = []
        self.limits = Limits(step_cpu_ms=1000)
        self.tenant = "t"
        self.versions: set[str] = set()
        self.usable = True
        self.closed = False
        self.outside_budget = 5.0
        self.zygote_alive = True
        self.send_fails = False
        self.deadlines: list[float] = []
        self.killed = threading.Event()
        self.cpu_reads = 0  # each read of the CPU clock finds 3 ms more
        self._death = death
        self._lock = threading.Lock()

    def idle_and_alive(self) -> bool:
        return not self.closed

    def cpu_ns(self) -> int | None:
        self.cpu_reads += 1
        return None if self.closed else 3_000_000 * self.cpu_reads

    def send(self, message: dict[str, Any]) -> None:
        if self.send_fails:
            raise EOFError("gone")
        with self._lock:
            self.sent.append(message)

    def recv(self, deadline: float) -> dict[str, Any]:
        self.deadlines.append(deadline)
        item = self.script.pop(0)
        if item is SILENCE:
            time.sleep(max(0.0, deadline - time.monotonic()))
            raise TimeoutError()
        if item is UNTIL_KILLED:
            assert self.killed.wait(10), "the worker was never killed"
            raise EOFError("killed")
        if callable(item):
            item = item()
        if isinstance(item, BaseException):
            raise item
        return dict(item)

    def replies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [m for m in self.sent if m["t"] == "reply"]

    def kill(self) -> None:
        self.usable = False
        self.killed.set()

    def close(self) -> None:
        self.closed = True
        self.usable = False

    def death(self) -> tuple[str, str]:
        return self._death


def begin(name: str, attempt: int = 1, timeout: float = 30.0, **extra: Any) -> dict[str, Any]:
    return {"t": "begin", "name": name, "count": 1, "attempt": attempt, "timeout": timeout,
            "retries": RETRIES, "logs": [], **extra}  # fmt: skip


def record(name: str, output: Any = 1, **extra: Any) -> dict[str, Any]:
    attempt = {"started_at": T0, "ended_at": T0, "success": True, "error": None}
    rec = new_record(name, 1, "do")
    rec.update(status="complete", output=output, attempts=[attempt])
    rec.update(extra)
    return {"t": "record", "record": rec, "logs": []}


def drive(
    script: list[Any],
    journal: list[dict[str, Any]] | None = None,
    fake: ScriptedWorker | None = None,
    host: FakeHost | None = None,
    mode: str = "run",
    **worker: Any,
) -> Any:
    fake = fake or ScriptedWorker(script, **worker)
    host = host or FakeHost()
    request = ReplayRequest("i", "wf", T0, None, journal or [], [{"pk": 7, "type": "go",
                            "payload": 1, "timestamp": T0}], T0, {}, mode)  # fmt: skip
    driver = ReplayDriver(fake, request, host)  # type: ignore[arg-type]
    outcome = driver.run(Artifact("v1", "restricted", "source"))
    return outcome, fake, host


def test_records_are_committed_before_the_next_body_and_then_acknowledged() -> None:
    done = {"t": "done", "output": 2, "logs": [{"ts": T0, "step": None, "message": "end"}]}
    outcome, fake, host = drive([begin("a"), record("a"), begin("b"), record("b"), done])
    assert [[r["name"] for r in c[0]] for c in host.commits] == [["a"]]
    assert [m["t"] for m in fake.sent] == ["replay", "ack"]
    assert fake.sent[0]["source"] == "source" and fake.versions == {"v1"}
    assert [r["name"] for r in outcome.records] == ["b"]
    assert outcome.logs == [{"ts": T0, "step": None, "message": "end"}]


def test_what_the_worker_spent_goes_with_each_commit_and_the_rest_with_the_outcome() -> None:
    done = {"t": "done", "output": 2, "logs": []}
    outcome, fake, host = drive([begin("a"), record("a"), begin("b"), record("b"), done])
    # Read at the start, at the commit and at the end: 3 ms of CPU between reads.
    assert fake.cpu_reads == 3
    assert [s.cpu_ns for s in host.spent] == [3_000_000]
    assert outcome.spent.cpu_ns == 3_000_000
    assert host.spent[0].wall_ns > 0 and outcome.spent.wall_ns > 0


def test_a_gone_worker_is_charged_what_was_read_before() -> None:
    outcome, fake, host = drive([begin("a"), record("a"), begin("b"), EOFError()])
    assert [s.cpu_ns for s in host.spent] == [3_000_000]
    assert fake.closed and outcome.spent.cpu_ns == 0


def test_a_death_in_a_body_is_a_failed_attempt_retried_later() -> None:
    earlier = {"started_at": T0 - 100, "ended_at": T0 - 90, "success": False,
               "error": {"name": "ValueError", "message": "x"}}  # fmt: skip
    journal = [{**record("a")["record"], "status": "waiting", "attempts": [earlier]}]
    cpu = ("ResourceLimitExceeded", "CPU time limit exceeded (step_cpu_ms=1000)")
    outcome, fake, _ = drive([begin("a", attempt=2), EOFError()], journal, death=cpu)
    assert isinstance(outcome, Suspended) and fake.closed
    (rec,) = outcome.records
    assert rec["status"] == "waiting" and rec["attempts"][0] == earlier
    assert rec["attempts"][1]["error"] == {"name": cpu[0], "message": cpu[1]}
    assert outcome.wake_at == rec["wake_at"] == pytest.approx(rec["attempts"][1]["ended_at"] + 60)


def test_a_timeout_in_the_last_attempt_errors_the_step_and_wakes_now() -> None:
    outcome, _, _ = drive([begin("a", attempt=3, timeout=2.5), TimeoutError()])
    (rec,) = outcome.records
    assert rec["status"] == "errored"
    assert rec["error"] == {"name": "StepTimeout", "message": "step timed out after 2.5 s"}
    assert outcome.wake_at == rec["attempts"][0]["ended_at"]


def test_a_death_outside_bodies_fails_the_instance() -> None:
    outcome, _, _ = drive([begin("a"), record("a"), EOFError()])
    assert isinstance(outcome, Failed)
    message = "died, while run() was executing outside a step body"
    assert outcome.error == {"name": "SandboxCrashed", "message": message}
    assert [r["name"] for r in outcome.records] == ["a"]


def test_running_on_after_a_suspend_fails_the_instance() -> None:
    suspend = {"t": "suspend", "wake_at": T0 + 5, "event_type": None, "logs": []}
    outcome, _, _ = drive([suspend, TimeoutError()])
    assert isinstance(outcome, Failed) and outcome.error["name"] == "SuspendIgnored"


@pytest.mark.parametrize(
    "bad",
    [
        record("a", event_pk=99),  # someone else's event
        record("a", count=0),
        record("a", attempts="many"),
        {"t": "record", "record": {"name": "a"}, "logs": []},
        {"t": "begin", "name": "a", "count": 1, "attempt": 1, "timeout": -1, "retries": RETRIES},
        {"t": "done", "output": 1, "logs": [{"ts": "now", "step": None, "message": "x"}]},
        {"t": "done", "output": 1, "logs": [{"ts": T0, "step": None, "message": "x"}] * 5000},
        {"t": "failed", "error": "boom", "logs": []},
        {"t": "suspended", "wake_at": None, "event_type": None, "logs": []},
        {"t": "surprise"},
    ],
)
def test_a_misbehaving_worker_is_killed_and_the_instance_fails(bad: dict[str, Any]) -> None:
    outcome, fake, _ = drive([bad])
    assert isinstance(outcome, Failed) and fake.closed
    assert outcome.error["name"] == "SandboxCrashed"
    assert "misbehaved" in outcome.error["message"]


def test_a_violation_inside_a_body_fails_that_attempt() -> None:
    outcome, fake, _ = drive([begin("a"), begin("a")])
    assert isinstance(outcome, Suspended) and fake.closed
    error = outcome.records[0]["attempts"][0]["error"]
    assert (
        error["name"] == "SandboxCrashed"
        and "a step began while it was running" in error["message"]
    )


def test_an_internal_crash_propagates_for_the_engine_to_retry() -> None:
    with pytest.raises(RuntimeError, match="a sandbox worker failed: Traceback"):
        drive([{"t": "crash", "message": "Traceback ..."}])


def test_a_worker_gone_before_the_request_is_not_the_tenants_failure() -> None:
    fake = ScriptedWorker([])
    fake.send_fails = True
    with pytest.raises(WorkerGone):
        drive([], fake=fake)
    assert fake.closed


def test_a_zygote_death_during_a_replay_is_not_the_tenants_failure() -> None:
    fake = ScriptedWorker([begin("a"), EOFError()])
    fake.zygote_alive = False
    with pytest.raises(RuntimeError, match="zygote stopped during the replay"):
        drive([], fake=fake)


def test_a_recycle_flag_retires_the_worker() -> None:
    _, fake, _ = drive([{"t": "done", "output": None, "logs": [], "recycle": True}])
    assert not fake.usable


@pytest.mark.parametrize(
    ("status", "name", "message"),
    [
        (
            {"signal": signal.SIGXCPU},
            "ResourceLimitExceeded",
            "CPU time limit exceeded (step_cpu_ms=1000)",
        ),
        (
            {"signal": signal.SIGPROF},
            "ResourceLimitExceeded",
            "CPU time limit exceeded (step_cpu_ms=1000)",
        ),
        (
            {"signal": signal.SIGKILL},
            "ResourceLimitExceeded",
            "may have run out of memory (memory_mb=256)",
        ),
        ({"signal": signal.SIGSEGV}, "SandboxCrashed", "the sandbox worker crashed (SIGSEGV)"),
        ({"signal": None, "code": 70}, "SandboxCrashed", "exited unexpectedly (exit code 70)"),
        (None, "SandboxCrashed", "the sandbox worker died"),
    ],
)
def test_exit_statuses_are_explained(status: Any, name: str, message: str) -> None:
    got_name, got_message = describe_exit(status, Limits(step_cpu_ms=1000))
    assert got_name == name and message in got_message


def test_the_fake_has_the_workers_shape() -> None:
    public = {n for n in vars(Worker) if not n.startswith("_")} - {"validate"}
    assert public <= set(dir(ScriptedWorker([])))


# -- concurrent bodies, host calls, rollbacks ----------------------------------------------------


def call(call_id: int, url: str = "https://x/api", method: str = "fetch") -> dict[str, Any]:
    args: dict[str, Any] = {"url": url, "method": "GET", "headers": {}, "body": None}
    if method == "workflows.create":
        args = {"workflow": "child", "params": None, "id": url}
    return {"t": "call", "id": call_id, "method": method, "args": args, "logs": []}


def once(fake: ScriptedWorker, replies: int, then: dict[str, Any]) -> Callable[[], Any]:
    """A script item: wait (polling, with a deadline) until ``replies`` replies went out."""

    def item() -> dict[str, Any]:
        deadline = time.monotonic() + 5.0
        while len(fake.replies()) < replies:
            assert time.monotonic() < deadline, "the replies never came"
            time.sleep(0.005)
        return then

    return item


def test_each_running_body_keeps_its_own_deadline() -> None:
    script = [begin("a", timeout=30.0), begin("b", timeout=0.05), SILENCE]
    outcome, fake, _ = drive(script)
    assert isinstance(outcome, Suspended) and fake.closed
    # The driver waited for the earliest deadline, b's, although a began first.
    assert fake.deadlines[-1] - fake.deadlines[-2] < 1.0
    errors = {r["name"]: r["attempts"][-1]["error"] for r in outcome.records}
    assert errors == {
        "a": {
            "name": "StepInterrupted",
            "message": "the sandbox worker was stopped because step 'b' timed out",
        },
        "b": {"name": "StepTimeout", "message": "step timed out after 0.05 s"},
    }
    assert all(r["status"] == "waiting" for r in outcome.records)
    assert outcome.wake_at == min(r["wake_at"] for r in outcome.records)


def test_a_death_during_concurrent_bodies_fails_only_those_still_running() -> None:
    cpu = ("ResourceLimitExceeded", "CPU time limit exceeded (step_cpu_ms=1000)")
    script = [begin("a"), begin("b"), begin("c"), record("c"), EOFError()]
    outcome, _, host = drive(script, death=cpu)
    # c finished while a and b ran: committed at once, not held back for the outcome.
    assert [[r["name"] for r in c[0]] for c in host.commits] == [["c"]]
    assert host.running == [True]
    assert [(r["name"], r["status"]) for r in outcome.records] == [
        ("a", "waiting"), ("b", "waiting"),
    ]  # fmt: skip
    assert {r["attempts"][-1]["error"]["message"] for r in outcome.records} == {cpu[1]}


def test_a_finished_branch_is_committed_while_the_others_run_and_acked_at_the_next_begin() -> None:
    done = {"t": "done", "output": 2, "logs": []}
    script = [begin("a"), begin("b"), record("a"), record("b"), begin("join"), record("join"), done]
    outcome, fake, host = drive(script)
    assert [[r["name"] for r in c[0]] for c in host.commits] == [["a"], ["b"]]
    assert host.running == [True, False]
    assert [m["t"] for m in fake.sent] == ["replay", "ack"]
    assert [r["name"] for r in outcome.records] == ["join"]


def test_host_calls_run_beside_the_driver_and_are_answered_by_id() -> None:
    fake = ScriptedWorker([])
    done = {"t": "done", "output": None, "logs": []}
    fake.script = [
        begin("a"),
        begin("b"),
        call(1, "https://x/sleep/0.3"),
        call(2, "https://x/sleep/0.3"),
        once(fake, 2, record("a")),
        record("b"),
        done,
    ]
    started = time.monotonic()
    outcome, _, host = drive([], fake=fake)
    assert time.monotonic() - started < 0.55  # the two calls overlapped
    assert sorted(r["id"] for r in fake.replies()) == [1, 2]
    assert fake.replies()[0]["result"]["status"] == 200
    assert [m for m, _ in host.calls] == ["fetch", "fetch"] and outcome.output is None


def test_host_errors_are_replied_with_their_name_and_retryability() -> None:
    fake = ScriptedWorker([])
    fake.script = [
        begin("a"),
        call(1, "https://x/fail/Timeout"),
        call(2, "https://x/refuse/EgressDenied"),
        once(fake, 2, record("a")),
        {"t": "done", "output": None, "logs": []},
    ]
    drive([], fake=fake)
    replies = sorted(fake.replies(), key=lambda r: r["id"])
    assert replies == [
        {"t": "reply", "id": 1, "error": {"name": "Timeout", "message": "Timeout happened"},
         "retryable": True},
        {"t": "reply", "id": 2,
         "error": {"name": "EgressDenied", "message": "EgressDenied happened"},
         "retryable": False},
    ]  # fmt: skip


class BrokenHost(FakeHost):
    def call(self, method: str, args: dict[str, Any], deadline: Deadline) -> Any:
        if args.get("url") == "https://x/junk":
            return {"status": "ok"}
        raise OSError("database is down")


def test_host_bugs_and_bad_results_tell_the_tenant_nothing_more() -> None:
    fake = ScriptedWorker([])
    fake.script = [
        begin("a"),
        call(1, "https://x/junk"),
        call(2),
        once(fake, 2, record("a")),
        {"t": "done", "output": None, "logs": []},
    ]
    drive([], fake=fake, host=BrokenHost())
    failure = {"name": "HostError", "message": "the platform could not complete fetch"}
    assert [r["error"] for r in fake.replies()] == [failure, failure]


@pytest.mark.parametrize(
    "bad",
    [
        call(1, method="exec"),
        call(1, url=""),
        call(0),
        call(1, url="../x", method="workflows.create"),
        {"t": "call", "id": 1, "method": "fetch", "args": "https://x", "logs": []},
    ],
)
def test_bad_host_calls_are_violations(bad: dict[str, Any]) -> None:
    outcome, fake, host = drive([begin("a"), bad])
    assert isinstance(outcome, Suspended) and fake.closed and host.calls == []
    assert outcome.records[0]["attempts"][0]["error"]["name"] == "SandboxCrashed"


def test_a_host_call_outside_a_body_is_a_violation() -> None:
    outcome, _, host = drive([call(1)])
    assert isinstance(outcome, Failed) and "outside a step body" in outcome.error["message"]
    assert host.calls == []


def test_an_outcome_before_a_call_returned_is_a_violation_and_the_reply_is_dropped() -> None:
    script = [begin("a"), call(1, "https://x/sleep/0.2"), record("a"), {"t": "done", "logs": []}]
    outcome, fake, host = drive(script)
    assert (
        isinstance(outcome, Failed) and "while a host call was running" in outcome.error["message"]
    )
    assert host.calls and fake.replies() == []  # run() returned after the call, without replying


def test_a_failing_commit_stops_the_replay_once_running_calls_returned() -> None:
    # The engine stops a replay (pause, terminate, lost lease) by raising from commit.
    host = FakeHost(fail_with=RuntimeError("paused"))
    fake = ScriptedWorker([])
    fake.script = [
        begin("a"),
        begin("b"),
        call(1, "https://x/sleep/0.2"),
        record("a"),  # committed at once, as b still runs: the commit raises
        begin("c"),
        record("b"),
        {"t": "done", "logs": []},
    ]
    with pytest.raises(RuntimeError, match="paused"):
        drive([], fake=fake, host=host)
    assert fake.closed and fake.replies() == []
    assert host.events == ["call fetch", "commit"] and host.commits == []
    assert [m["t"] for m in fake.script] == ["begin", "record", "done"]  # nothing more was read


def test_rollback_bodies_and_outcomes() -> None:
    rollback = {"outcome": "failed", "error": {"name": "E", "message": "m"}}
    failed = {"t": "failed", "error": {"name": "ValueError", "message": "x"}, "logs": [],
              "rollback": rollback}  # fmt: skip
    outcome, _, _ = drive([failed])
    assert isinstance(outcome, Failed) and outcome.rollback == rollback
    outcome, _, _ = drive([begin("rollback:a", type="rollback"), EOFError()])
    (rec,) = outcome.records
    assert rec["type"] == "rollback" and rec["name"] == "rollback:a"


@pytest.mark.parametrize(
    ("bad", "mode"),
    [
        (begin("a", type="rollback"), "run"),
        (begin("rollback:a"), "run"),
        (begin("a", type="sleep"), "run"),
        ({"t": "failed", "error": {"name": "E", "message": "m"}, "rollback": {"outcome": "?"}},
         "run"),
        ({"t": "failed", "error": {"name": "E", "message": "m"},
          "rollback": {"outcome": "complete", "error": {"name": "E", "message": "m"}}}, "run"),
        ({"t": "done", "output": 1, "logs": []}, "rollback"),
    ],
)  # fmt: skip
def test_rollback_violations(bad: dict[str, Any], mode: str) -> None:
    outcome, fake, _ = drive([bad], mode=mode)
    assert isinstance(outcome, Failed) and fake.closed
    assert "misbehaved" in outcome.error["message"]


def test_the_worker_moves_the_replay_clock_on_by_the_time_the_message_took() -> None:
    # The parent reads the engine's clock (``now``) at ``clock_at`` (monotonic time, the same
    # in every process); a worker that gets the message a second later starts a second later.
    from sandbox._child import _on_time

    sent = {"request": {"now": 1000.0}, "clock_at": time.monotonic() - 1.0}
    assert 1001.0 <= _on_time(sent)["now"] < 1002.0
    assert _on_time({"request": {"now": 1000.0}})["now"] == 1000.0


def test_what_a_worker_sends_that_cannot_be_stored_never_reaches_the_engine() -> None:
    bad_text = begin("a", logs=[{"ts": T0, "step": None, "message": "x\x00\ud800"}])
    failed = record("a", output={"n": 2**64 + 1})
    failed["record"]["error"] = None
    done = {"t": "done", "output": "fine\x00", "logs": []}
    outcome, _, _ = drive([bad_text, failed, done])
    (rec,) = outcome.records
    assert rec["status"] == "errored" and rec["output"] is None
    assert rec["error"]["name"] == "ValueNotStorable"
    assert rec["error"]["message"].startswith("the result of step 'a' cannot be stored: at n, ")
    assert [a["success"] for a in rec["attempts"]] == [False]
    assert rec["attempts"][0]["error"] == rec["error"]
    assert outcome.logs == [{"ts": T0, "step": None, "message": "x\ufffd\ufffd"}]
    assert isinstance(outcome, Failed)
    assert outcome.error["name"] == "ValueNotStorable"
    assert outcome.error["message"] == (
        "the value run() returned cannot be stored: a string holds U+0000 (NUL), which cannot "
        "be stored"
    )


def test_error_texts_from_a_worker_are_cleaned() -> None:
    failure = {"name": "Bad\x00Name", "message": "oh\ud83dno"}
    outcome, _, _ = drive([{"t": "failed", "error": failure, "logs": []}])
    assert outcome.error == {"name": "Bad\ufffdName", "message": "oh\ufffdno"}


class Terminated(Exception):
    pass


def test_the_engine_stops_a_replay_at_once_its_body_killed_and_calls_cut() -> None:
    fake, host = ScriptedWorker([]), FakeHost()
    fake.script = [begin("a"), call(1, "https://x/sleep/30"), UNTIL_KILLED]
    threading.Timer(0.3, host.stop, args=(Terminated("terminated"),)).start()
    started = time.monotonic()
    with pytest.raises(Terminated):
        drive([], fake=fake, host=host)
    assert time.monotonic() - started < 2.0
    assert fake.killed.is_set() and fake.closed
    assert host.cut == 1  # the call in flight was cut short, not waited for
    assert fake.replies() == []  # and its reply never reached the worker


def test_a_stop_before_the_replay_began_raises_without_a_retry() -> None:
    fake, host = ScriptedWorker([]), FakeHost()
    host.stop(Terminated("terminated"))  # the engine asked while the replay waited for a worker
    fake.send_fails = True  # the kill landed before the replay message
    with pytest.raises(Terminated):
        drive([], fake=fake, host=host)


def test_a_host_call_that_outlasts_its_deadline_is_cut_short() -> None:
    fake, host = ScriptedWorker([]), FakeHost()
    driver_calls = HostCalls(host, lambda message: fake.send(message), call_seconds=0.3)
    started = time.monotonic()
    driver_calls.start({"id": 1, "method": "fetch", "args": {"url": "https://x/sleep/30"}})
    while not fake.replies():
        assert time.monotonic() - started < 3.0, "the call was never cut"
        time.sleep(0.01)
    driver_calls.close()
    (reply,) = fake.replies()
    assert reply["error"]["message"] == "cut short: timeout" and host.cut == 1
    assert time.monotonic() - started < 2.0
