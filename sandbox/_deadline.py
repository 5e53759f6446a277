"""The platform's deadline for one host call, and the way it cuts the call short.

A library's timeouts are per operation (httpx's is per read: a server that sends a byte every
few seconds keeps a request alive for ever). So the platform does not rely on them: a call
registers what it holds (its connection) with its :class:`Deadline`, and when the deadline
passes, or the replay that made the call ends (step timeout, terminate, shutdown), the
registered closers run from another thread and the call fails promptly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Deadline:
    """When a host call must be over (``at``, monotonic seconds); expired at most once."""

    def __init__(self, at: float) -> None:
        self.at = at
        self.seconds = at - time.monotonic()  # as given, for messages
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._closers: list[Callable[[], None]] = []

    def remaining(self) -> float:
        """Seconds left, never below zero (and zero once expired)."""
        return 0.0 if self._reason else max(0.0, self.at - time.monotonic())

    @property
    def expired(self) -> str | None:
        """Why the call was cut short (``"timeout"`` or ``"stopped"``), or None."""
        return self._reason

    def on_expiry(self, close: Callable[[], None]) -> None:
        """Run ``close`` when the deadline expires; at once if it already has."""
        with self._lock:
            if self._reason is None:
                self._closers.append(close)
                return
        _quietly(close)

    def expire(self, reason: str) -> None:
        """Cut the call short: run its closers (from the caller's thread)."""
        with self._lock:
            if self._reason is not None:
                return
            self._reason = reason
            closers, self._closers = self._closers, []
        for close in closers:
            _quietly(close)


def _quietly(close: Callable[[], None]) -> None:
    try:
        close()
    except OSError:
        pass  # already closed: the call is over either way


class Watchdog:
    """Expires the deadlines it watches when their time comes, on one thread of its own,
    started with the first deadline and stopped by :meth:`close` (which expires the rest)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._watched: set[Deadline] = set()
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, deadline: Deadline) -> None:
        with self._cond:
            if self._closed:
                deadline.expire("stopped")
                return
            self._watched.add(deadline)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="treadle-call-deadlines", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def forget(self, deadline: Deadline) -> None:
        with self._cond:
            self._watched.discard(deadline)

    def close(self) -> None:
        """Expire every deadline still watched (the replay is over) and stop the thread."""
        with self._cond:
            self._closed = True
            left, self._watched = self._watched, set()
            thread, self._thread = self._thread, None
            self._cond.notify()
        for deadline in left:
            deadline.expire("stopped")
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                due = {d for d in self._watched if d.at <= now}
                self._watched -= due
                for deadline in due:
                    deadline.expire("timeout")  # its closers only shut sockets down
                wait = min((d.at for d in self._watched), default=now + 60.0) - now
                self._cond.wait(max(wait, 0.001))
