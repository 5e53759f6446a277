"""Which database failures are waited out and which are errors."""

from __future__ import annotations

import errno
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from storage import Database, short_of_descriptors, transient, unreachable


def _sqlite_error(path: str) -> sa.exc.DBAPIError:
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with pytest.raises(sa.exc.DBAPIError) as raised:
            with engine.connect():
                pass
    finally:
        engine.dispose()
    return raised.value


def test_sqlite_that_cannot_open_its_file_is_waited_out_but_not_called_unreachable(
    tmp_path: Path,
) -> None:
    exc = _sqlite_error(str(tmp_path / "missing" / "treadle.db"))
    assert isinstance(exc.orig, sqlite3.OperationalError)
    assert short_of_descriptors(exc)
    assert transient(exc)
    assert not unreachable(exc)


def test_an_os_error_for_descriptors_is_found_anywhere_in_the_chain() -> None:
    for code in (errno.EMFILE, errno.ENFILE):
        try:
            try:
                raise OSError(code, "Too many open files")
            except OSError as inner:
                raise RuntimeError("spawning a worker failed") from inner
        except RuntimeError as outer:
            assert short_of_descriptors(outer)
            assert transient(outer)


def test_other_failures_are_errors(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'treadle.db'}")
    try:
        with engine.connect() as connection:
            with pytest.raises(sa.exc.DBAPIError) as raised:
                connection.execute(sa.text("SELECT * FROM no_such_table"))
    finally:
        engine.dispose()
    assert not transient(raised.value)
    assert not transient(OSError(errno.ENOENT, "No such file or directory"))
    assert not transient(ValueError("bad value"))


def test_a_libpq_socket_short_of_descriptors_is_found() -> None:
    exc = psycopg.OperationalError(
        'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
        "could not create socket: Too many open files"
    )
    assert short_of_descriptors(exc)
    assert not short_of_descriptors(psycopg.OperationalError("connection refused"))


# Run in a child: it lowers its own limit on open files, which pytest's process must keep.
_WAITS_FOR_A_DESCRIPTOR = """
import os, resource, sys, threading, time
import sqlalchemy as sa
from storage import Database, transient

db = Database(sys.argv[1], pool_size=1, max_overflow=1, pool_timeout=float(sys.argv[2]))
held = db.engine.connect()  # the database has been opened once; the overflow slot is free
held.execute(sa.text("SELECT 1"))
spare = [os.open(os.devnull, os.O_RDONLY) for _ in range(8)]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")), hard))
if sys.argv[3] == "freed":
    threading.Timer(0.5, lambda: [os.close(fd) for fd in spare]).start()
start = time.monotonic()
try:
    with db.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    print("opened", round(time.monotonic() - start, 2))
except Exception as exc:
    print("failed", round(time.monotonic() - start, 2), transient(exc))
"""


@pytest.mark.parametrize("descriptors", ["freed", "kept"])
def test_a_new_sqlite_connection_waits_for_a_descriptor_up_to_the_pool_timeout(
    tmp_path: Path, descriptors: str
) -> None:
    url = f"sqlite:///{tmp_path / 'treadle.db'}"
    child = subprocess.run(
        [sys.executable, "-c", _WAITS_FOR_A_DESCRIPTOR, url, "1.5", descriptors],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )
    assert child.returncode == 0, child.stderr
    outcome, seconds, *transient_ = child.stdout.split()
    if descriptors == "freed":
        assert outcome == "opened", child.stdout
        assert 0.4 <= float(seconds) < 1.5, child.stdout
    else:
        # Nothing closed: it gives up at the pool timeout with an error the API answers 503.
        assert (outcome, transient_) == ("failed", ["True"]), child.stdout
        assert 1.4 <= float(seconds) < 3, child.stdout


def test_a_bad_sqlite_path_fails_at_once(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    db = Database(f"sqlite:///{tmp_path / 'dir' / 'treadle.db'}", pool_timeout=20)
    (tmp_path / "dir" / "treadle.db").unlink()
    (tmp_path / "dir").rmdir()
    start = time.monotonic()
    with pytest.raises(sa.exc.OperationalError):
        with db.connect():
            pass
    assert time.monotonic() - start < 2
    db.dispose()
