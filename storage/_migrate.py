"""Apply the migrations in ``storage.migrations`` that a database has not seen yet."""

from __future__ import annotations

import importlib
import pkgutil
import time
from collections.abc import Callable

import sqlalchemy as sa

from storage import migrations
from storage._database import Database

_VERSIONS = sa.Table(
    "schema_migrations",
    sa.MetaData(),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("applied_at", sa.Float, nullable=False),
)
# Any constant works; it only has to be the same for every treadle process.
_PG_LOCK_KEY = 0x7472_6561_646C


def available() -> list[tuple[int, str]]:
    """(version, module name) of every migration shipped, in order."""
    found = []
    for info in pkgutil.iter_modules(migrations.__path__):
        if info.name.startswith("m") and info.name[1:5].isdigit():
            found.append((int(info.name[1:5]), info.name))
    return sorted(found)


def migrate(db: Database, progress: Callable[[str], None] | None = None) -> list[str]:
    """Apply pending migrations in one transaction each; return the names applied.

    Safe to run from several processes at once: PostgreSQL serialises them with an advisory
    lock, SQLite with its write lock.
    """
    applied: list[str] = []
    if not _pending(db):
        return applied
    with db.schema_change() as conn:
        if db.dialect == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        _VERSIONS.create(conn, checkfirst=True)
        done = {row[0] for row in conn.execute(sa.select(_VERSIONS.c.version))}
        for version, name in available():
            if version in done:
                continue
            if progress:
                progress(f"applying migration {name}")
            module = importlib.import_module(f"storage.migrations.{name}")
            module.upgrade(conn)
            conn.execute(
                _VERSIONS.insert().values(version=version, name=name, applied_at=time.time())
            )
            applied.append(name)
    return applied


def _pending(db: Database) -> bool:
    """Whether a migration may be missing: a read, so that a start with nothing to migrate
    takes no lock (the lock is taken, and what is applied decided, in ``migrate``)."""
    with db.connect() as conn:
        if not sa.inspect(conn).has_table("schema_migrations"):
            return True
        done = {row[0] for row in conn.execute(sa.select(_VERSIONS.c.version))}
    return any(version not in done for version, _ in available())


def current_version(db: Database) -> int:
    """The newest migration applied to ``db`` (0 for an empty database)."""
    with db.connect() as conn:
        if not sa.inspect(conn).has_table("schema_migrations"):
            return 0
        return int(conn.execute(sa.select(sa.func.max(_VERSIONS.c.version))).scalar() or 0)
