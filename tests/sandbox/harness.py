"""Drive replays the way the engine does, in-process (unit tests) or through a real pool.

``Inline`` runs the restricted backend in the test process with a recording channel: fast, and
enough for step semantics. ``Instance`` keeps a journal across replays like the engine's store,
with a clock the test advances, so sleeps of an hour take no time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import textwrap
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sandbox import (
    NOTHING_SPENT,
    Artifact,
    Deadline,
    Done,
    Limits,
    Outcome,
    ReplayRequest,
    SandboxPool,
    Spent,
    Suspended,
)
from sandbox._hostcalls import HostCalls
from sandbox._untrusted import call as checked_call
from sandbox.restricted._backend import RestrictedBackend
from treadle.errors import NonRetryableError, TreadleError

T0 = 1_700_000_000.0
SMALL = Limits(memory_mb=256, step_cpu_ms=1000)
T = TypeVar("T")


def source(text: str) -> str:
    return textwrap.dedent(text).strip() + "\n"


def named(error: Any) -> dict[str, Any]:
    """An error's name and message, without the frames of its traceback (tests of those
    assert them on their own)."""
    return {"name": error["name"], "message": error["message"]}


def artifact(text: str, class_name: str | None = None) -> Artifact:
    code = source(text)
    version = hashlib.sha256(f"{class_name}:{code}".encode()).hexdigest()[:16]
    return Artifact(version=version, sandbox="restricted", source=code, class_name=class_name)


class FakeHost:
    """The engine's side: counts commits and keeps what it committed; answers host calls.

    ``fetch`` of ``https://x/sleep/<seconds>`` sleeps that long, unless its deadline expires
    first (then it raises ``Cut``, and ``cut`` counts it); ``https://x/fail/<Name>``
    raises a TreadleError subclass of that name, ``https://x/refuse/<Name>`` a
    NonRetryableError subclass; any other URL echoes the request as JSON.
    ``workflows.create`` is idempotent by id, as the engine's is. ``fail_with`` fails every
    commit, ``commits_before_failing`` only those after the first few. ``stop`` stops the
    replay as the engine does (``Host.on_stop``).
    """

    def __init__(
        self, fail_with: BaseException | None = None, *, commits_before_failing: int = 0
    ) -> None:
        self.commits: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.children: dict[str, dict[str, Any]] = {}
        self.running: list[bool] = []  # each commit's ``running``
        self.spent: list[Spent] = []  # each commit's ``spent``
        self.events: list[str] = []  # "commit", "call <method>", in the order they began
        self._fail_with = fail_with
        self._commits_before_failing = commits_before_failing
        self._lock = threading.Lock()
        self._stoppers: list[Callable[[BaseException], None]] = []
        self._stopped_by: BaseException | None = None
        self.cut = 0

    def on_stop(self, stop: Callable[[BaseException], None]) -> None:
        self._stoppers.append(stop)
        if self._stopped_by is not None:  # as the engine's host does
            stop(self._stopped_by)

    def stop(self, reason: BaseException) -> None:
        self._stopped_by = reason
        for stop in self._stoppers:
            stop(reason)

    def commit(
        self,
        records: list[dict[str, Any]],
        logs: list[dict[str, Any]],
        *,
        running: bool = False,
        spent: Spent = NOTHING_SPENT,
    ) -> None:
        with self._lock:
            self.events.append("commit")
            self.spent.append(spent)
            if self._fail_with is not None and len(self.commits) >= self._commits_before_failing:
                raise self._fail_with
            self.commits.append((records, logs))
            self.running.append(running)

    def call(self, method: str, args: dict[str, Any], deadline: Deadline) -> Any:
        with self._lock:
            self.events.append(f"call {method}")
            self.calls.append((method, args))
        if method == "workflows.create":
            with self._lock:
                self.children.setdefault(args["id"], args)
            return {"id": args["id"]}
        kind, _, detail = args["url"].removeprefix("https://x/").partition("/")
        if kind == "sleep":
            woken = threading.Event()
            deadline.on_expiry(woken.set)
            if woken.wait(float(detail)):
                with self._lock:
                    self.cut += 1
                raise TreadleError(f"cut short: {deadline.expired}")
        elif kind in ("fail", "refuse"):
            base = TreadleError if kind == "fail" else NonRetryableError
            raise type(detail, (base,), {})(f"{detail} happened")
        text = json.dumps({"url": args["url"], "method": args["method"], "body": args["body"]})
        return {"status": 200, "headers": {"content-type": "application/json"}, "text": text}


class Recorder:
    """A channel that keeps every message (as JSON would carry it) and acks at once; host
    calls go to ``host`` through the parent's own call machinery."""

    def __init__(self, host: FakeHost | None = None, limits: Limits = SMALL) -> None:
        self.messages: list[dict[str, Any]] = []
        self.acks = 0
        self._lock = threading.Condition()
        self._replies: dict[int, dict[str, Any]] = {}
        self._calls = HostCalls(host or FakeHost(), self._deliver)
        self._limits = limits

    def send(self, message: dict[str, Any]) -> None:
        copy = json.loads(json.dumps(message))
        with self._lock:
            self.messages.append(copy)
        if copy["t"] == "call":
            self._calls.start(checked_call(copy, self._limits))

    def wait_ack(self) -> None:
        with self._lock:
            self.acks += 1

    def wait_reply(self, call_id: int) -> dict[str, Any]:
        with self._lock:
            while call_id not in self._replies:
                self._lock.wait()
            return self._replies.pop(call_id)

    def close(self) -> None:
        self._calls.close()

    def _deliver(self, reply: dict[str, Any]) -> None:
        with self._lock:
            self._replies[reply["id"]] = json.loads(json.dumps(reply))
            self._lock.notify_all()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["t"] == kind]


