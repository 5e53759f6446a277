"""Group commit: many writers, one transaction per batch.

Writers submit small functions that issue statements on a connection. A single thread runs
every function queued at that moment inside one transaction and commits once, so concurrent
step commits of many instances cost one fsync (SQLite) or one commit round trip (PostgreSQL).
If anything in a batch fails, the batch is rolled back and each function is run again in a
transaction of its own, so one bad write never takes the others with it.

Writes of one kind can go further and share statements: a :class:`BatchWrite` names a
``combine`` function that performs many such writes with a few ``executemany`` statements, so a
batch of step commits from many instances costs a handful of round trips, not a few per step.

On PostgreSQL, where transactions run side by side and wait for each other's row locks, a batch
must not lock rows in an order another batch could reverse: there, plain writes (which may
lock rows in any order) commit alone, and the kinds of a batch run in the order of their
``lock_order``, each kind locking its rows in a fixed order of its own.

On PostgreSQL a round trip costs far more than a statement, so writes send the statements whose
results they do not need to read in one pipeline (:func:`pipelined`); the last write of a
transaction may send the ``COMMIT`` in its pipeline too, saving the round trip of its own.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import psycopg
import sqlalchemy as sa

from storage._database import Database

T = TypeVar("T")
Write = Callable[[sa.Connection], Any]

_log = logging.getLogger("treadle.storage")
_STOP = object()


class _Ending:
    """The transaction a write runs last in: a pipeline may send its COMMIT (once)."""

    def __init__(self) -> None:
        self.committed = False


_ENDING: contextvars.ContextVar[_Ending | None] = contextvars.ContextVar("ending", default=None)


@contextlib.contextmanager
def pipelined(conn: sa.Connection, *, last: bool = False) -> Iterator[None]:
    """A block whose statements are sent without waiting for their results, on PostgreSQL:
    at its end one round trip sends them all and raises the first error. Rows of a statement
    in it are read after the block (a read inside it costs a round trip of its own).

    ``last``: nothing follows the block in its write. Then, when that write is the last of
    the committer's transaction, the transaction's ``COMMIT`` goes in the same round trip
    (after an error in the block it is skipped, and the transaction is rolled back as ever).
    Elsewhere (SQLite, or outside the committer) the block runs as plain statements."""
    if conn.dialect.name != "postgresql":
        yield
        return
    driver = conn.connection.driver_connection
    assert driver is not None
    ending = _ENDING.get() if last else None
    try:
        with driver.pipeline():
            yield
            if ending is not None:
                driver.execute("COMMIT")
    except psycopg.Error as exc:
        raise _wrapped(conn, exc) from exc
    if ending is not None:
        # The driver now sees no transaction: the committer's own commit sends nothing.
        ending.committed = True


def _wrapped(conn: sa.Connection, exc: psycopg.Error) -> sa.exc.DBAPIError:
    """``exc`` as SQLAlchemy raises the driver's errors, so that callers tell an unreachable
    database (``storage.unreachable``) from a failed statement alike; a dropped connection is
    invalidated, as SQLAlchemy does for its own statements."""
    lost = conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, None)  # type: ignore[arg-type]
    if lost:
        conn.invalidate(exc)
    wrapped = sa.exc.DBAPIError.instance(
        None, None, exc, psycopg.Error, connection_invalidated=lost, dialect=conn.dialect
    )
    assert isinstance(wrapped, sa.exc.DBAPIError)
    return wrapped


class BatchWrite:
    """A write that can be combined with others of its kind.

    ``combine(conn, writes)`` performs all of them and returns one result per write, in order;
    a result that is an exception instance fails only that write's future.
    """

    combine: Callable[[sa.Connection, Sequence[Any]], list[Any]]
    # Kinds run in this order within a transaction: lower first.
    lock_order: int = 0

    def __call__(self, conn: sa.Connection) -> Any:
        (result,) = type(self).combine(conn, [self])
        if isinstance(result, BaseException):
            raise result
        return result


class GroupCommitter:
    """Runs submitted writes in batched transactions on background threads.

    SQLite has one writer at a time, so it gets one thread. PostgreSQL commits concurrent
    transactions in parallel, and a commit waits for its WAL flush: several threads keep
    batches flowing while one of them waits. Writes of one instance never race each other:
    each waits for its own commit before the next is submitted.
    """

    def __init__(self, db: Database, *, max_batch: int = 1000, threads: int | None = None) -> None:
        self._db = db
        self._alone = db.dialect == "postgresql"  # plain writes commit in their own transaction
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        count = threads if threads is not None else (1 if db.dialect == "sqlite" else 3)
        self._threads = [
            threading.Thread(target=self._loop, name=f"treadle-committer-{i}", daemon=True)
            for i in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, write: Callable[[sa.Connection], T]) -> Future[T]:
        """Queue ``write``; the future resolves to its result once committed."""
        future: Future[T] = Future()
        self._queue.put((write, future))
        return future

    def run(self, write: Callable[[sa.Connection], T], timeout: float | None = 60.0) -> T:
        """Submit ``write`` and wait until it is committed."""
        return self.submit(write).result(timeout)

    def run_alone(self, write: Callable[[sa.Connection], T], timeout: float | None = 60.0) -> T:
        """Run ``write`` in a transaction of its own and return its result once committed.

        On PostgreSQL, where transactions run side by side, it runs on the calling thread at
        once, not queued behind the batches of others (and its last pipeline may send the
        COMMIT); on SQLite, whose one writer is the committer's thread, it is queued like any
        write."""
        if not self._alone:
            return self.run(write, timeout)
        with self._db.begin() as conn:
            return _last(write, conn, _Ending())

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            thread.join(timeout=30)

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
            self._commit_all(batch)
            if stop:
                return

    def _commit_all(self, batch: list[tuple[Write, Future[Any]]]) -> None:
        if not self._alone:
            self._commit(batch)
            return
        combined = [item for item in batch if isinstance(item[0], BatchWrite)]
        for item in batch:
            if not isinstance(item[0], BatchWrite):
                self._commit([item])
        if combined:
            self._commit(combined)

    def _commit(self, batch: list[tuple[Write, Future[Any]]]) -> None:
        live = [(w, f) for w, f in batch if f.set_running_or_notify_cancel()]
        ending = _Ending()
        try:
            with self._db.begin() as conn:
                results = _perform(conn, [w for w, _ in live], ending)
        except Exception as exc:
            if ending.committed:
                # Committed, then failed in code after the COMMIT: running the writes again
                # would apply them twice.
                _log.error("a batch of %d writes failed after committing", len(live), exc_info=True)
                for _, future in live:
                    future.set_exception(exc)
                return
            _log.debug("a batch of %d writes failed; retrying one by one", len(live), exc_info=True)
            self._commit_one_by_one(live)
            return
        for (_, future), result in zip(live, results, strict=True):
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    def _commit_one_by_one(self, live: list[tuple[Write, Future[Any]]]) -> None:
        for write, future in live:
            try:
                with self._db.begin() as conn:
                    result = _last(write, conn, _Ending())
            except BaseException as exc:  # handed to the waiting writer, not swallowed
                future.set_exception(exc)
            else:
                future.set_result(result)


def _perform(conn: sa.Connection, writes: list[Write], ending: _Ending) -> list[Any]:
    """Run plain writes one by one and combinable ones together, keeping result order; the
    last of them may commit the transaction (``ending``)."""
    runs: list[tuple[Callable[[sa.Connection], list[Any]], list[int]]] = []
    groups: dict[Any, list[int]] = {}
    for index, write in enumerate(writes):
        if isinstance(write, BatchWrite):
            groups.setdefault(type(write).combine, []).append(index)
        else:
            runs.append((functools.partial(_plain, write), [index]))
    for combine, indexes in sorted(groups.items(), key=lambda g: _lock_order(writes[g[1][0]])):
        together = [writes[i] for i in indexes]
        runs.append((functools.partial(_combined, combine, together), indexes))
    results: list[Any] = [None] * len(writes)
    for n, (run, indexes) in enumerate(runs):
        outcome = _last(run, conn, ending) if n == len(runs) - 1 else run(conn)
        for index, result in zip(indexes, outcome, strict=True):
            results[index] = result
    return results


def _plain(write: Write, conn: sa.Connection) -> list[Any]:
    return [write(conn)]


def _combined(
    combine: Callable[[sa.Connection, Sequence[Any]], list[Any]],
    writes: list[Write],
    conn: sa.Connection,
) -> list[Any]:
    return combine(conn, writes)


def _last(write: Callable[[sa.Connection], T], conn: sa.Connection, ending: _Ending) -> T:
    """Run ``write`` as the last of its transaction: a ``pipelined(last=True)`` block of it
    sends the COMMIT."""
    token = _ENDING.set(ending)
    try:
        return write(conn)
    finally:
        _ENDING.reset(token)


def _lock_order(write: Write) -> int:
    return type(write).lock_order if isinstance(write, BatchWrite) else 0
