"""The parent's side of one replay: commit before step bodies, watch deadlines, explain deaths.

The worker sends each record as soon as it exists and ``begin`` before every step body; when
records arrived since the last ``ack``, the driver commits them through the host and then
acknowledges, so a step's result is durable before any later body runs. A record that arrives
while other bodies of a fan-out still run is committed at once, so that a crash re-runs only
the unfinished branches. What is still uncommitted at the end travels in the outcome, for the
engine to commit with the instance's final state in one transaction.

Several bodies may run at once (concurrent steps), each with its own deadline; a kill or a
death while they run fails the attempt of each of them, and only theirs. Host calls run beside
the driver (``_hostcalls``). When ``Host.commit`` raises — the engine stopping the replay to
pause or terminate the instance, or a lost lease — the worker is killed, nothing more is
reported, and the exception propagates once the host calls in flight have returned. The
engine may also stop a replay between commits (``Host.on_stop``: the instance was terminated,
or the process is stopping): the worker is killed at once, whatever its step body is doing,
the host calls in flight are cut short, and the engine's exception propagates.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NoReturn

from sandbox import _untrusted
from sandbox._hostcalls import CALL_SECONDS, HostCalls
from sandbox._messages import Begin
from sandbox._threads import MAX_PARALLEL_BODIES
from sandbox._types import (
    Artifact,
    Done,
    Failed,
    Host,
    Outcome,
    ReplayRequest,
    Spent,
    Suspended,
)
from sandbox._wire import ProtocolError
from sandbox._worker import Worker, WorkerGone
from treadle.runtime import (
    ErrorValue,
    JSONObject,
    LogLine,
    Reply,
    StepRecord,
    attempt,
    attempt_failed,
    error,
    next_retry,
    seconds_text,
)

_log = logging.getLogger("treadle.sandbox")
_MAX_PENDING_RECORDS = 20000
Key = tuple[str, int]


@dataclass(frozen=True)
class _Body:
    """A step body that runs: as its ``begin`` announced it, when it began and its deadline
    (``time.monotonic()``)."""

    begun: Begin
    started_at: float
    deadline: float


class ReplayDriver:
    def __init__(
        self,
        worker: Worker,
        request: ReplayRequest,
        host: Host,
        call_seconds: float = CALL_SECONDS,
    ) -> None:
        self._worker = worker
        self._host = host
        self._request = request
        self._records: list[StepRecord] = []
        self._logs: list[LogLine] = []
        self._latest = {(r["name"], r["count"]): r for r in request.journal}
        self._event_pks = {e["pk"] for e in request.events}
        self._event_pks |= {pk for r in request.journal if (pk := r.get("event_pk")) is not None}
        self._unacked = False
        self._bodies: dict[Key, _Body] = {}  # running step bodies, in begin order
        self._suspended = False
        self._source_sent = False
        # Whether the worker said anything since the latest ``replay`` request: until it does,
        # nothing else is sent to it, so its end closing with unread data means that request.
        self._taken = False
        self._started = time.monotonic()
        self._cpu_mark = worker.cpu_ns() or 0
        self._wall_mark = time.monotonic_ns()
        self._quiet_until = self._started + worker.outside_budget
        self._send_lock = threading.Lock()  # the driver and host call threads both send
        self._ended = False
        self._stopped_by: BaseException | None = None  # the engine's reason to stop the replay
        self._calls = HostCalls(host, self._reply, call_seconds)
        host.on_stop(self._stop)

    def now(self) -> float:
        """The engine's clock, advanced by monotonic time, as the worker computes it too."""
        return self._request.now + (time.monotonic() - self._started)

    def run(self, artifact: Artifact) -> Outcome:
        try:
            outcome = self._drive(artifact)
            outcome.spent = self._spent()
            return outcome
        finally:
            with self._send_lock:
                self._ended = True  # no reply may reach the worker's next replay
            self._calls.close()

    def _drive(self, artifact: Artifact) -> Outcome:
        try:
            self._send_replay(artifact, with_source=artifact.version not in self._worker.versions)
        except EOFError:
            self._gone()
        while True:
            try:
                reply = self._worker.recv(self._deadline())
            except TimeoutError:
                self._worker.close()
                return self._stopped(None)
            except ConnectionResetError:
                # The worker's end was closed with data unread: if that is the request, it
                # died (while idle, or was killed since) before it took it.
                if not self._taken:
                    self._gone()
                return self._lost()
            except (EOFError, OSError):
                return self._lost()
            except ProtocolError as exc:
                return self._violation(exc)
            self._taken = True
            self._quiet_until = time.monotonic() + self._worker.outside_budget
            try:
                # Host.commit runs in here: its exceptions are not the worker's and propagate.
                outcome = self._handle(reply, artifact)
            except EOFError:
                if not self._taken:  # the request sent again with the source
                    self._gone()
                return self._lost()
            except ProtocolError as exc:
                return self._violation(exc)
            if outcome is not None:
                return outcome

    def _deadline(self) -> float:
        """The earliest deadline of the running bodies; outside them, the quiet budget."""
        if self._bodies:
            return float(min(body.deadline for body in self._bodies.values()))
        return self._quiet_until

    def _send(self, message: Mapping[str, object]) -> None:
        with self._send_lock:
            self._worker.send(message)

    def _reply(self, message: Reply) -> None:
        """A host call's reply, from its thread: dropped once the replay is over."""
        with self._send_lock:
            if not self._ended:
                try:
                    self._worker.send(message)
                except EOFError:
                    pass  # the worker is gone; the driver's next read says so

    def _stop(self, reason: BaseException) -> None:
        """From the engine's thread: end the replay now, with ``reason``."""
        with self._send_lock:
            if self._ended:
                return  # the worker may already serve another replay
            self._stopped_by = reason
            self._worker.kill()  # the driver's read ends, and ``_lost`` raises the reason

    def _gone(self) -> NoReturn:
        """The worker died before it took the request: no tenant code ran, and the pool may
        give the replay to another worker."""
        self._worker.close()
        if self._stopped_by is not None:
            raise self._stopped_by from None
        raise WorkerGone("the sandbox worker was gone before the replay started") from None

    def _lost(self) -> Outcome:
        self._worker.close()
        if self._stopped_by is not None:
            raise self._stopped_by
        death = self._worker.death()
        if not self._worker.zygote_alive:
            # Not the tenant's doing (the pool is closing, or the zygote died): the engine
            # must retry this replay later rather than record a failure.
            raise RuntimeError("the sandbox zygote stopped during the replay")
        return self._stopped(death)

    def _violation(self, exc: ProtocolError) -> Outcome:
        self._worker.close()
        _log.warning("sandbox worker of tenant %r: %s", self._worker.tenant, exc)
        return self._stopped(("SandboxCrashed", f"the sandbox worker misbehaved: {exc}"))

    def _send_replay(self, artifact: Artifact, *, with_source: bool) -> None:
        self._taken = False
        self._send(
            {
                "t": "replay",
                "version": artifact.version,
                "sandbox": artifact.sandbox,
                "class_name": artifact.class_name,
                "source": artifact.source if with_source else None,
                # Shallow: the message is serialized at once, a deep copy would be wasted.
                "request": vars(self._request),
                # When ``request.now`` held (monotonic time, the same in every process): the
                # worker moves its clock on by the time the message took to reach it.
                "clock_at": self._started,
            }
        )
        if with_source:
            self._source_sent = True
            self._worker.versions.add(artifact.version)

    def _handle(self, reply: JSONObject, artifact: Artifact) -> Outcome | None:
        self._logs += _untrusted.logs(reply.get("logs"))
        kind = reply["t"]
        if kind == "begin":
            self._begin(_untrusted.begin(reply))
        elif kind == "record":
            self._record(_untrusted.record(reply.get("record"), self._event_pks))
        elif kind == "call":
            if not self._bodies:
                raise ProtocolError("a host call outside a step body")
            self._calls.start(_untrusted.call(reply, self._worker.limits))
        elif kind == "suspend":
            _untrusted.suspension(reply)
            self._suspended = True
        elif kind == "need_source" and not self._source_sent:
            self._worker.versions.discard(artifact.version)
            self._send_replay(artifact, with_source=True)
        elif kind == "crash":
            self._worker.close()
            raise RuntimeError(f"a sandbox worker failed: {str(reply.get('message'))[:4000]}")
        else:
            return self._outcome(reply)
        return None

    def _begin(self, info: Begin) -> None:
        key = (info["name"], info["count"])
        if key in self._bodies:
            raise ProtocolError("a step began while it was running")
        if len(self._bodies) >= MAX_PARALLEL_BODIES:
            raise ProtocolError("too many step bodies at once")
        if self._unacked:
            if self._records:
                self._commit()
            self._unacked = False
            self._send({"t": "ack"})
        deadline = time.monotonic() + float(info["timeout"])
        self._bodies[key] = _Body(info, self.now(), deadline)

    def _record(self, record: StepRecord) -> None:
        if len(self._records) >= _MAX_PENDING_RECORDS:
            raise ProtocolError("too many records without a commit")
        key = (record["name"], record["count"])
        self._records.append(record)
        self._latest[key] = record
        self._unacked = True  # the worker waits for an ack at its next begin
        self._bodies.pop(key, None)
        if self._bodies:
            self._commit(running=True)

    def _commit(self, *, running: bool = False) -> None:
        records, logs = self._records, self._logs
        self._records, self._logs = [], []
        try:
            self._host.commit(records, logs, running=running, spent=self._spent())
        except BaseException:
            self._worker.close()
            raise
        self._wall_mark = time.monotonic_ns()  # the commit's own time is not the tenant's

    def _spent(self) -> Spent:
        """What the worker spent since the last commit (since the replay began, at first)."""
        cpu, wall = self._worker.cpu_ns(), time.monotonic_ns()
        if cpu is None:  # the worker is gone: what it spent since the last read is unknown
            cpu = self._cpu_mark
        spent = Spent(max(0, cpu - self._cpu_mark), max(0, wall - self._wall_mark))
        self._cpu_mark, self._wall_mark = cpu, wall
        return spent

    def _outcome(self, reply: JSONObject) -> Outcome:
        if reply.get("recycle") is True:
            self._worker.usable = False
        kind = reply["t"]
        if self._bodies:
            raise ProtocolError(f"{kind!r} while a step body was running")
        if self._calls.running:
            raise ProtocolError(f"{kind!r} while a host call was running")
        if kind == "done" and self._request.mode == "rollback":
            raise ProtocolError("'done' in rollback mode")
        if kind == "done":
            output, unstorable = _untrusted.output(reply.get("output"))
            if unstorable is not None:
                return Failed(unstorable, self._records, self._logs)
            return Done(output, self._records, self._logs)
        if kind == "failed":
            failure = _untrusted.error(reply.get("error")) or {}
            rollback = _untrusted.rollback(reply.get("rollback"))
            return Failed(failure, self._records, self._logs, rollback)
        if kind == "suspended":
            wake_at, event_type = _untrusted.suspension(reply)
            return Suspended(wake_at, event_type, self._records, self._logs)
        raise ProtocolError(f"unexpected message {kind!r}")

    # -- the worker stopped before the outcome --------------------------------------------------

    def _stopped(self, death: tuple[str, str] | None) -> Outcome:
        """The outcome when the worker was killed (``death`` None: by our deadline) or died."""
        if self._bodies:
            return self._bodies_failed(death)
        if self._suspended:
            reason = death[1] if death else "it was stopped"
            message = (
                f"the workflow kept running after it suspended ({reason}); a suspend must not be "
                "caught: do not catch BaseException around step calls"
            )
            return Failed(error("SuspendIgnored", message), self._records, self._logs)
        if death is None:
            budget = seconds_text(self._worker.outside_budget)
            death = (
                "ResourceLimitExceeded",
                f"the workflow ran for more than {budget} outside a step body",
            )
        else:
            death = (death[0], f"{death[1]}, while run() was executing outside a step body")
        return Failed(error(*death), self._records, self._logs)

    def _bodies_failed(self, death: tuple[str, str] | None) -> Suspended:
        """Fail the attempt of every running body; the next replay retries or raises.

        A death is the same for all of them (the process is shared). Our own kill names the
        bodies over their timeout; the others were only cut short by it.
        """
        failures = {key: error(*death) for key in self._bodies} if death else self._timeouts()
        wakes = [self._body_failed(body, failures[key]) for key, body in self._bodies.items()]
        self._bodies.clear()
        return Suspended(min(wakes), None, self._records, self._logs)

    def _timeouts(self) -> dict[Key, ErrorValue]:
        now = time.monotonic()
        late = [key for key, body in self._bodies.items() if body.deadline <= now]
        late = late or [min(self._bodies, key=lambda key: self._bodies[key].deadline)]
        cut = f"the sandbox worker was stopped because step {late[0][0]!r} timed out"
        return {
            key: error("StepTimeout", f"step timed out after {seconds_text(body.begun['timeout'])}")
            if key in late
            else error("StepInterrupted", cut)
            for key, body in self._bodies.items()
        }

    def _body_failed(self, body: _Body, failure: ErrorValue) -> float:
        """Record the interrupted attempt as failed; when the instance should wake."""
        begun = body.begun
        key = (begun["name"], begun["count"])
        ended = self.now()
        retry_at = next_retry(begun["retries"], begun["attempt"], ended)
        failed = attempt(body.started_at, ended, failure)
        record = attempt_failed(self._latest.get(key), key, begun["type"], failed, retry_at)
        self._records.append(record)
        self._latest[key] = record
        return ended if retry_at is None else retry_at
