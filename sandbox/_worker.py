"""One sandbox worker process as the pool sees it: its socket, its limits, its cached versions."""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Mapping

from sandbox import _untrusted
from sandbox._compile import problem
from sandbox._messages import Exited, Validate
from sandbox._spawner import Spawner
from sandbox._types import Artifact, Limits
from sandbox._wire import Connection, ProtocolError
from treadle.runtime import CodeInvalid, JSONObject, seconds_text

_HELLO_TIMEOUT = 30.0
_EXIT_STATUS_TIMEOUT = 2.0
_SEND_TIMEOUT = 30.0


class WorkerGone(Exception):
    """The worker died before it took a request: nothing of the tenant's ran.

    Either the request could not be sent, or the worker's end of the socket was closed with
    the request still unread in it (the kernel then reports ``ECONNRESET`` instead of the end
    of the stream). A worker that took the request and then died is not gone: it failed."""


# Linux's clock id of a process's CPU time: MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED).
_CPUCLOCK_SCHED = 2


class Worker:
    """A forked worker serving one tenant for its whole life, with fixed limits."""

    def __init__(self, spawner: Spawner, tenant: str, limits: Limits) -> None:
        self.tenant = tenant
        self.limits = limits
        self.versions: set[str] = set()
        self.replays = 0
        self.usable = True
        self.sandbox = "none"  # of the replay it ran last
        self.last_used = time.monotonic()
        self._spawner = spawner
        self._closed = False
        self._pidfd: int | None = None
        self.pid, sock = spawner.fork(limits)
        max_message = 16 * 1024 * 1024 + 2 * limits.max_step_result_bytes
        self._conn = Connection(sock, max_message)
        self._pidfd = _open_pidfd(self.pid)
        try:
            if self._conn.recv(time.monotonic() + _HELLO_TIMEOUT)["t"] != "hello":
                raise ProtocolError("expected hello")
        except (EOFError, TimeoutError, OSError, ProtocolError) as exc:
            self.close()
            message = self.death()[1]
            raise RuntimeError(f"a sandbox worker did not start: {message}") from exc

    def cpu_ns(self) -> int | None:
        """The CPU time of every thread of the worker process so far (None once it is gone):
        read from outside, through the process's CPU clock, not reported by the worker."""
        try:
            return time.clock_gettime_ns(((~self.pid) << 3) | _CPUCLOCK_SCHED)
        except OSError:
            return None

    @property
    def outside_budget(self) -> float:
        """Wall-clock seconds tenant code may run between two messages outside a step body."""
        return max(5.0, 2 * self.limits.step_cpu_seconds)

    @property
    def zygote_alive(self) -> bool:
        return self._spawner.alive

    def idle_and_alive(self) -> bool:
        """Whether an idle worker can be handed out: its process has not ended and it has
        said nothing (an idle worker never speaks first: anything to read means trouble).

        The end of its stream is no sign of a death in time: the worker's keeper holds the
        socket until it has reaped the worker and exited, which takes a while on a busy
        machine. Its pidfd is: readable as soon as the process has ended, reaped or not. Even
        so a worker may die right after this check; a request it never took is retried on
        another worker (``WorkerGone``)."""
        if self._closed or not self._spawner.alive:
            return False
        # poll, not select: a server's descriptors may number past select's 1024.
        poller = select.poll()
        try:
            poller.register(self._conn.fileno(), select.POLLIN)
            if self._pidfd is not None:
                poller.register(self._pidfd, select.POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False

    def send(self, message: Mapping[str, object]) -> None:
        """Send, or raise EOFError: a worker that does not read within a while is gone."""
        try:
            self._conn.send(message, timeout=_SEND_TIMEOUT)
        except OSError as exc:
            raise EOFError("the sandbox worker is gone") from exc

    def recv(self, deadline: float) -> JSONObject:
        """The worker's next message, as it came: check it before trusting any of it."""
        return self._conn.recv(deadline)

    def kill(self) -> None:
        """Kill the process but keep the connection open: a thread reading it sees the end of
        the stream (closing it under that thread could hand its descriptor to another file)."""
        self.usable = False
        if not self._closed:
            self._spawner.kill(self.pid)

    def close(self) -> None:
        """Kill the process: a worker is never trusted to exit when asked."""
        self.usable = False
        if not self._closed:
            self._closed = True
            self._spawner.kill(self.pid)
            self._conn.close()
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None

    def death(self) -> tuple[str, str]:
        """``(error name, message)`` saying why the process ended, from the zygote's report."""
        status = self._spawner.exit_status(self.pid, _EXIT_STATUS_TIMEOUT)
        return describe_exit(status, self.limits)

    def validate(self, artifact: Artifact, timeout: float | None = None) -> str:
        """The entry class of ``artifact``; past ``timeout`` seconds (by default, the budget
        outside a step) the process is killed and the code refused. Raises ``WorkerGone`` when
        the worker died before it took the request."""
        request: Validate = {
            "t": "validate",
            "version": artifact.version,
            "sandbox": artifact.sandbox,
            "source": artifact.source,
            "class_name": artifact.class_name,
        }
        try:
            self.send(request)
        except EOFError:
            self.close()
            raise WorkerGone("the sandbox worker was gone before the validation started") from None
        reply = self._validation_reply(self.outside_budget if timeout is None else timeout)
        if reply["t"] == "invalid":
            problems = _untrusted.problems(reply.get("problems"))
            noun = "problem" if len(problems) == 1 else "problems"
            raise CodeInvalid(f"the workflow code has {len(problems)} {noun}", problems=problems)
        if reply["t"] != "valid":
            self.close()
            raise ProtocolError(f"unexpected message {reply['t']!r}")
        self.versions.add(artifact.version)
        return _untrusted.class_name(reply.get("class_name"))

    def _validation_reply(self, budget: float) -> JSONObject:
        try:
            return self.recv(time.monotonic() + budget)
        except TimeoutError:
            self.close()
            reason = f"it did not finish loading within {seconds_text(budget)}"
        except ConnectionResetError:
            self.close()  # it ended with the request unread: none of the code ran
            raise WorkerGone("the sandbox worker died before it took the validation") from None
        except (EOFError, OSError):
            self.close()
            reason = self.death()[1]
        message = f"the code could not be checked in the sandbox: {reason}"
        raise CodeInvalid(message, problems=[problem(1, 1, message)])


def _open_pidfd(pid: int) -> int | None:
    """A descriptor of the worker process that becomes readable when it ends (None where the
    kernel has none: the end of the socket stream is the only sign there)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def describe_exit(status: Exited | None, limits: Limits) -> tuple[str, str]:
    """Why a worker ended, in words a tenant can act on."""
    if status is None:
        return "SandboxCrashed", "the sandbox worker died"
    number = status.get("signal")
    if number in (signal.SIGXCPU, signal.SIGPROF):
        return (
            "ResourceLimitExceeded",
            f"CPU time limit exceeded (step_cpu_ms={limits.step_cpu_ms})",
        )
    if number == signal.SIGKILL:
        return (
            "ResourceLimitExceeded",
            f"the sandbox worker was killed (SIGKILL); it may have run out of memory "
            f"(memory_mb={limits.memory_mb})",
        )
    if number:
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return "SandboxCrashed", f"the sandbox worker crashed ({name})"
    return (
        "SandboxCrashed",
        f"the sandbox worker exited unexpectedly (exit code {status.get('code')})",
    )
