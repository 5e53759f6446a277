"""Group commit: many writers, one transaction per batch.

Writers submit small functions that issue statements on a connection. A single thread runs
every function queued at that moment inside one transaction and commits once, so concurrent
step commits of many instances cost one fsync (SQLite) or one commit round trip (PostgreSQL).
If anything in a batch fails, the batch is rolled back and each function is run again in a
transaction of its own, so one bad write never takes the others with it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import sqlalchemy as sa

from storage._database import Database

T = TypeVar("T")
Write = Callable[[sa.Connection], Any]

_log = logging.getLogger("treadle.storage")
_STOP = object()


class GroupCommitter:
    """Runs submitted writes in batched transactions on a background thread."""

    def __init__(self, db: Database, *, max_batch: int = 1000) -> None:
        self._db = db
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="treadle-committer", daemon=True)
        self._thread.start()

    def submit(self, write: Callable[[sa.Connection], T]) -> Future[T]:
        """Queue ``write``; the future resolves to its result once committed."""
        future: Future[T] = Future()
        self._queue.put((write, future))
        return future

    def run(self, write: Callable[[sa.Connection], T], timeout: float | None = 60.0) -> T:
        """Submit ``write`` and wait until it is committed."""
        return self.submit(write).result(timeout)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stop = True
                    break
                batch.append(more)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[tuple[Write, Future[Any]]]) -> None:
        live = [(w, f) for w, f in batch if f.set_running_or_notify_cancel()]
        try:
            with self._db.begin() as conn:
                results = [write(conn) for write, _ in live]
        except Exception:
            if len(live) == 1:
                _log.debug("write failed", exc_info=True)
            self._commit_one_by_one(live, first_failed=len(live) == 1)
            return
        for (_, future), result in zip(live, results, strict=True):
            future.set_result(result)

    def _commit_one_by_one(self, live: list[tuple[Write, Future[Any]]], first_failed: bool) -> None:
        for write, future in live:
            try:
                with self._db.begin() as conn:
                    result = write(conn)
            except BaseException as exc:  # handed to the waiting writer, not swallowed
                future.set_exception(exc)
            else:
                future.set_result(result)
