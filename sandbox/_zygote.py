"""The zygote: a fresh interpreter with the sandbox pre-imported that forks worker processes.

Started by the pool as ``python -m sandbox._zygote <fd>`` with an environment of PATH and LANG
only, so it never holds the server's secrets, database connections or threads. Over its
control socket (``SOCK_SEQPACKET``: one datagram per message, file descriptors attached) it
receives ``fork`` requests carrying the worker's end of a socket pair, and ``kill`` requests;
it reports each child's pid and, when it reaps one, how it ended — which is how the pool can
tell a CPU-limit death from a crash. Only the zygote kills its children, so a pid is never
signalled after it was reaped and possibly reused.

Each worker comes with a keeper: the zygote forks the keeper (the init of a new PID namespace,
see ``_wall``), the keeper forks the worker and waits for it, then exits with its status
(``128 + signal`` for a signal: an init cannot die of one). The pool knows the worker's pid;
the zygote signals and reaps the keeper, whose death ends the namespace.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import pwd
import resource
import select
import signal
import socket
import sys
import traceback
from types import ModuleType

from sandbox import _syscalls, _wall
from sandbox._backends import preload
from sandbox._child import WorkerLoop
from sandbox._messages import (
    Exited,
    ForkRequest,
    ForkResult,
    ZygoteFacts,
    ZygoteHello,
    ZygoteOptions,
    ZygoteReport,
    ZygoteRequest,
)
from sandbox._types import Limits
from sandbox.wasm._engine import cache_dir

_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000
_WORKER_FD = 3
_MAX_FDS = 32
_READY_TIMEOUT = 10.0
_SIGNALLED = 128  # a keeper's exit code: 128 + the signal that ended its worker
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
    def __init__(self, control: socket.socket, setup: Setup) -> None:
        self._control = control
        self._setup = setup
        self._uids = _wall.Uids(setup.wall)
        self._keepers: dict[int, tuple[int | None, int | None]] = {}  # keeper: (worker, uid)
        self._workers: dict[int, int] = {}  # worker: keeper
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w)
        # A Python-level handler is what makes the wake-up fd fire on SIGCHLD.
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)

    def serve(self, facts: ZygoteFacts) -> None:
        hello: ZygoteHello = {"op": "hello", **facts}
        try:
            self._send(hello)
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

    def _handle(self, message: ZygoteRequest, fds: list[int]) -> None:
        try:
            if message["op"] == "fork" and fds:
                self._send({"op": "forked", "id": message["id"], **self._fork(fds[0], message)})
            elif message["op"] == "kill" and message["pid"] in self._workers:
                os.kill(self._workers[message["pid"]], signal.SIGKILL)
        finally:
            for fd in fds:
                os.close(fd)

    def _fork(self, fd: int, message: ForkRequest) -> ForkResult:
        limits = Limits(**message["limits"])
        try:
            uid = self._uids.take() if self._setup.layers["uid"] else None
        except _wall.WallError as exc:
            return {"pid": None, "error": str(exc)}
        ready_r, ready_w = os.pipe()
        try:
            keeper = self._setup.pids.fork()
        except OSError as exc:
            os.close(ready_r)
            os.close(ready_w)
            if uid is not None:
                self._uids.give_back(uid)
            return {"pid": None, "error": str(exc)}
        if keeper == 0:
            code = 70
            try:
                os.close(ready_r)
                code = self._keep(fd, limits, uid, ready_w)
            finally:
                os._exit(code)
        os.close(ready_w)
        self._keepers[keeper] = (None, uid)
        report = _read_report(ready_r)
        worker = _only_child(keeper) if report == "ok" else None
        if worker is None:
            os.kill(keeper, signal.SIGKILL)
            return {"pid": None, "error": report or "the worker died as it started"}
        self._keepers[keeper] = (worker, uid)
        self._workers[worker] = keeper
        return {"pid": worker}

    def _keep(self, fd: int, limits: Limits, uid: int | None, ready: int) -> int:
        """The keeper: set up the worker's namespaces, fork it, wait for it, report its end."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        _wall.die_with_parent()
        try:
            if self._setup.layers["mount_namespace"]:
                _wall.private_proc(fresh=self._setup.layers["pid_namespace"])
            keeper = os.getpid()
            worker = os.fork()
        except OSError as exc:
            os.write(ready, str(exc).encode()[:500])
            return 71
        if worker == 0:
            code = 70
            try:
                os.close(ready)
                self._become_worker(fd, limits, uid, keeper)
                code = 0
            finally:
                os._exit(code)
        os.write(ready, b"ok")
        # The worker's socket stays open here until the worker is reaped, so the pool sees its
        # end only once the keeper has exited with the worker's status (were the pool to ask
        # for a kill before, the zygote would report the kill, not the cause).
        os.closerange(0, fd)
        os.closerange(fd + 1, os.sysconf("SC_OPEN_MAX"))
        return _wait_for(worker)

    def _become_worker(self, fd: int, limits: Limits, uid: int | None, keeper: int) -> None:
        self._control.detach()  # the fd is closed below; the object must not close it again
        _only_fd(fd)
        os.chdir("/")
        os.environ.clear()
        _apply_limits(limits)
        preload(limits.sandbox)  # under the limits, but while the runtime's files are readable
        _wall.drop_privileges(uid, self._setup.fallback)
        os.umask(0o077)
        # Set after setuid, which clears it: die with the keeper, hence with the zygote.
        _wall.die_with_parent()
        if os.getppid() != keeper:
            return
        _wall.confine(self._setup.syscalls)
        loop = WorkerLoop(socket.socket(fileno=_WORKER_FD), limits, self._setup.probes)
        loop.serve()

    def _reap(self) -> None:
        while self._keepers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker, uid = self._keepers.pop(pid, (None, None))
            if uid is not None:
                self._uids.give_back(uid)  # the namespace, and all in it, is gone
            if worker is None:
                continue  # it failed to start a worker; the pool was told then
            del self._workers[worker]
            ended: Exited = {"op": "exited", "pid": worker, "signal": None, "code": None}
            if os.WIFSIGNALED(status):
                ended["signal"] = os.WTERMSIG(status)
            else:
                code = os.waitstatus_to_exitcode(status)
                if code >= _SIGNALLED:
                    ended["signal"] = code - _SIGNALLED
                else:
                    ended["code"] = code
            self._send(ended)

    def _shutdown(self) -> None:
        for pid in self._keepers:
            os.kill(pid, signal.SIGKILL)

    def _send(self, message: ZygoteReport | ZygoteHello) -> None:
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


