"""CPU time used by process trees and by the PostgreSQL server during a window of a benchmark.

Read from ``/proc``: a process's user + system time, sampled a few times a second so that a
process that ends within the window still counts what it used up to its last sample.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable

_HZ = os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, str, int]]:
    """Every process: pid → (parent pid, command name, CPU ticks so far)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        found[int(entry)] = (int(fields[1]), name, int(fields[11]) + int(fields[12]))
    return found


class CpuMeter:
    """CPU seconds used between :meth:`start` and :meth:`stop` by each group: the process trees
    of ``roots`` (name → pid: the process and its descendants, e.g. its sandbox workers), and
    ``"postgres"``, every process named ``postgres`` (the server's backends and its own
    processes, which a benchmark's statements keep busy)."""

    def __init__(self, roots: Callable[[], dict[str, int]], interval: float = 0.2) -> None:
        self._roots = roots
        self._interval = interval
        self._first: dict[int, int] = {}
        self._last: dict[int, int] = {}
        self._group: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._sample(first=True)
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._sample(first=False)
        used: dict[str, float] = collections.defaultdict(float)
        for pid, ticks in self._last.items():
            group = self._group.get(pid)
            if group is not None:
                used[group] += (ticks - self._first.get(pid, 0)) / _HZ
        return dict(used)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample(first=False)

    def _sample(self, *, first: bool) -> None:
        processes = _processes()
        roots = {pid: name for name, pid in self._roots().items()}
        for pid, (_, command, ticks) in processes.items():
            group = self._group.get(pid) or _group_of(pid, command, roots, processes)
            if group is None:
                continue
            self._group[pid] = group
            if first:
                self._first[pid] = ticks
            self._last[pid] = ticks


def _group_of(
    pid: int,
    command: str,
    roots: dict[int, str],
    processes: dict[int, tuple[int, str, int]],
) -> str | None:
    if command == "postgres":
        return "postgres"
    at, seen = pid, set()
    while at not in roots:
        if at in seen or at not in processes or at <= 1:
            return None
        seen.add(at)
        at = processes[at][0]
    return roots[at]
