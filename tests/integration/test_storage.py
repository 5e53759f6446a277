from __future__ import annotations

import threading

import sqlalchemy as sa

from storage import (
    Database,
    GroupCommitter,
    available_migrations,
    current_version,
    migrate,
    tables,
)


def _columns(conn: sa.Connection) -> dict[str, dict[str, bool]]:
    inspector = sa.inspect(conn)
    return {
        name: {c["name"]: bool(c["nullable"]) for c in inspector.get_columns(name)}
        for name in inspector.get_table_names()
        if name != "schema_migrations"
    }


def _indexes(conn: sa.Connection) -> dict[str, set[str]]:
    inspector = sa.inspect(conn)
    return {
        name: {
            str(i["name"])
            for i in inspector.get_indexes(name)
            if not i.get("duplicates_constraint") and not str(i["name"]).startswith("sqlite_")
        }
        for name in inspector.get_table_names()
        if name != "schema_migrations"
    }


def test_migrations_build_the_declared_schema_and_are_idempotent(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    shipped = available_migrations()
    assert migrate(db) == [name for _, name in shipped]
    assert migrate(db) == []
    assert current_version(db) == shipped[-1][0]
    declared = {
        t.name: {c.name: bool(c.nullable) for c in t.columns} for t in tables.metadata.sorted_tables
    }
    declared_indexes = {
        t.name: {str(i.name) for i in t.indexes} for t in tables.metadata.sorted_tables
    }
    with db.connect() as conn:
        assert _columns(conn) == declared
        assert _indexes(conn) == declared_indexes
    db.dispose()


def test_group_commit_batches_writers_and_isolates_failures(database_url: str) -> None:
    db = Database(database_url)
    migrate(db)
    committer = GroupCommitter(db)
    insert = tables.admin_tokens.insert()

    def add(i: int) -> None:
        committer.run(
            lambda c: c.execute(insert.values(id=f"t{i}", secret_hash="x", created_at=0.0))
        )

    before = db.commits
    threads = [threading.Thread(target=add, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert db.commits - before <= 50
    duplicate = committer.submit(
        lambda c: c.execute(insert.values(id="t1", secret_hash="x", created_at=0.0))
    )
    fine = committer.submit(
        lambda c: c.execute(insert.values(id="t99", secret_hash="x", created_at=0.0))
    )
    assert fine.result(10) is not None
    assert isinstance(duplicate.exception(10), sa.exc.IntegrityError)
    with db.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(tables.admin_tokens)).scalar()
    assert count == 51
    committer.close()
    db.dispose()
