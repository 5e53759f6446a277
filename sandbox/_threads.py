"""Threads for concurrent step bodies inside a worker process.

A worker runs one replay at a time; within it, the bodies of ``concurrent=True`` steps run in
threads so that bodies waiting on the platform (``env.fetch``) overlap. Tenant code in those
threads is the same RestrictedPython code under the same guards; the process keeps one CPU
budget (ITIMER_PROF counts every thread) and one memory limit.

Two settings keep threads cheap under ``RLIMIT_AS``, which counts address space, not memory:
glibc gives each new thread a malloc arena that reserves 64 MiB (8 threads reserved 590 MB in
an experiment; under a 128 MB limit, thread starts and tenant allocations failed at random),
so the worker keeps one arena; and thread stacks are 4 MiB instead of 8, which still reaches
Python's recursion limit through C-level calls (``sorted(key=...)``, ``map``, class
instantiation) without crashing — 2 MiB was the smallest size that did, measured.
"""

from __future__ import annotations

import ctypes
import queue
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

MAX_PARALLEL_BODIES = 8
_STACK_BYTES = 4 << 20
_M_ARENA_MAX = -8  # mallopt parameter number, from glibc's malloc.h
_prepared = False
_Done = queue.SimpleQueue[tuple[int, BaseException | None]]

T = TypeVar("T")


def run_all(
    items: Sequence[T],
    start: Callable[[T], Callable[[], None]],
    limit: int = MAX_PARALLEL_BODIES,
) -> None:
    """Run a body for each item, at most ``limit`` at a time, each in a thread of its own.

    ``start(item)`` runs on the calling thread, in item order, right before its body may run
    (it sends ``begin``); it returns the body. Returns once every started body has finished;
    then re-raises what the first item's body (in item order) or a ``start`` raised.
    """
    _prepare()
    finished: _Done = queue.SimpleQueue()
    failures: dict[int, BaseException] = {}
    running = 0
    for index, item in enumerate(items):
        if running >= limit:
            _collect(finished, failures)
            running -= 1
        try:
            body = start(item)
        except BaseException as exc:
            failures[index] = exc  # nothing later may start; the running bodies still finish
            break
        if _spawn(index, body, finished):
            running += 1
        else:  # no thread to be had (address space): run it here
            _run(index, body, failures.__setitem__)
    for _ in range(running):
        _collect(finished, failures)
    if failures:
        raise failures[min(failures)]


def _run(
    index: int, body: Callable[[], None], report: Callable[[int, BaseException], None]
) -> None:
    try:
        body()
    except BaseException as exc:  # Suspend, Abort or a bug: re-raised on the calling thread
        report(index, exc)


def _spawn(index: int, body: Callable[[], None], finished: _Done) -> bool:
    def target() -> None:
        failure: list[BaseException] = []
        _run(index, body, lambda _, exc: failure.append(exc))
        finished.put((index, failure[0] if failure else None))

    thread = threading.Thread(target=target, name="treadle-step", daemon=True)
    previous = threading.stack_size(_STACK_BYTES)
    try:
        thread.start()
    except RuntimeError:
        return False
    finally:
        threading.stack_size(previous)
    return True


def _collect(finished: _Done, failures: dict[int, BaseException]) -> None:
    index, exc = finished.get()
    if exc is not None:
        failures.setdefault(index, exc)


def _prepare() -> None:
    global _prepared
    if not _prepared:
        _prepared = True
        try:
            ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 1)
        except (OSError, AttributeError):  # not glibc: nothing to tune
            pass
