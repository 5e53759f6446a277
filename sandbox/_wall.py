"""The second wall: what confines a worker process if tenant code gets past its backend.

RestrictedPython and wasmtime are the first wall. Behind them every worker runs

- as a **uid of its own** (and the same gid), taken from ``uid_base .. uid_base + uid_count``
  by the zygote and given back only once the worker and everything it started are gone: two
  workers, of one tenant or of two, never share a uid, so neither can signal the other or read
  its ``/proc`` entries, and ``RLIMIT_NPROC`` counts one worker's threads alone;
- in a **PID namespace** of its own, whose init is a small keeper process (the worker is its
  only child): the worker sees no other process, and its death, or the keeper's, ends
  everything it started;
- in a **mount namespace** whose root is an empty read-only tmpfs holding read-only bind
  mounts of what a worker reads (the system's ``/usr``, the Python installation, the
  ``sandbox`` and ``treadle`` packages, the Wasm cache), an empty ``/tmp``, four devices and a
  ``/proc`` of its PID namespace: no database socket, no server files, no home directory;
- with ``RLIMIT_NPROC``, ``PR_SET_NO_NEW_PRIVS`` and a **seccomp allowlist**
  (:mod:`sandbox._syscalls`).

Each layer that the kernel or the environment refuses (not root, no libseccomp, no
namespaces) is off, and said so: the zygote reports its layers in its hello message, the pool
logs a warning naming those that are off, ``/healthz`` shows them, and a setting can require
them all (``Wall.required``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import resource
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import treadle.runtime
from sandbox import _syscalls

LAYERS = (
    "uid",
    "pid_namespace",
    "mount_namespace",
    "network_namespace",
    "no_new_privs",
    "nproc",
    "seccomp",
)
# Threads a worker may run: the main one, 8 step bodies (sandbox._threads), the Wasm epoch
# ticker, and a few to spare; the keeper is root and not counted.
NPROC = 16

_CLONE_NEWNS = 0x00020000
_CLONE_NEWPID = 0x20000000
_MS_RDONLY = 0x1
_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MS_NOEXEC = 0x8
_MS_REMOUNT = 0x20
_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_PRIVATE = 1 << 18
_MNT_DETACH = 0x2
_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38
_DEVICES = ("null", "zero", "random", "urandom")
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
_libc = ctypes.CDLL(None, use_errno=True)
_log = logging.getLogger("treadle.sandbox")


class WallError(RuntimeError):
    """A layer of the wall that was up could not be raised for a new worker."""


@dataclass(frozen=True)
class Wall:
    """How the zygote confines workers: the uid range, and whether every layer is required."""

    uid_base: int = 100000
    uid_count: int = 65536
    required: bool = False

    def __post_init__(self) -> None:
        if self.uid_base < 1 or self.uid_count < 1 or self.uid_base + self.uid_count > 2**31:
            raise ValueError("the sandbox uid range must lie within 1 .. 2**31")


def missing(layers: dict[str, bool]) -> list[str]:
    """The layers that are off, in :data:`LAYERS` order."""
    return [name for name in LAYERS if not layers.get(name)]


def verdict(layers: dict[str, bool], *, required: bool) -> str | None:
    """Why the workers must not start (``required`` and a layer is off), or None; a layer
    that is off but not required is logged as a warning."""
    off = ", ".join(missing(layers))
    if not off:
        return None
    if required:
        return f"the sandbox wall is required but these layers of it are off: {off}"
    _log.warning("sandbox wall: these layers are off, workers run without them: %s", off)
    return None


class Uids:
    """The zygote's uid range: one uid per live worker, handed out round-robin so that a uid
    given back is the last to be taken again."""

    def __init__(self, wall: Wall) -> None:
        self._base = wall.uid_base
        self._count = wall.uid_count
        self._next = 0
        self._taken: set[int] = set()

    def take(self) -> int:
        if len(self._taken) >= self._count:
            raise WallError(f"all {self._count} sandbox uids are in use")
        while self._next in self._taken:
            self._next = (self._next + 1) % self._count
        offset = self._next
        self._taken.add(offset)
        self._next = (offset + 1) % self._count
        return self._base + offset

    def give_back(self, uid: int) -> None:
        self._taken.discard(uid - self._base)


def _check(result: int, what: str) -> None:
    if result != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {os.strerror(number)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def _bind(source: str, target: str) -> None:
    _mount(source, target, None, _MS_BIND | _MS_REC)
    # A bind mount takes its flags only from a remount.
    _mount(None, target, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)


# -- the zygote's view: built once ----------------------------------------------------------------


def readable_paths(cache: Path) -> list[str]:
    """What a worker reads after it is forked: the system, Python, its packages, the cache."""
    packages = (
        Path(__file__).resolve().parent,
        Path(treadle.runtime.__file__).resolve().parents[1],
    )
    found = {"/usr", sys.base_prefix, sys.prefix, sys.exec_prefix, str(cache)}
    found.update(str(p) for p in packages)
    found.update(p for p in sys.path if p.endswith(("site-packages", "dist-packages")))
    return _outermost(str(Path(p).resolve()) for p in found if Path(p).exists())


def _outermost(paths: Iterator[str] | list[str]) -> list[str]:
    kept: list[str] = []
    for path in sorted(set(paths)):
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def enter_view(cache: Path) -> bool:
    """Move the zygote (and so every worker) into a mount namespace of its own whose root shows
    only :func:`readable_paths`, read-only, and the host's ``/proc`` (each worker's keeper
    replaces it with its own). False where refused: the workers see the host's files then."""
    if _libc.unshare(_CLONE_NEWNS) != 0:
        return False
    try:
        # Nothing done here may propagate back to the host's mounts.
        _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
        cache.mkdir(parents=True, exist_ok=True)
        _pivot(cache)
    except OSError:
        return False
    return True