@dataclasses.dataclass
class Result:
    outcome: dict[str, Any]
    channel: Recorder
    spent: bool

    @property
    def records(self) -> list[dict[str, Any]]:
        return [m["record"] for m in self.channel.of("record")]

    @property
    def begins(self) -> list[dict[str, Any]]:
        return self.channel.of("begin")

    @property
    def logs(self) -> list[dict[str, Any]]:
        return [line for m in [*self.channel.messages, self.outcome] for line in m["logs"]]


class Instance:
    """One workflow instance: its journal, buffered events and clock, across replays."""

    def __init__(
        self,
        text: str,
        *,
        params: Any = None,
        limits: Limits = SMALL,
        vars: dict[str, Any] | None = None,
        class_name: str | None = None,
        instance_id: str = "inst-1",
    ) -> None:
        self.artifact = artifact(text, class_name)
        self.params = params
        self.limits = limits
        self.vars = vars or {}
        self.instance_id = instance_id
        self.mode = "run"
        self.now = T0
        self.journal: dict[tuple[str, int], dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._event_pk = 0

    def request(self) -> ReplayRequest:
        return ReplayRequest(
            instance_id=self.instance_id,
            workflow="wf",
            created_at=T0,
            params=self.params,
            journal=[dict(r) for r in self.journal.values()],
            events=[dict(e) for e in self.events],
            now=self.now,
            vars=dict(self.vars),
            mode=self.mode,
        )

    def send_event(self, type_: str, payload: Any) -> int:
        self._event_pk += 1
        self.events.append(
            {"pk": self._event_pk, "type": type_, "payload": payload, "timestamp": self.now}
        )
        return self._event_pk

    def apply(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self.journal[(record["name"], record["count"])] = record
            if record["status"] == "complete" and record.get("event_pk") is not None:
                self.events = [e for e in self.events if e["pk"] != record["event_pk"]]

    def inline(self, host: FakeHost | None = None) -> Result:
        """One replay in this process; records are applied to the journal."""
        program = RestrictedBackend().compile(self.artifact.source, self.artifact.class_name)
        channel = Recorder(host, self.limits)
        request = dataclasses.asdict(self.request())
        try:
            outcome, spent = program.replay(request, self.limits, channel)
        finally:
            channel.close()
        self.apply([m["record"] for m in channel.of("record")])
        return Result(outcome, channel, spent)

    def through(self, pool: SandboxPool, tenant: str, host: FakeHost | None = None) -> Outcome:
        """One replay through ``pool``; committed and final records go to the journal."""
        host = host or FakeHost()
        outcome = pool.replay(tenant, self.artifact, self.limits, self.request(), host)
        for records, _ in host.commits:
            self.apply(records)
        self.apply(outcome.records)
        return outcome

    def settle_inline(self, max_replays: int = 20, host: FakeHost | None = None) -> Result:
        """Replay in-process until the outcome is final, advancing the clock to wake times."""
        for _ in range(max_replays):
            result = self.inline(host)
            wake_at = result.outcome.get("wake_at")
            if result.outcome["t"] != "suspended" or wake_at is None:
                return result
            self.now = max(self.now, wake_at)
        raise AssertionError("the instance did not settle")

    def settle(
        self, pool: SandboxPool, tenant: str, max_replays: int = 20, host: FakeHost | None = None
    ) -> Outcome:
        """Replay through ``pool`` until the outcome is final, advancing the clock."""
        for _ in range(max_replays):
            outcome = self.through(pool, tenant, host)
            if not isinstance(outcome, Suspended) or outcome.wake_at is None:
                return outcome
            self.now = max(self.now, outcome.wake_at)
        raise AssertionError("the instance did not settle")


GOOD = """
from treadle import WorkflowEntrypoint

class Good(WorkflowEntrypoint):
    def run(self, event, step):
        a = step.do("a", lambda: 20)
        return step.do("b", lambda: a + 1)
"""


def alongside(pool: SandboxPool, work: Callable[[], T]) -> T:
    """Run ``work`` in a thread while another tenant's replays keep succeeding meanwhile."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = work()
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    good = 0
    while thread.is_alive() or good == 0:
        started = time.monotonic()
        outcome = Instance(GOOD, instance_id=f"good-{good}").through(pool, "bystander")
        assert isinstance(outcome, Done) and outcome.output == 21, outcome
        assert time.monotonic() - started < 5.0
        good += 1
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]  # type: ignore[no-any-return]


def idle_pids(pool: SandboxPool, tenant: str) -> list[int]:
    """Pids of ``tenant``'s idle workers (white-box: for tests of the process model)."""
    return [w.pid for w in list(pool._idle.values()) if w.tenant == tenant]
