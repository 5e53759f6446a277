"""A thread of an engine process that works in passes beside the claimer: the schedule firer
(``engine._firer``) and the bulk worker (``engine._bulk``).

Each pass returns how long to sleep before the next (0: go on at once); :meth:`wake` cuts a
sleep short. A pass that raises is logged once, not once a second, until a pass succeeds
again (the database away or no descriptor left: one line, without a traceback), and the next
comes after :data:`RETRY_SECONDS`.
"""

from __future__ import annotations

import logging
import threading

from storage import reason, transient

RETRY_SECONDS = 1.0


class Background:
    name = "treadle-background"
    what = "background work"  # "<what> failed; retrying", "<what> works again"

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        """Something to do was added in this process: look now."""
        self._wake.set()

    def run_pass(self) -> float:
        """One pass; the seconds to sleep before the next."""
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                delay = self.run_pass()
                if self._failing:
                    self._failing = False
                    self._log.info("%s works again", self.what)
            except Exception as exc:
                if self._failing:
                    pass
                elif transient(exc):  # the database away, or no descriptor left: one line
                    self._log.warning("%s failed (%s); retrying", self.what, reason(exc))
                else:
                    self._log.exception("%s failed; retrying", self.what)
                self._failing = True
                delay = RETRY_SECONDS
            if delay > 0:
                self._wake.wait(delay)
                self._wake.clear()
