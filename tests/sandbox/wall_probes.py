"""What tenant code would try after getting past its backend ("one interpreter bug"), run as
native Python inside a real worker behind the wall (``Spawner(probes=__name__)``).

Each probe returns what happened as JSON: the errno's name for what was refused, ``"ok"`` for
what went through. They never raise: the test decides what should have happened.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import time
from collections.abc import Callable
from typing import Any

_libc = ctypes.CDLL(None, use_errno=True)
_PTRACE_TRACEME = 0
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNS = 0x00020000


def _outcome(attempt: Callable[[], object]) -> str:
    try:
        attempt()
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return "ok"


def _libc_outcome(result: int) -> str:
    return "ok" if result == 0 else errno.errorcode[ctypes.get_errno()]


def identity() -> dict[str, Any]:
    status = dict(
        line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line
    )
    return {
        "uid": os.getresuid(),
        "gid": os.getresgid(),
        "groups": os.getgroups(),
        "pid": os.getpid(),
        "no_new_privs": status["NoNewPrivs"].strip(),
        "seccomp": status["Seccomp"].strip(),
        "processes": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    }


def signal(pid: int) -> str:
    return _outcome(lambda: os.kill(pid, 0))


def reach_socket(path: str) -> dict[str, str]:
    def connect() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)

    def tcp() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.connect(("127.0.0.1", 5432))

    return {
        "stat": _outcome(lambda: os.stat(path)),
        "unix": _outcome(connect),
        "tcp": _outcome(tcp),
    }


def read(path: str) -> str:
    def attempt() -> None:
        with open(path, "rb") as file:
            file.read(100)

    return _outcome(attempt)


def exists(paths: list[str]) -> list[str]:
    return [path for path in paths if os.path.lexists(path)]


def fork_bomb() -> dict[str, Any]:
    """Fork until refused; the children wait until their namespace is torn down."""
    forked = 0
    while forked < 1000:
        try:
            pid = os.fork()
        except OSError as exc:
            return {"forked": forked, "error": errno.errorcode[exc.errno or 0]}
        if pid == 0:
            while True:
                time.sleep(60)
        forked += 1
    return {"forked": forked, "error": None}


def forbidden_syscalls() -> dict[str, str]:
    def execute() -> None:
        os.execv("/usr/bin/true", ["true"])

    return {
        "ptrace": _libc_outcome(_libc.ptrace(_PTRACE_TRACEME, 0, None, None)),
        "unshare": _libc_outcome(_libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNS)),
        "execve": _outcome(execute),
        "chroot": _libc_outcome(_libc.chroot(b"/tmp")),
    }


def write(path: str) -> str:
    def attempt() -> None:
        with open(path, "w") as file:
            file.write("x")

    return _outcome(attempt)


def loaded(names: list[str]) -> list[str]:
    """Which of the modules ``names`` this worker has imported."""
    import sys

    return sorted(name for name in names if name in sys.modules)
