"""Time as the platform sees it, injectable so tests can advance it."""

from __future__ import annotations

import datetime as _dt
import threading
import time


class Clock:
    """Wall-clock time in epoch seconds."""

    def now(self) -> float:
        return time.time()


class ManualClock(Clock):
    """A clock that moves only when told to; for tests."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


def iso(ts: float | None) -> str | None:
    """Epoch seconds as an ISO 8601 UTC string with millisecond precision."""
    if ts is None:
        return None
    moment = _dt.datetime.fromtimestamp(ts, tz=_dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
