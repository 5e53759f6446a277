"""The parent's side of a replay, against a scripted worker: commits, deaths, bad messages."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from sandbox import Artifact, Failed, Limits, ReplayRequest, Suspended
from sandbox._driver import ReplayDriver
from sandbox._records import new_record
from sandbox._worker import Worker, WorkerGone, describe_exit
from tests.sandbox.harness import T0, FakeHost

RETRIES = {"limit": 2, "delay": 60.0, "backoff": "constant"}


class ScriptedWorker:
    """Replies with ``script`` (messages, or exceptions to raise) and records what it got."""

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
        self._death = death

    def idle_and_alive(self) -> bool:
        return not self.closed

    def send(self, message: dict[str, Any]) -> None:
        if self.send_fails:
            raise EOFError("gone")
        self.sent.append(message)

    def recv(self, deadline: float) -> dict[str, Any]:
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return dict(item)

    def close(self) -> None:
        self.closed = True
        self.usable = False

    def death(self) -> tuple[str, str]:
        return self._death


def begin(name: str, attempt: int = 1, timeout: float = 30.0) -> dict[str, Any]:
    return {"t": "begin", "name": name, "count": 1, "attempt": attempt, "timeout": timeout,
            "retries": RETRIES, "logs": []}  # fmt: skip


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
    **worker: Any,
) -> Any:
    fake = fake or ScriptedWorker(script, **worker)
    host = FakeHost()
    request = ReplayRequest("i", "wf", T0, None, journal or [], [{"pk": 7, "type": "go",
                            "payload": 1, "timestamp": T0}], T0, {})  # fmt: skip
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
    outcome, fake, _ = drive([begin("a"), begin("b")])
    assert isinstance(outcome, Suspended) and fake.closed
    error = outcome.records[0]["attempts"][0]["error"]
    assert error["name"] == "SandboxCrashed" and "a step began while another" in error["message"]


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
