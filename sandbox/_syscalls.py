"""The seccomp allowlist of a worker process: the system calls it makes after it is spawned.

The list was found by running the sandbox suite on every backend with a logging filter and
reading the kernel's log; anything else fails with ``EPERM``. What a worker never needs and an
escaped tenant would want stays out: ``execve``, ``ptrace``, ``mount``, ``unshare``, ``setns``,
``bpf``, ``perf_event_open``, ``keyctl``, ``socket`` (a worker speaks only over the socket it
inherited), ``connect``, ``process_vm_readv``, ``io_uring_*``. ``clone`` is allowed without
namespace flags (threads, and processes up to ``RLIMIT_NPROC``); ``clone3`` answers ``ENOSYS``,
its flags being out of a filter's reach, so the C library falls back to ``clone``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import tempfile
from typing import Any

ALLOWED = (
    # memory
    "brk mmap munmap mremap mprotect madvise mincore membarrier "
    # files and descriptors already open (reading the runtime's files, the inherited socket)
    "read readv pread64 write writev pwrite64 close close_range lseek fstat newfstatat statx "
    "stat lstat openat open access faccessat faccessat2 readlink readlinkat getdents64 fcntl "
    "dup dup2 dup3 getcwd "
    # the socket to the parent
    "recvmsg sendmsg recvfrom sendto shutdown getsockopt getsockname getpeername poll ppoll "
    "select pselect6 "
    # threads, signals, time
    "futex set_robust_list get_robust_list rseq set_tid_address rt_sigaction rt_sigprocmask "
    "rt_sigreturn rt_sigtimedwait sigaltstack tgkill tkill kill getpid gettid getppid "
    "sched_yield sched_getaffinity clock_gettime clock_getres clock_nanosleep nanosleep "
    "gettimeofday time getitimer setitimer timer_create timer_settime timer_delete "
    "exit exit_group wait4 waitid restart_syscall arch_prctl "
    # limits and identity (the CPU budget re-arms RLIMIT_CPU)
    "getrlimit setrlimit prlimit64 getrusage getuid geteuid getgid getegid getresuid "
    "getresgid getgroups uname sysinfo getrandom"
).split()
# clone's flags that make namespaces: refused, as unshare and setns are.
NAMESPACE_FLAGS = 0x7E020000
# ioctl: only non-blocking mode and close-on-exec (Python sets timeouts on sockets this way);
# "is it a terminal?" (Python's open() asks) is answered as for any file that is not one.
_FIONBIO = 0x5421
_FIOCLEX = 0x5451
_TCGETS = 0x5401
# prctl: thread names and the questions libraries ask; no PDEATHSIG, DUMPABLE or SECCOMP
# changes (PR_SET_NAME, PR_GET_NAME, PR_GET_DUMPABLE).
_PRCTL = (15, 16, 3)
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_libc = ctypes.CDLL(None, use_errno=True)


class _SockFilter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    )


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter)))


class Filter:
    """The BPF program libseccomp generated for the allowlist, once, in the zygote: a worker
    only installs it (generating it per worker cost most of a millisecond)."""

    def __init__(self, program: bytes) -> None:
        count = len(program) // ctypes.sizeof(_SockFilter)
        self._instructions = (_SockFilter * count).from_buffer_copy(program)
        self._program = _SockFprog(count, self._instructions)

    def load(self) -> None:
        """Install the filter on this process; no new privileges must be set already."""
        if _libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(self._program)):
            number = ctypes.get_errno()
            raise OSError(number, f"seccomp: {os.strerror(number)}")


def build() -> Filter | None:
    """The worker's filter, ready to load; None where libseccomp is missing."""
    try:
        import pyseccomp
    except (ImportError, RuntimeError, OSError):  # it raises RuntimeError without libseccomp
        return None
    denied: int = pyseccomp.ERRNO(errno.EPERM)
    syscalls: Any = pyseccomp.SyscallFilter(denied)
    for name in ALLOWED:
        _allow(syscalls, pyseccomp.ALLOW, name)
    syscalls.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")
    no_namespace = pyseccomp.Arg(0, pyseccomp.MASKED_EQ, NAMESPACE_FLAGS, 0)
    syscalls.add_rule(pyseccomp.ALLOW, "clone", no_namespace)
    for request in (_FIONBIO, _FIOCLEX):
        syscalls.add_rule(pyseccomp.ALLOW, "ioctl", pyseccomp.Arg(1, pyseccomp.EQ, request))
    not_a_tty = pyseccomp.ERRNO(errno.ENOTTY)
    syscalls.add_rule(not_a_tty, "ioctl", pyseccomp.Arg(1, pyseccomp.EQ, _TCGETS))
    for option in _PRCTL:
        syscalls.add_rule(pyseccomp.ALLOW, "prctl", pyseccomp.Arg(0, pyseccomp.EQ, option))
    with tempfile.TemporaryFile() as program:
        syscalls.export_bpf(program)
        program.seek(0)
        return Filter(program.read())


def _allow(syscalls: Any, action: int, name: str) -> None:
    try:
        syscalls.add_rule(action, name)
    except (ValueError, OSError):  # not a system call of this architecture (open, stat, ...)
        pass
