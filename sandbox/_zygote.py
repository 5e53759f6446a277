"""The zygote: a fresh interpreter with the sandbox pre-imported that forks worker processes.

Started by the pool as ``python -m sandbox._zygote <fd>`` with an environment of PATH and LANG
only, so it never holds the server's secrets, database connections or threads. Over its
control socket (``SOCK_SEQPACKET``: one datagram per message, file descriptors attached) it
receives ``fork`` requests carrying the worker's end of a socket pair, and ``kill`` requests;
it reports each child's pid and, when it reaps one, how it ended — which is how the pool can
tell a CPU-limit death from a crash. Only the zygote kills its children, so a pid is never
signalled after it was reaped and possibly reused.
"""

from __future__ import annotations

import ctypes
import json
import os
import pwd
import resource
import select
import signal
import socket
import sys
import traceback
from typing import Any

from sandbox._backends import preload
from sandbox._child import WorkerLoop
from sandbox._types import Limits

_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000
_PR_SET_PDEATHSIG = 1
_WORKER_FD = 3
_MAX_FDS = 32
_libc = ctypes.CDLL(None, use_errno=True)


def _preimport() -> None:
    """Import and warm up everything a worker may need: workers cannot read /root later."""
    import datetime

    from sandbox._backends import SANDBOXES, load_backend

    for name in SANDBOXES:
        load_backend(name)
    from sandbox._compile import compile_workflow

    compile_workflow(
        "from treadle import WorkflowEntrypoint\n"
        "class W(WorkflowEntrypoint):\n"
        "    def run(self, event, step):\n"
        "        print(event)\n"
        "        return [x for x in range(3)]\n"
    )
    datetime.datetime.strptime("2024-01-02 03:04", "%Y-%m-%d %H:%M")  # imports _strptime
    for codec in ("utf-8", "utf-16", "utf-32", "latin-1", "ascii", "cp1252", "idna"):
        "x".encode(codec)


def _isolate_network() -> bool:
    """A network namespace of its own (loopback only, down): workers cannot reach anything."""
    flags = _CLONE_NEWNET if os.getuid() == 0 else _CLONE_NEWUSER | _CLONE_NEWNET
    return bool(_libc.unshare(flags) == 0)


def _nobody() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return 65534, 65534


class Zygote:
    def __init__(self, control: socket.socket) -> None:
        self._control = control
        self._children: set[int] = set()
        self._nobody = _nobody()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w)
        # A Python-level handler is what makes the wake-up fd fire on SIGCHLD.
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)

    def serve(self, hello: dict[str, Any]) -> None:
        try:
            self._send({"op": "hello", **hello})
            self._loop()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the pool is gone
        self._shutdown()

    def _loop(self) -> None:
        while True:
            control = self._control.fileno()
            ready, _, _ = select.select([control, self._wake_r], [], [])
            if self._wake_r in ready:
                while _drain(self._wake_r):
                    pass
                self._reap()
            if control in ready:
                data, fds, _, _ = socket.recv_fds(self._control, 65536, 4)
                if not data:
                    return
                self._handle(json.loads(data), fds)

    def _handle(self, message: dict[str, Any], fds: list[int]) -> None:
        try:
            if message["op"] == "fork" and fds:
                self._send({"op": "forked", "id": message["id"], **self._fork(fds[0], message)})
            elif message["op"] == "kill" and message["pid"] in self._children:
                os.kill(message["pid"], signal.SIGKILL)
        finally:
            for fd in fds:
                os.close(fd)

    def _fork(self, fd: int, message: dict[str, Any]) -> dict[str, Any]:
        limits = Limits(**message["limits"])
        try:
            pid = os.fork()
        except OSError as exc:
            return {"pid": None, "error": str(exc)}
        if pid == 0:
            code = 70
            try:
                self._become_worker(fd, limits)
                code = 0
            finally:
                os._exit(code)
        self._children.add(pid)
        return {"pid": pid}

    def _become_worker(self, fd: int, limits: Limits) -> None:
        zygote = os.getppid()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self._control.detach()  # the fd is closed below; the object must not close it again
        _only_fd(fd)
        os.chdir("/")
        os.environ.clear()
        _apply_limits(limits)
        preload(limits.sandbox)  # under the limits, but while the runtime's files are readable
        if os.getuid() == 0:
            uid, gid = self._nobody
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        os.umask(0o077)
        # Set after setuid, which clears it: die with the zygote, hence with the pool.
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != zygote:
            return
        WorkerLoop(socket.socket(fileno=_WORKER_FD), limits).serve()

    def _reap(self) -> None:
        while self._children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._children.discard(pid)
            ended = {"op": "exited", "pid": pid, "signal": None, "code": None}
            if os.WIFSIGNALED(status):
                ended["signal"] = os.WTERMSIG(status)
            else:
                ended["code"] = os.waitstatus_to_exitcode(status)
            self._send(ended)

    def _shutdown(self) -> None:
        for pid in self._children:
            os.kill(pid, signal.SIGKILL)

    def _send(self, message: dict[str, Any]) -> None:
        self._control.send(json.dumps(message).encode())


def _drain(fd: int) -> bool:
    try:
        return bool(os.read(fd, 512))
    except BlockingIOError:
        return False


def _only_fd(fd: int) -> None:
    """Keep the worker's socket as fd 3, stdio on /dev/null, and close everything else."""
    if fd != _WORKER_FD:
        os.dup2(fd, _WORKER_FD)
        os.close(fd)
    devnull = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1, 2):
        os.dup2(devnull, std)
    if devnull > _WORKER_FD:
        os.close(devnull)
    os.closerange(_WORKER_FD + 1, os.sysconf("SC_OPEN_MAX"))


def _apply_limits(limits: Limits) -> None:
    memory = limits.memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (_MAX_FDS, _MAX_FDS))


def main(argv: list[str]) -> None:
    control = socket.socket(fileno=int(argv[1]))
    # Ctrl-C in the server's terminal is for the server; it stops us by closing the socket.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _preimport()
    isolated = _isolate_network()
    try:
        Zygote(control).serve({"netns": isolated, "uid": os.getuid()})
    except Exception:
        traceback.print_exc()
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv)
