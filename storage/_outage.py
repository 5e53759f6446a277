"""Telling a database that is down from a statement that failed.

A server that does not answer, refuses connections or dropped one is no fault of the work that
found out: the same work may succeed once the server is back. Callers wait (start-up) or answer
"try again" (the API) for these, and treat every other error as the error it is.
"""

from __future__ import annotations

import errno
import os
import sqlite3

import psycopg
import sqlalchemy as sa

# SQLSTATEs of a server that went away or does not take connections now: admin_shutdown,
# crash_shutdown, cannot_connect_now (starting up or shutting down), too_many_connections.
_UNREACHABLE_STATES = frozenset({"57P01", "57P02", "57P03", "53300"})
_NO_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})
_SQLITE_CANTOPEN = 14
# How libpq reports a socket it could not create for want of a descriptor (it has no errno).
_NO_DESCRIPTOR_TEXTS = tuple(os.strerror(code) for code in sorted(_NO_DESCRIPTORS))
# What libpq puts before the reason of a failed connection attempt.
_ATTEMPT = " failed: "


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the PostgreSQL server could not be reached or dropped the connection.

    True for any failure to connect (libpq gives those no SQLSTATE: refused, timed out, unknown
    host, the server starting up, too many connections, bad credentials), a connection lost
    mid-statement, and a server shutting down. False for everything else.
    """
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    if not isinstance(orig, psycopg.OperationalError):
        return False
    state = orig.sqlstate
    return state is None or state.startswith("08") or state in _UNREACHABLE_STATES


def short_of_descriptors(exc: BaseException) -> bool:
    """Whether ``exc`` says this process could not open a file or socket because it holds as
    many descriptors as it may (EMFILE, ENFILE), which come back as connections close.

    SQLite reports that only as "unable to open database file" (SQLITE_CANTOPEN), which a bad
    path gives too; a bad path fails at start-up, which does not ask this, so past start-up the
    file that opened before is taken to be short of a descriptor. libpq reports it in the text
    of a failed connection attempt ("could not create socket: Too many open files").
    """
    seen: set[int] = set()
    at: BaseException | None = exc
    while at is not None and id(at) not in seen:
        seen.add(id(at))
        if isinstance(at, OSError) and at.errno in _NO_DESCRIPTORS:
            return True
        if isinstance(at, sqlite3.OperationalError) and at.sqlite_errorcode == _SQLITE_CANTOPEN:
            return True
        if isinstance(at, psycopg.OperationalError) and any(
            text in str(at) for text in _NO_DESCRIPTOR_TEXTS
        ):
            return True
        if isinstance(at, sa.exc.DBAPIError) and isinstance(at.orig, BaseException):
            at = at.orig
        else:
            at = at.__cause__ or at.__context__
    return False


def transient(exc: BaseException) -> bool:
    """Whether the work that failed with ``exc`` may succeed as it is, later: the database is
    unreachable or the process is short of descriptors."""
    return unreachable(exc) or short_of_descriptors(exc)


def reason(exc: BaseException) -> str:
    """What the driver said about ``exc``, in one short line: e.g. ``connection refused``."""
    if isinstance(exc, sa.exc.DBAPIError):
        said = str(exc.orig)
    elif isinstance(exc, sa.exc.SQLAlchemyError) and exc.args:
        said = str(exc.args[0])  # without the link to SQLAlchemy's docs that str() adds
    else:
        said = str(exc)
    line = (said.strip().splitlines() or [type(exc).__name__])[0]
    _, attempt, why = line.rpartition(_ATTEMPT)
    if not attempt:
        return line
    why = why.strip().removeprefix("FATAL:").strip()  # "Connection refused", "FATAL:  ..."
    return why[:1].lower() + why[1:]
