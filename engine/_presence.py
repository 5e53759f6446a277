"""Which engine processes are alive, and taking over a dead one's instances at once.

A running instance is leased to one process; a lease that is not renewed expires after
``lease_seconds`` (30 s by default), and only then may another process replay the instance.
That protects against a process that is merely slow, but makes a crashed process's instances
wait out their lease. On PostgreSQL each process therefore keeps one session of its own open
(the same one it listens on for wake-ups) holding a session-level advisory lock, and registers
the lock's key in ``processes``. When a process dies, the database ends its session and the
lock is gone; the others see that in ``pg_locks`` and make its running instances due at once.
The lease's fencing epoch still guards the rare process that lost its session but lives on:
its commits are refused as soon as another process has claimed its instances.

A process counts as dead only when its lock has been missing for ``grace`` seconds: after a
restart of PostgreSQL every process needs a moment to take its lock again.

On SQLite a single process owns the file and takes back every running instance when it
starts (``Claims.recover_all``): none of this is needed there.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

import psycopg

from engine._rows import WAKE_CHANNEL
from storage import Clock, Database

_log = logging.getLogger("treadle.engine")
LIVENESS_SPACE = 0x7470  # advisory lock space of process liveness; the second key is the process's
# How long the session blocks waiting for a wake-up before it looks at the stop flag and the
# other processes again: the most a stop waits for it.
_SLICE = 0.2
WATCH_SECONDS = 0.25
GRACE_SECONDS = 1.0
# Reconnecting at least twice a second keeps a live process from looking dead (for longer
# than ``grace``) after PostgreSQL restarts.
_MAX_BACKOFF = 0.5

_DEAD = """
SELECT p.owner FROM processes p
WHERE p.owner <> %(me)s AND NOT EXISTS (
    SELECT 1 FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid = %(space)s::oid AND l.objid = p.lock_key::oid AND l.objsubid = 2)
"""
# SKIP LOCKED: a row locked by a status change in flight is taken over at the next look.
_TAKE_OVER = """
UPDATE instances SET due_at = %(now)s
WHERE pk IN (
    SELECT pk FROM instances
    WHERE lease_owner = ANY(%(owners)s)
      AND status IN ('running', 'waitingForPause') AND due_at > %(now)s
    ORDER BY pk FOR NO KEY UPDATE SKIP LOCKED)
"""
_FORGET = """
DELETE FROM processes p
WHERE p.owner = ANY(%(owners)s) AND NOT EXISTS (
    SELECT 1 FROM instances i
    WHERE i.lease_owner = p.owner
      AND i.status IN ('running', 'waitingForPause') AND i.due_at > %(now)s)
"""
_REGISTER = """
INSERT INTO processes (owner, lock_key, started_at) VALUES (%(me)s, %(key)s, %(now)s)
ON CONFLICT (owner) DO UPDATE SET lock_key = EXCLUDED.lock_key
"""


class Presence:
    """This process's session: its liveness lock, its wake-up channel, and the watch over the
    other processes. :meth:`run` is the body of a thread; it returns once ``stop`` is set."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        owner: str,
        *,
        wake: Callable[[], None],
        stop: threading.Event,
        grace: float = GRACE_SECONDS,
    ) -> None:
        self._url = db.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._clock = clock
        self._owner = owner
        self._wake = wake
        self._stop = stop
        self._grace = grace
        self._key = random.randrange(1, 2**31)
        self._suspects: dict[str, float] = {}  # owner -> when its lock was first seen missing

    def run(self) -> None:
        backoff = 0.1
        lost = False
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=5) as conn:
                    self._register(conn)
                    if lost:
                        _log.info("database session restored")
                    lost, backoff = False, 0.1
                    self._serve(conn)
            except psycopg.Error as exc:
                if not lost:
                    _log.warning("lost the database session (%s); reconnecting", _first_line(exc))
                lost = True
                self._stop.wait(backoff)
                backoff = min(2 * backoff, _MAX_BACKOFF)

    def _register(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        while not _scalar(conn, "SELECT pg_try_advisory_lock(%s, %s)", LIVENESS_SPACE, self._key):
            self._key = random.randrange(1, 2**31)  # taken by another process: pick another
        params = {"me": self._owner, "key": self._key, "now": self._clock.now()}
        conn.execute(_REGISTER, params)
        conn.execute(f"LISTEN {WAKE_CHANNEL}")

    def _serve(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        next_watch = 0.0
        while not self._stop.is_set():
            for _ in conn.notifies(timeout=_SLICE, stop_after=1):
                self._wake()
            if time.monotonic() >= next_watch:
                self._watch(conn)
                next_watch = time.monotonic() + WATCH_SECONDS
                self._wake()  # for a notification that came while the watch ran

    def _watch(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        """Take over the instances of the processes whose lock has been gone for ``grace``."""
        dead = {str(owner) for (owner,) in conn.execute(_DEAD, self._dead_params())}
        seen = time.monotonic()
        self._suspects = {owner: self._suspects.get(owner, seen) for owner in dead}
        gone = [owner for owner, since in self._suspects.items() if seen - since >= self._grace]
        if not gone:
            return
        params = {"owners": gone, "now": self._clock.now()}
        with conn.transaction():
            taken = conn.execute(_TAKE_OVER, params).rowcount
            forgotten = conn.execute(_FORGET, params).rowcount
        if taken:
            _log.info("took over %d running instances of %d stopped processes", taken, len(gone))
            self._wake()
        if forgotten == len(gone):
            self._suspects = {o: t for o, t in self._suspects.items() if o not in gone}

    def _dead_params(self) -> dict[str, object]:
        return {"me": self._owner, "space": LIVENESS_SPACE}


def _scalar(conn: psycopg.Connection[tuple[object, ...]], query: str, *args: object) -> object:
    row = conn.execute(query, args).fetchone()
    return None if row is None else row[0]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
