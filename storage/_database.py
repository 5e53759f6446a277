"""One database handle for SQLite (embedded) and PostgreSQL (psycopg 3, pooled)."""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypedDict

import sqlalchemy as sa
from sqlalchemy import event

from storage._json import dumps, loads, loads_postgresql
from storage._outage import short_of_descriptors
from treadle.errors import InvalidInput

# The execution option that marks a connection of Database.begin (SQLite: BEGIN IMMEDIATE).
_WRITE = "treadle_writes"


def normalize_url(url: str) -> sa.URL:
    """Accept ``sqlite:///path`` and ``postgresql://...`` and pick our drivers for them."""
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
        # Not echoed: a URL that does not parse may still hold a password.
        raise InvalidInput(
            "the database URL does not parse: use sqlite:///path or postgresql://user@host/db"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+pysqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    raise InvalidInput(f"unsupported database URL {url!r}: use sqlite:///path or postgresql://...")


class _PoolOptions(TypedDict):
    pool_size: int
    max_overflow: int
    pool_timeout: float


class Database:
    """Connections, transactions and a count of committed write transactions.

    SQLite runs in WAL mode with a busy timeout, foreign keys on and ``synchronous=FULL``.
    Writes (:meth:`begin`) start with ``BEGIN IMMEDIATE``, so two writers never deadlock
    upgrading a read lock; reads (:meth:`connect`) start a deferred transaction, which under
    WAL reads a snapshot without taking any lock a writer waits for: no number of readers
    slows a commit down or makes another reader wait. A block of :meth:`connect` must
    therefore never write (it could not take the write lock it would need).
    PostgreSQL uses a connection pool without pre-ping: the hot path spends one round trip per
    statement, not two. Its reads run in autocommit mode: under READ COMMITTED every statement
    reads a snapshot of its own anyway, so a read transaction would add nothing but a
    ``BEGIN`` and a ``ROLLBACK``, each a round trip. A connection the server dropped fails the
    one statement that finds out (:func:`storage.unreachable` says so); SQLAlchemy then
    replaces every pooled connection older than that failure, so the pool recovers by itself
    once the server is back.

    The pool holds ``pool_size`` connections and opens up to ``max_overflow`` more (default:
    as many again) when they are all in use; a caller that finds none free waits up to
    ``pool_timeout`` seconds, then gets ``sqlalchemy.exc.TimeoutError``. With ``max_overflow=0``
    a handle never has more than ``pool_size`` connections open: its share of the server's
    ``max_connections``.

    A new connection that cannot be opened because the process holds as many descriptors as it
    may waits for one to close, up to ``pool_timeout`` like a wait for a pooled connection,
    then fails (:func:`storage.transient` says so). That holds once the database has been
    opened once: at the first connection the same error is a bad path, and fails at once.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        max_overflow: int | None = None,
        pool_timeout: float = 30.0,
    ) -> None:
        self.url = normalize_url(url)
        self.dialect = self.url.get_backend_name()
        self._commits = itertools.count()
        self._committed = 0
        self._count_lock = threading.Lock()
        self._pool_timeout = pool_timeout
        self._opened = False
        pool: _PoolOptions = {
            "pool_size": pool_size,
            "max_overflow": pool_size if max_overflow is None else max_overflow,
            "pool_timeout": pool_timeout,
        }
        if self.dialect == "sqlite":
            self._prepare_sqlite_file()
            self.engine = sa.create_engine(
                self.url,
                **pool,
                connect_args={"check_same_thread": False, "timeout": 30},
                json_serializer=dumps,
                json_deserializer=loads,
            )
            event.listen(self.engine, "begin", _sqlite_on_begin)
        else:
            # A server that does not answer at all (not even to refuse) must not hold a caller
            # for minutes: connecting gives up about when waiting for a pooled connection would.
            connect: dict[str, int] = {}
            if "connect_timeout" not in self.url.query:
                connect["connect_timeout"] = max(2, math.ceil(pool_timeout))
            self.engine = sa.create_engine(
                self.url,
                **pool,
                pool_pre_ping=False,
                connect_args=connect,
                json_serializer=dumps,
                json_deserializer=loads_postgresql,
            )
        event.listen(self.engine, "do_connect", self._open)

    def _prepare_sqlite_file(self) -> None:
        path = self.url.database
        if not path or path == ":memory:":
            raise InvalidInput("an in-memory SQLite database cannot be shared: give a file path")
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        if not os.path.exists(path):
            # Owner-only: sandbox workers run as another user and must not read the database.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))

    def _open(self, dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        # SQLAlchemy's do_connect hook: the DB-API connection it returns is the one pooled.
        deadline = time.monotonic() + self._pool_timeout
        pause = 0.01
        while True:
            try:
                dbapi_conn = dialect.connect(*cargs, **cparams)
                if self.dialect == "sqlite":
                    try:
                        _prepare_sqlite_connection(dbapi_conn)
                    except BaseException:
                        dbapi_conn.close()
                        raise
            except Exception as exc:
                left = deadline - time.monotonic()
                if not (self._opened and short_of_descriptors(exc)) or left <= 0:
                    raise
                time.sleep(min(pause, left))
                pause = min(2 * pause, 0.2)
                continue
            self._opened = True
            return dbapi_conn

    @property
    def commits(self) -> int:
        """How many write transactions have committed through this handle."""
        with self._count_lock:
            return self._committed

    def count_commit(self) -> None:
        with self._count_lock:
            self._committed += 1

    @contextmanager
    def connect(self, *, server_cursor: bool = False) -> Iterator[sa.Connection]:
        """A connection for reads (a snapshot); its implicit transaction is rolled back at the
        end. On PostgreSQL each statement reads a snapshot of its own, with no transaction
        around them, unless ``server_cursor`` (a read with ``yield_per``, whose cursor
        PostgreSQL keeps only inside a transaction). Nothing in the block may write or lock:
        use :meth:`begin` for that."""
        with self.engine.connect() as conn:
            if self.dialect == "postgresql" and not server_cursor:
                conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    @contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        """A write transaction, committed when the block ends without an exception."""
        with self.engine.connect() as conn:
            conn.execution_options(**{_WRITE: True})
            with conn.begin():
                yield conn
            self.count_commit()

    @contextmanager
    def schema_change(self) -> Iterator[sa.Connection]:
        """A write transaction for migrations. On SQLite, foreign keys are not enforced in it
        and are checked before it commits: SQLite changes a column's type only by rebuilding
        its table, and dropping the old table would otherwise delete the rows that refer to
        it (``ON DELETE CASCADE``)."""
        if self.dialect != "sqlite":
            with self.begin() as conn:
                yield conn
            return
        with self.engine.connect() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            # Only outside a transaction: within one, the pragma does nothing.
            driver.execute("PRAGMA foreign_keys=OFF")
            try:
                conn.execution_options(**{_WRITE: True})
                with conn.begin():
                    yield conn
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").first()
                    if broken is not None:
                        raise RuntimeError(f"a migration broke a foreign key: {tuple(broken)}")
                self.count_commit()
            finally:
                driver.execute("PRAGMA foreign_keys=ON")

    def dispose(self) -> None:
        self.engine.dispose()


def _prepare_sqlite_connection(dbapi_conn: Any) -> None:
    # Let SQLAlchemy, not pysqlite, decide when transactions start (see _sqlite_on_begin).
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    for pragma in (
        "journal_mode=WAL",
        "synchronous=FULL",
        "busy_timeout=30000",
        "foreign_keys=ON",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_on_begin(conn: sa.Connection) -> None:
    # A deferred BEGIN takes no lock until the first read, and then only a WAL snapshot.
    writes = conn.get_execution_options().get(_WRITE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")
