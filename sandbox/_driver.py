"""The parent's side of one replay: commit before step bodies, watch deadlines, explain deaths.

The worker sends each record as soon as it exists and ``begin`` before every step body; when
records arrived since the last ``ack``, the driver commits them through the host and then
acknowledges, so a step's result is durable before any later body runs. What is still
uncommitted at the end travels in the outcome, for the engine to commit with the instance's
final state in one transaction.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sandbox import _untrusted
from sandbox._records import error, new_record, seconds_text
from sandbox._retries import next_retry
from sandbox._types import Artifact, Done, Failed, Host, Outcome, ReplayRequest, Suspended
from sandbox._wire import ProtocolError
from sandbox._worker import Worker, WorkerGone

_log = logging.getLogger("treadle.sandbox")
_MAX_PENDING_RECORDS = 20000


class ReplayDriver:
    def __init__(self, worker: Worker, request: ReplayRequest, host: Host) -> None:
        self._worker = worker
        self._host = host
        self._request = request
        self._records: list[dict[str, Any]] = []
        self._logs: list[dict[str, Any]] = []
        self._latest = {(r["name"], r["count"]): r for r in request.journal}
        self._event_pks = {e["pk"] for e in request.events}
        self._event_pks |= {r["event_pk"] for r in request.journal if r.get("event_pk") is not None}
        self._unacked = False
        self._body: dict[str, Any] | None = None
        self._suspended = False
        self._source_sent = False
        self._started = time.monotonic()

    def now(self) -> float:
        """The engine's clock, advanced by monotonic time, as the worker computes it too."""
        return self._request.now + (time.monotonic() - self._started)

    def run(self, artifact: Artifact) -> Outcome:
        try:
            self._send_replay(artifact, with_source=artifact.version not in self._worker.versions)
        except EOFError:
            self._worker.close()
            raise WorkerGone("the sandbox worker was gone before the replay started") from None
        deadline = time.monotonic() + self._worker.outside_budget
        while True:
            try:
                reply = self._worker.recv(deadline)
            except TimeoutError:
                self._worker.close()
                return self._stopped(None)
            except (EOFError, OSError):
                return self._lost()
            except ProtocolError as exc:
                return self._violation(exc)
            try:
                # Host.commit runs in here: its exceptions are not the worker's and propagate.
                outcome, deadline = self._handle(reply, artifact, deadline)
            except EOFError:
                return self._lost()
            except ProtocolError as exc:
                return self._violation(exc)
            if outcome is not None:
                return outcome

    def _lost(self) -> Outcome:
        self._worker.close()
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
        self._worker.send(
            {
                "t": "replay",
                "version": artifact.version,
                "sandbox": artifact.sandbox,
                "class_name": artifact.class_name,
                "source": artifact.source if with_source else None,
                # Shallow: the message is serialized at once, a deep copy would be wasted.
                "request": vars(self._request),
            }
        )
        if with_source:
            self._source_sent = True
            self._worker.versions.add(artifact.version)

    def _handle(
        self, reply: dict[str, Any], artifact: Artifact, deadline: float
    ) -> tuple[Outcome | None, float]:
        self._logs += _untrusted.logs(reply.get("logs"))
        kind = reply["t"]
        budget = time.monotonic() + self._worker.outside_budget
        if kind == "begin":
            return None, self._begin(_untrusted.begin(reply))
        if kind == "record":
            self._record(_untrusted.record(reply.get("record"), self._event_pks))
            return None, budget
        if kind == "suspend":
            _untrusted.suspension(reply)
            self._suspended = True
            return None, budget
        if kind == "need_source" and not self._source_sent:
            self._worker.versions.discard(artifact.version)
            self._send_replay(artifact, with_source=True)
            return None, budget
        if kind == "crash":
            self._worker.close()
            raise RuntimeError(f"a sandbox worker failed: {str(reply.get('message'))[:4000]}")
        return self._outcome(reply), deadline

    def _begin(self, info: dict[str, Any]) -> float:
        if self._body is not None:
            raise ProtocolError("a step began while another was running")
        if self._unacked:
            records, logs = self._records, self._logs
            self._records, self._logs = [], []
            try:
                self._host.commit(records, logs)
            except BaseException:
                self._worker.close()
                raise
            self._unacked = False
            self._worker.send({"t": "ack"})
        self._body = {**info, "started_at": self.now()}
        return time.monotonic() + float(info["timeout"])

    def _record(self, record: dict[str, Any]) -> None:
        if len(self._records) >= _MAX_PENDING_RECORDS:
            raise ProtocolError("too many records without a commit")
        key = (record["name"], record["count"])
        self._records.append(record)
        self._latest[key] = record
        self._unacked = True
        if self._body is not None and key == (self._body["name"], self._body["count"]):
            self._body = None

    def _outcome(self, reply: dict[str, Any]) -> Outcome:
        if reply.get("recycle") is True:
            self._worker.usable = False
        kind = reply["t"]
        if self._body is not None:
            raise ProtocolError(f"{kind!r} while a step body was running")
        if kind == "done":
            return Done(reply.get("output"), self._records, self._logs)
        if kind == "failed":
            return Failed(_untrusted.error(reply.get("error")) or {}, self._records, self._logs)
        if kind == "suspended":
            wake_at, event_type = _untrusted.suspension(reply)
            return Suspended(wake_at, event_type, self._records, self._logs)
        raise ProtocolError(f"unexpected message {kind!r}")

    # -- the worker stopped before the outcome --------------------------------------------------

    def _stopped(self, death: tuple[str, str] | None) -> Outcome:
        """The outcome when the worker was killed (``death`` None: by our deadline) or died."""
        if self._body is not None:
            if death is None:
                timeout = seconds_text(self._body["timeout"])
                death = ("StepTimeout", f"step timed out after {timeout}")
            return self._body_failed(error(*death))
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

    def _body_failed(self, failure: dict[str, str]) -> Suspended:
        """Record the interrupted attempt as failed; the next replay retries or raises."""
        assert self._body is not None
        name, count = self._body["name"], self._body["count"]
        previous = self._latest.get((name, count))
        ended = self.now()
        attempt = {
            "started_at": self._body["started_at"],
            "ended_at": ended,
            "success": False,
            "error": failure,
        }
        record = new_record(name, count, "do")
        record["attempts"] = [*(previous["attempts"] if previous else []), attempt]
        retry_at = next_retry(self._body["retries"], self._body["attempt"], ended)
        if retry_at is None:
            record.update(status="errored", error=failure)
        else:
            record.update(status="waiting", wake_at=retry_at)
        self._records.append(record)
        wake_at = ended if retry_at is None else retry_at
        return Suspended(wake_at, None, self._records, self._logs)
