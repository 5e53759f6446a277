"""Integration tests run every case on SQLite and on PostgreSQL.

PostgreSQL is a real server: ``TREADLE_TEST_POSTGRES_URL`` (default: the local server at
127.0.0.1:5432, user postgres). Each test gets a database of its own, dropped afterwards: a
copy of one migrated once per run (``database_url``), or an empty one (``empty_database_url``,
for the tests of the migrations). When no server answers, the PostgreSQL cases fail loudly;
they are never skipped.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest

if TYPE_CHECKING:
    from httpx import Client

    from bench._processes import TreadleProcess
    from dispatcher import Platform
    from storage import ManualClock

PG_ADMIN_URL = os.environ.get(
    "TREADLE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _pg_create(name: str, template: str | None = None) -> str:
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required for integration tests ({PG_ADMIN_URL}): {exc}")
    with admin:
        copy = f' TEMPLATE "{template}"' if template else ""
        admin.execute(f'CREATE DATABASE "{name}"{copy}')
    return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"


def _pg_drop(name: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg_database(template: str | None = None) -> Iterator[str]:
    name = f"treadle_test_{uuid.uuid4().hex[:12]}"
    url = _pg_create(name, template)
    try:
        yield url
    finally:
        _pg_drop(name)


def _migrate(url: str) -> None:
    from storage import Database, migrate

    db = Database(url)
    try:
        migrate(db)
    finally:
        db.dispose()


class _Templates:
    """A database of each backend with every migration applied, made on first use and once
    per run; each test gets a copy (on PostgreSQL, ``CREATE DATABASE ... TEMPLATE``): what a
    platform would make of an empty one, without running the migrations again."""

    def __init__(self, directory: Path) -> None:
        self._sqlite = directory / "treadle.db"
        self._sqlite_made = False
        self._postgresql: str | None = None

    def sqlite(self) -> Path:
        if not self._sqlite_made:
            _migrate(f"sqlite:///{self._sqlite}")
            assert not self._sqlite.with_name("treadle.db-wal").exists()  # all in the one file
            self._sqlite_made = True
        return self._sqlite

    def postgresql(self) -> str:
        if self._postgresql is None:
            name = f"treadle_template_{uuid.uuid4().hex[:12]}"
            url = _pg_create(name)
            try:
                _migrate(url)
            except BaseException:
                _pg_drop(name)
                raise
            self._postgresql = name
        return self._postgresql

    def drop(self) -> None:
        if self._postgresql is not None:
            _pg_drop(self._postgresql)


@pytest.fixture(scope="session")
def migrated_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Templates]:
    templates = _Templates(tmp_path_factory.mktemp("template"))
    yield templates
    templates.drop()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each backend: no table, no migration applied."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'treadle.db'}"
    else:
        yield from _pg_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, migrated_templates: _Templates
) -> Iterator[str]:
    """A fresh database of each backend, its schema at the latest migration and no rows."""
    if request.param == "sqlite":
        path = tmp_path / "treadle.db"
        shutil.copyfile(migrated_templates.sqlite(), path)
        yield f"sqlite:///{path}"
    else:
        yield from _pg_database(migrated_templates.postgresql())


@pytest.fixture
def postgresql_url(migrated_templates: _Templates) -> Iterator[str]:
    """Like ``database_url``, PostgreSQL only: for what only PostgreSQL can do (several
    processes on one database)."""
    yield from _pg_database(migrated_templates.postgresql())


# -- the platform behind its HTTP API (tests of tenants, loader and dispatcher) ---------------


def _platform(database_url: str, clock: ManualClock | None = None) -> Iterator[Platform]:
    # Imported here so that a broken dispatcher does not stop the storage and engine tests.
    from dispatcher import Platform
    from tests.integration.app import settings

    built = Platform(settings(database_url), clock=clock)
    yield built
    built.close()


def _client(platform: Platform) -> Iterator[Client]:
    from dispatcher import create_app
    from tests.integration.app import served

    with served(create_app(platform)) as test_client:
        yield test_client


@pytest.fixture
def platform(database_url: str) -> Iterator[Platform]:
    """Every part of a treadle process on a fresh database, engine not yet started."""
    yield from _platform(database_url)


@pytest.fixture
def client(platform: Platform) -> Iterator[Client]:
    """The HTTP API, its lifespan (and so the engine) running."""
    yield from _client(platform)


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only when the test says so, starting at about now (whole seconds)."""
    from storage import ManualClock

    return ManualClock(start=float(int(time.time())))


@pytest.fixture
def timed_platform(database_url: str, clock: ManualClock) -> Iterator[Platform]:
    """Like ``platform``, on ``clock``: for expiry and overlaps without waiting for them."""
    yield from _platform(database_url, clock)


@pytest.fixture
def timed_client(timed_platform: Platform) -> Iterator[Client]:
    """The HTTP API of ``timed_platform``."""
    yield from _client(timed_platform)


@pytest.fixture
def crashable_server(database_url: str, tmp_path: Path) -> Iterator[TreadleProcess]:
    """``treadle serve`` in a process of its own, for tests that kill it: a 3 s lease, so
    that a killed process's instances are taken over soon."""
    from bench._processes import TreadleProcess

    srv = TreadleProcess(database_url, tmp_path, env={"TREADLE_LEASE_SECONDS": "3"})
    srv.start()
    yield srv
    srv.stop()