class Setup:
    """What the zygote prepared once for all its workers: the wall's layers and filter."""

    def __init__(self, options: ZygoteOptions) -> None:
        self.wall = _wall.Wall(**options.get("wall", {}))
        probes = options.get("probes")
        # Tests only: a module whose functions a worker runs on request, behind the wall.
        self.probes: ModuleType | None = importlib.import_module(probes) if probes else None
        self.syscalls = _syscalls.build()
        self.network = _isolate_network()
        mount = _wall.enter_view(cache_dir())
        self.pids = _wall.PidNamespaces()
        first, last = self.wall.uid_base, self.wall.uid_base + self.wall.uid_count - 1
        uids = _wall.can_become(first, first) and _wall.can_become(last, last)
        nobody = _nobody()
        # Without a uid range, workers still leave root if they can (as nobody).
        self.fallback = nobody if not uids and _wall.can_become(*nobody) else None
        self.layers = _wall.layers(
            uid=uids,
            pid=self.pids.available,
            mount=mount,
            net=self.network,
            seccomp=self.syscalls is not None,
        )


def _read_report(fd: int) -> str:
    """What the keeper wrote before it closed its end ("ok", or why it failed)."""
    chunks: list[bytes] = []
    try:
        while select.select([fd], [], [], _READY_TIMEOUT)[0]:
            chunk = os.read(fd, 512)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode(errors="replace")


def _only_child(keeper: int) -> int | None:
    """The worker's pid as the zygote sees it (the keeper knows it in its own namespace only)."""
    try:
        with open(f"/proc/{keeper}/task/{keeper}/children") as children:
            pids = children.read().split()
    except OSError:
        return None
    return int(pids[0]) if len(pids) == 1 else None


def _wait_for(worker: int) -> int:
    """Reap until the worker ends (an init reaps the orphans of its namespace too)."""
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 70
        if pid == worker:
            if os.WIFSIGNALED(status):
                return _SIGNALLED + os.WTERMSIG(status)
            return min(os.waitstatus_to_exitcode(status), _SIGNALLED - 1)


def main(argv: list[str]) -> None:
    control = socket.socket(fileno=int(argv[1]))
    # Ctrl-C in the server's terminal is for the server; it stops us by closing the socket.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _preimport()
    setup = Setup(json.loads(argv[2]) if len(argv) > 2 else {})
    try:
        facts: ZygoteFacts = {"netns": setup.network, "uid": os.getuid(), "wall": setup.layers}
        Zygote(control, setup).serve(facts)
    except Exception:
        traceback.print_exc()
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv)
