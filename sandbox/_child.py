"""The worker process: serves one tenant's replays and validations, one at a time.

It runs in a process the zygote forked, after the OS limits are in place (see ``_zygote``).
Between any two messages it re-arms the CPU budget, so each step body, and each stretch of
``run()`` between steps, gets ``step_cpu_ms`` of CPU time.
"""

from __future__ import annotations

import math
import resource
import signal
import socket
import time
import traceback
from collections import OrderedDict
from types import ModuleType
from typing import cast

from sandbox._backends import Program, load_backend
from sandbox._channel import ParentChannel
from sandbox._messages import Probe, ReplayFields, ReplayMessage, Validate
from sandbox._types import Limits
from sandbox._wire import Connection, ProtocolError
from treadle.runtime import CodeInvalid, ErrorValue

_CACHED_VERSIONS = 64
_MAX_FROM_PARENT = 1 << 31  # the parent is trusted; the cap only guards the header's sanity


class CpuBudget:
    """CPU time left before the kernel kills this process.

    ``ITIMER_PROF`` gives millisecond precision: its SIGPROF has no handler here, so the
    default action terminates the process, inside C loops too (``7**10**8``). ``RLIMIT_CPU``
    (whole seconds) backs it up with SIGXCPU and, at the hard limit, SIGKILL.
    """

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._soft, self._hard = resource.getrlimit(resource.RLIMIT_CPU)

    def arm(self) -> None:
        signal.setitimer(signal.ITIMER_PROF, self._seconds)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        needed = usage.ru_utime + usage.ru_stime + self._seconds
        # The backstop only ever moves up; raise it a few seconds at a time, not per message.
        if self._soft == resource.RLIM_INFINITY or self._soft < needed + 1:
            soft = math.ceil(needed) + 3
            if self._hard != resource.RLIM_INFINITY:
                soft = min(soft, self._hard)
            resource.setrlimit(resource.RLIMIT_CPU, (soft, self._hard))
            self._soft = soft

    def disarm(self) -> None:
        """Between requests: reading the next one must not run into what is left of this one."""
        signal.setitimer(signal.ITIMER_PROF, 0)


class WorkerLoop:
    def __init__(
        self, sock: socket.socket, limits: Limits, probes: ModuleType | None = None
    ) -> None:
        self._conn = Connection(sock, _MAX_FROM_PARENT)
        self._limits = limits
        self._probes = probes
        self._cpu = CpuBudget(limits.step_cpu_seconds)
        self._programs: OrderedDict[str, Program] = OrderedDict()

    def serve(self) -> None:
        self._conn.send({"t": "hello"})
        try:
            self._loop()
        except (EOFError, BrokenPipeError):
            return
        except Exception:
            # A bug of ours, not of the tenant: tell the parent what it was, then exit.
            self._conn.send({"t": "crash", "message": traceback.format_exc(limit=20)})
            raise

    def _loop(self) -> None:
        while True:
            try:
                message = self._conn.recv()
            except EOFError:
                return
            # From the parent, which is trusted: a message is as it sent it.
            kind = message["t"]
            if kind == "replay":
                if not self._replay(cast(ReplayMessage, message)):
                    return
            elif kind == "validate":
                self._validate(cast(Validate, message))
            elif kind == "probe" and self._probes is not None:
                self._probe(cast(Probe, message))
            else:
                raise ProtocolError(f"unexpected message {kind!r}")
            self._cpu.disarm()

    def _replay(self, message: ReplayMessage) -> bool:
        """Serve one replay; False when this worker must exit afterwards."""
        self._cpu.arm()
        try:
            program = self._program(message)
        except CodeInvalid as exc:
            problems = "; ".join(f"line {p['line']}: {p['message']}" for p in exc.problems)
            failure: ErrorValue = {"name": "CodeInvalid", "message": f"{exc.message}: {problems}"}
            self._conn.send({"t": "failed", "error": failure, "logs": []})
            return True
        if program is None:
            self._conn.send({"t": "need_source"})
            return True
        channel = ParentChannel(self._conn, self._cpu)
        outcome, spent = program.replay(_on_time(message), self._limits, channel)
        outcome["recycle"] = spent
        self._conn.send(outcome)
        return not spent

    def _probe(self, message: Probe) -> None:
        """Tests only (a zygote started with a probe module): run one of its functions here,
        behind the wall, as code that got past the backend would."""
        result = getattr(self._probes, message["name"])(*message.get("args", []))
        self._conn.send({"t": "probed", "result": result})

    def _validate(self, message: Validate) -> None:
        self._cpu.arm()
        try:
            program = self._compile(
                message["sandbox"], message["source"], message.get("class_name")
            )
            program.check()
        except CodeInvalid as exc:
            self._conn.send({"t": "invalid", "problems": exc.problems})
            return
        self._remember(message["version"], program)
        self._conn.send({"t": "valid", "class_name": program.class_name})

    def _program(self, message: ReplayMessage) -> Program | None:
        version = message["version"]
        program = self._programs.get(version)
        if program is not None:
            self._programs.move_to_end(version)
            return program
        source = message.get("source")
        if source is None:
            return None
        program = self._compile(message["sandbox"], source, message.get("class_name"))
        self._remember(version, program)
        return program

    def _compile(self, sandbox: str, source: str, class_name: str | None) -> Program:
        return load_backend(sandbox).compile(source, class_name)

    def _remember(self, version: str, program: Program) -> None:
        self._programs[version] = program
        self._programs.move_to_end(version)
        while len(self._programs) > _CACHED_VERSIONS:
            self._programs.popitem(last=False)


def _on_time(message: ReplayMessage) -> ReplayFields:
    """The replay's request, its clock moved on by the time since the parent read it (a busy
    machine may take a while to deliver the message, or to compile the code): a sleep that
    starts now must not end early by as much."""
    request = message["request"].copy()
    clock_at = message.get("clock_at")
    if isinstance(clock_at, float):
        request["now"] = float(request["now"]) + max(0.0, time.monotonic() - clock_at)
    return request
