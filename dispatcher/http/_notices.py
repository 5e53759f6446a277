"""Notices: events a client can cause by the thousand, logged at most once per interval.

A refused connection, a request that timed out, an accept that failed for lack of file
descriptors: an attacker decides how often these happen, so a line for each would let them
fill the disk (and spend the CPU on formatting tracebacks). Each kind gets one line when it
first happens, then at most one more per interval, saying how many there were meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

Schedule = Callable[[float, Callable[[], None]], object]
"""``schedule(delay, callback)`` calls ``callback`` ``delay`` seconds later."""


@dataclass
class _Window:
    count: int = 0
    text: str = ""


class Notices:
    """Log a warning per kind of event at most once per ``interval`` seconds.

    The first event of a kind is logged at once and opens a window of ``interval`` seconds;
    those that follow within it are counted and logged as one line when it closes (which opens
    the next window), so a steady stream of events costs one line per interval.
    """

    def __init__(self, log: logging.Logger, interval: float, schedule: Schedule) -> None:
        self._log = log
        self._interval = interval
        self._schedule = schedule
        self._windows: dict[str, _Window] = {}

    def note(self, kind: str, text: str) -> None:
        """One more event of ``kind``; ``text`` says what happened, ``{count}`` how often."""
        window = self._windows.get(kind)
        if window is None:
            self._log.warning(_filled(text, 1))
            self._open(kind)
            return
        window.count += 1
        window.text = text

    def _open(self, kind: str) -> None:
        self._windows[kind] = _Window()
        self._schedule(self._interval, lambda: self._close(kind))

    def _close(self, kind: str) -> None:
        window = self._windows.pop(kind)
        if window.count:
            line = _filled(window.text, window.count)
            self._log.warning("%s (in the last %g s)", line, self._interval)
            self._open(kind)


def _filled(text: str, count: int) -> str:
    # Plain replacement, not str.format or %: the text may hold a client's address, and an
    # IPv6 one may hold a '%' (its zone).
    return text.replace("{count}", str(count))
