"""Which database failures are waited out and which are errors."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from storage import short_of_descriptors, transient, unreachable


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