def _pivot(cache: Path) -> None:
    top = tempfile.mkdtemp(prefix="treadle-wall-")
    _mount("tmpfs", top, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=0755")
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = Path("/") / name
        if host.is_symlink():  # merged /usr: the links point into the /usr bound below
            os.symlink(os.readlink(host), f"{top}/{name}")
    for path in readable_paths(cache):
        os.makedirs(top + path, mode=0o755, exist_ok=True)
        _bind(path, top + path)
    for directory in ("tmp", "proc", "dev", "etc"):
        os.makedirs(f"{top}/{directory}", mode=0o755, exist_ok=True)
    for device in _DEVICES:
        Path(f"{top}/dev/{device}").touch(mode=0o666)
        _mount(f"/dev/{device}", f"{top}/dev/{device}", None, _MS_BIND)
    if os.path.islink("/etc/localtime"):  # local time for datetime; nothing else of /etc
        os.symlink(os.readlink("/etc/localtime"), f"{top}/etc/localtime")
    _mount("/proc", f"{top}/proc", None, _MS_BIND | _MS_REC)
    os.mkdir(f"{top}/.old")
    _pivot_root(top, f"{top}/.old")
    os.chdir("/")
    with contextlib.suppress(OSError):
        os.rmdir("/.old" + top)  # the host's mount point, a plain directory again
    _check(_libc.umount2(b"/.old", _MNT_DETACH), "umount the old root")
    os.rmdir("/.old")
    _mount(None, "/", None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)


def _pivot_root(new: str, old: str) -> None:
    number = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(errno.ENOSYS, "pivot_root: unknown architecture")
    _check(_libc.syscall(number, new.encode(), old.encode()), "pivot_root")


# -- PID namespaces: one per worker ---------------------------------------------------------------


class PidNamespaces:
    """Forks each keeper as the init of a new PID namespace.

    ``unshare(CLONE_NEWPID)`` puts the caller's *next child* in a new namespace; the zygote
    then re-enters its own (``setns``), so that the next ``unshare`` makes another one.
    """

    def __init__(self) -> None:
        self._own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        self.available = self._try()

    def _try(self) -> bool:
        # In a child: were the way back refused (a user namespace's root may unshare but not
        # re-enter the host's namespace), the zygote's own children would land in the new one.
        return _in_child(
            lambda: _libc.unshare(_CLONE_NEWPID) == 0 and _libc.setns(self._own, _CLONE_NEWPID) == 0
        )

    def fork(self) -> int:
        """``os.fork()``, the child in a new PID namespace when available."""
        if not self.available:
            return os.fork()
        _check(_libc.unshare(_CLONE_NEWPID), "unshare(CLONE_NEWPID)")
        try:
            pid = os.fork()
        except BaseException:
            self._restore()
            raise
        if pid:
            self._restore()
        return pid

    def _restore(self) -> None:
        # Back in our own namespace for children to come: else the next unshare fails.
        _check(_libc.setns(self._own, _CLONE_NEWPID), "setns(CLONE_NEWPID)")


def private_proc(*, fresh: bool) -> None:
    """In a keeper: a mount namespace of its own without the host's ``/proc``; with ``fresh``
    (the keeper is the init of a PID namespace), a ``/proc`` of that namespace instead."""
    _check(_libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_libc.umount2(b"/proc", _MNT_DETACH), "umount /proc")
    if fresh:
        _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)


# -- the worker: privileges, then the filter ------------------------------------------------------


def die_with_parent() -> None:
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _in_child(attempt: Callable[[], bool]) -> bool:
    """Whether ``attempt`` succeeds, tried in a child process that then exits."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if attempt() else 1
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def _become(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def can_become(uid: int, gid: int) -> bool:
    """Whether workers can switch to ``uid``: root can, unless in a user namespace that does
    not map it (a rootless container)."""

    def attempt() -> bool:
        _become(uid, gid)
        return True

    return os.getuid() == 0 and _in_child(attempt)


def drop_privileges(uid: int | None, fallback: tuple[int, int] | None) -> None:
    """Become ``uid`` (its own gid too), capped at :data:`NPROC` tasks; without one, become
    ``fallback`` (``nobody``), if given."""
    if uid is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (NPROC, NPROC))
        _become(uid, uid)
    elif fallback is not None:
        _become(*fallback)


def no_new_privs() -> bool:
    return bool(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0)


def layers(*, uid: bool, pid: bool, mount: bool, net: bool, seccomp: bool) -> dict[str, bool]:
    """The zygote's report: which layer is up for the workers it forks."""
    return {
        "uid": uid,
        "pid_namespace": pid,
        "mount_namespace": mount,
        "network_namespace": net,
        "no_new_privs": True,
        "nproc": uid,
        "seccomp": seccomp,
    }


def confine(filter_: _syscalls.Filter | None) -> None:
    """Last thing before a worker serves: no new privileges, then the syscall filter."""
    if not no_new_privs():
        raise WallError("prctl(PR_SET_NO_NEW_PRIVS) failed")
    if filter_ is not None:
        filter_.load()
