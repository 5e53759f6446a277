"""The parent's side of host calls (``env.fetch``, ``env.workflows.create``) of one replay.

Each call runs ``Host.call`` on a thread of its own and its reply goes to the worker as soon as
it is done, so calls made by concurrent step bodies overlap (two 1.5 s fetches take 1.5 s).
The driver keeps reading the worker meanwhile: deadlines and commits do not wait for calls.

Every call has a platform deadline (:data:`CALL_SECONDS` in all, connect and every read
included), and every call still running when the replay ends (a step timed out, the instance
was terminated, the process is stopping) is cut short at once: see ``_deadline``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypedDict

from sandbox._deadline import Deadline, Watchdog
from sandbox._messages import HostCall
from sandbox._types import Host
from sandbox._wire import ProtocolError
from treadle.runtime import (
    ErrorValue,
    JSONObject,
    NonRetryableError,
    Reply,
    TreadleError,
    check_result,
    error,
)

_log = logging.getLogger("treadle.sandbox")
# A worker runs at most 8 bodies at once, each waiting on at most one call.
MAX_CALLS_IN_FLIGHT = 16
# The longest a host call may take, whatever its step's timeout.
CALL_SECONDS = 30.0


class _Answer(TypedDict, total=False):
    """A reply without its ``t`` and ``id``: a ``result``, or an ``error``."""

    result: JSONObject
    error: ErrorValue
    retryable: bool


class HostCalls:
    def __init__(
        self,
        host: Host,
        reply: Callable[[Reply], None],
        call_seconds: float = CALL_SECONDS,
    ) -> None:
        self._host = host
        self._reply = reply
        self._call_seconds = call_seconds
        self._lock = threading.Lock()
        self._running = 0
        self._executor: ThreadPoolExecutor | None = None
        self._watchdog = Watchdog()

    @property
    def running(self) -> int:
        """Calls whose reply has not been handed to ``reply`` yet."""
        return self._running

    def start(self, call: HostCall) -> None:
        """Run a checked call (``{"id", "method", "args"}``) and reply when it is done."""
        with self._lock:
            if self._running >= MAX_CALLS_IN_FLIGHT:
                raise ProtocolError("too many host calls at once")
            self._running += 1
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    MAX_CALLS_IN_FLIGHT, thread_name_prefix="treadle-host-call"
                )
            executor = self._executor
        deadline = Deadline(time.monotonic() + self._call_seconds)
        self._watchdog.watch(deadline)
        executor.submit(self._run, call, deadline)

    def close(self) -> None:
        """Cut the calls still running short and return once every one has returned
        (``reply`` must drop replies by then)."""
        self._watchdog.close()
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    def _run(self, call: HostCall, deadline: Deadline) -> None:
        try:
            answer = self._answer(call["method"], call["args"], deadline)
        finally:
            self._watchdog.forget(deadline)
            with self._lock:
                self._running -= 1
        self._reply({"t": "reply", "id": call["id"], **answer})

    def _answer(self, method: str, args: JSONObject, deadline: Deadline) -> _Answer:
        try:
            result = self._host.call(method, args, deadline)
        except TreadleError as exc:
            retryable = not isinstance(exc, NonRetryableError)
            return {"error": error(type(exc).__name__, exc.message), "retryable": retryable}
        except Exception:
            _log.exception("sandbox host call %s failed", method)
            return {"error": error("HostError", f"the platform could not complete {method}")}
        try:
            return {"result": check_result(method, result)}
        except ValueError as exc:
            _log.error("sandbox host call %s returned an invalid result: %s", method, exc)
            return {"error": error("HostError", f"the platform could not complete {method}")}
