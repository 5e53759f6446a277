from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from storage import (
    BatchWrite,
    Database,
    GroupCommitter,
    available_migrations,
    current_version,
    migrate,
    pipelined,
    tables,
)
from storage._migrate import _VERSIONS


def _columns(conn: sa.Connection) -> dict[str, dict[str, bool]]:
    inspector = sa.inspect(conn)
    return {
        name: {c["name"]: bool(c["nullable"]) for c in inspector.get_columns(name)}
        for name in inspector.get_table_names()
        if name != "schema_migrations"
    }


def _indexes(conn: sa.Connection) -> dict[str, set[tuple[str, tuple[str | None, ...]]]]:
    """Each table's indexes, by name and columns in order."""
    inspector = sa.inspect(conn)
    return {
        name: {
            (str(i["name"]), tuple(i["column_names"]))
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
    dialect = db.engine.dialect.name
    declared_indexes = {
        t.name: {
            (str(i.name), tuple(c.name for c in i.columns))
            for i in t.indexes
            if i._ddl_if is None or i._ddl_if.dialect in (None, dialect)  # e.g. GIN: PostgreSQL
        }
        for t in tables.metadata.sorted_tables
    }
    with db.connect() as conn:
        assert _columns(conn) == declared
        assert _indexes(conn) == declared_indexes
    db.dispose()


def test_a_lookup_by_key_probes_the_key_whatever_the_statistics(postgresql_url: str) -> None:
    """One instance looked up by its id (every event, status change and read) is one probe of
    the key, even when PostgreSQL's statistics predate a burst of creates: they then say the
    workflow has no instances, and a listing index led by (tenant, workflow) used to look
    cheaper, a plan that reads every instance of the workflow."""
    from engine._rows import I, instance_key, lock_row

    db = Database(postgresql_url)
    try:
        with db.begin() as conn:
            tenant = conn.execute(
                sa.text(
                    "INSERT INTO tenants (name, policy, created_at)"
                    " VALUES ('planned', '{}', 0) RETURNING id"
                )
            ).scalar_one()
            conn.execute(sa.text("ANALYZE instances"))
            conn.execute(
                sa.text(
                    "INSERT INTO instances (tenant_id, workflow, id, version, status, created_at,"
                    " due_at, epoch) SELECT :t, 'burst', 'i' || g, 'v1', 'waiting', 0, 1, 0"
                    " FROM generate_series(1, 20000) g"
                ),
                {"t": tenant},
            )
        lookup = lock_row(
            sa.select(I.c.pk, I.c.status).where(*instance_key(tenant, "burst", "i5")), True
        )
        sql = str(lookup.compile(dialect=db.engine.dialect, compile_kwargs={"literal_binds": True}))
        with db.connect() as conn:
            plan = conn.execute(sa.text(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")).scalar_one()
        nodes, scans = [plan[0]["Plan"]], []
        while nodes:
            node = nodes.pop()
            nodes += node.get("Plans", [])
            if "Scan" in node["Node Type"]:
                scans.append(node)
        # The key's index, or the tenant's ids (search's, migration m0013): either probes the id.
        assert len(scans) == 1 and scans[0]["Node Type"] == "Index Scan", plan
        assert scans[0]["Index Name"] in (
            "uq_instances_tenant_workflow_id",
            "ix_instances_tenant_id",
        )
        assert scans[0]["Actual Rows"] == 1 and scans[0].get("Rows Removed by Filter", 0) == 0
    finally:
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


class _AddTokens(BatchWrite):
    """Writes that send their statements, and perhaps the COMMIT, in one pipeline."""

    def __init__(self, ids: list[str], after: Exception | None = None) -> None:
        self.ids = ids
        self.after = after  # raised once the pipeline is sent

    @staticmethod
    def combine(conn: sa.Connection, writes: Sequence[Any]) -> list[Any]:
        rows = [{"id": i, "secret_hash": "x", "created_at": 0.0} for w in writes for i in w.ids]
        with pipelined(conn, last=True):
            conn.execute(tables.admin_tokens.insert().inline(), rows)
        for w in writes:
            if w.after is not None:
                raise w.after
        return [None] * len(writes)


def _tokens(db: Database) -> list[str]:
    with db.connect() as conn:
        return sorted(conn.execute(sa.select(tables.admin_tokens.c.id)).scalars())


def test_a_pipeline_may_send_the_commit_and_failures_still_roll_back(database_url: str) -> None:
    db = Database(database_url)
    migrate(db)
    committer = GroupCommitter(db, threads=1)
    # The last write of its transaction commits in its pipeline; the next transaction is a new
    # one (nothing runs outside a transaction, nothing is committed twice).
    before = db.commits
    committer.run(_AddTokens(["a"]))
    committer.run(_AddTokens(["b"]))
    assert _tokens(db) == ["a", "b"] and db.commits - before == 2
    # A failing statement in the pipeline skips the COMMIT: the batch is rolled back and its
    # writes run one by one, so only the failing one fails.
    gate = threading.Event()
    blocker = committer.submit(lambda c: gate.wait(10))  # holds the thread: the next two batch
    bad = committer.submit(_AddTokens(["a"]))
    good = committer.submit(_AddTokens(["c"]))
    gate.set()
    blocker.result(10)
    assert good.result(10) is None
    assert isinstance(bad.exception(10), sa.exc.IntegrityError)
    assert _tokens(db) == ["a", "b", "c"]
    # Code that fails after its statements is reported. On PostgreSQL the COMMIT went out with
    # them, and the writes are not run again (that would apply them twice); on SQLite the
    # transaction is still open, and rolled back.
    broken = committer.submit(_AddTokens(["d"], after=RuntimeError("after the commit")))
    assert isinstance(broken.exception(10), RuntimeError)
    assert _tokens(db) == ["a", "b", "c"] + (["d"] if db.dialect == "postgresql" else [])
    # Plain writes around it still commit as before.
    committer.run(
        lambda c: c.execute(
            tables.admin_tokens.insert().values(id="e", secret_hash="x", created_at=0.0)
        )
    )
    assert (
        _tokens(db) == ["a", "b", "c", "e"] if db.dialect == "sqlite" else ["a", "b", "c", "d", "e"]
    )
    committer.close()
    db.dispose()


def _migrate_until(db: Database, last: int) -> None:
    """Apply the shipped migrations up to ``last``, as a database made back then has them."""
    with db.schema_change() as conn:
        _VERSIONS.create(conn)
        for version, name in available_migrations():
            if version <= last:
                importlib.import_module(f"storage.migrations.{name}").upgrade(conn)
                conn.execute(_VERSIONS.insert().values(version=version, name=name, applied_at=0))


def test_json_columns_come_back_as_stored_and_the_migration_keeps_rows(
    empty_database_url: str,
) -> None:
    db = Database(empty_database_url)
    _migrate_until(db, 4)
    with db.begin() as conn:
        for statement in [
            "INSERT INTO tenants (id, name, policy, created_at) VALUES (1, 't', '{}', 0)",
            "INSERT INTO instances (pk, tenant_id, workflow, id, version, status, params,"
            " output, created_at, epoch) VALUES (7, 1, 'w', 'i', 'v', 'complete',"
            " '18446744073709551617', '1e400', 0, 0)",
            "INSERT INTO steps (instance_pk, name, count, seq, type, status, output, attempts)"
            " VALUES (7, 'a', 1, 0, 'do', 'complete', '2.5', '[]')",
            "INSERT INTO events (instance_pk, type, payload, created_at) VALUES (7, 'go', '7', 0)",
            "INSERT INTO history (instance_pk, ts, type, data) VALUES (7, 0, 'log', '{}')",
        ]:
            conn.execute(sa.text(statement))
    assert migrate(db) == [name for version, name in available_migrations() if version > 4]
    inst, S, E, H = tables.instances, tables.steps, tables.events, tables.history
    with db.connect() as conn:
        params, output = conn.execute(sa.select(inst.c.params, inst.c.output)).one()
        assert conn.execute(sa.select(S.c.output)).scalar() == 2.5
        assert conn.execute(sa.select(E.c.payload)).scalar() == 7
        assert conn.execute(sa.select(sa.func.count()).select_from(H)).scalar() == 1
    if db.dialect == "sqlite":  # stored as doubles before: what they had become, as JSON text
        assert (params, output) == (1.8446744073709552e19, None)
    else:  # JSONB kept them exactly
        assert (params, output) == (2**64 + 1, 10**400)
    exact = [2**53, -(2**53), 1.0, 1e16, "123", 0.1]
    with db.begin() as conn:
        for pk, value in enumerate(exact, start=10):
            row = {"pk": pk, "tenant_id": 1, "workflow": "w", "id": f"n{pk}", "version": "v"}
            conn.execute(
                inst.insert().values(**row, status="q", params=value, created_at=0, epoch=0)
            )
        conn.execute(sa.delete(inst).where(inst.c.pk == 7))  # foreign keys still cascade
    with db.connect() as conn:
        query = sa.select(inst.c.params).where(inst.c.pk >= 10).order_by(inst.c.pk)
        got = conn.execute(query).scalars()
        assert [(v, type(v)) for v in got] == [(v, type(v)) for v in exact]
        for table in (S, E, H):
            assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0
    db.dispose()


def test_a_start_warns_when_postgresql_runs_without_autovacuum(
    database_url: str, caplog: Any
) -> None:
    """The warning appears exactly when the server's autovacuum is off (SQLite: never)."""
    from dispatcher import Platform
    from dispatcher._startup import warn_about_database
    from tests.integration.app import settings

    platform = Platform(settings(database_url))
    try:
        expected = False
        if platform.db.dialect == "postgresql":
            with platform.db.connect() as conn:
                setting = conn.execute(sa.text("SELECT current_setting('autovacuum')")).scalar()
            expected = setting != "on"
        with caplog.at_level("WARNING", logger="treadle"):
            warn_about_database(platform)
        warned = [r for r in caplog.records if "autovacuum off" in r.getMessage()]
        assert len(warned) == (1 if expected else 0)
    finally:
        platform.close()


def test_a_database_gone_during_the_autovacuum_check_does_not_end_the_start(
    postgresql_url: str, caplog: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL crashing between the platform's opening and the check (seen under chaos):
    the check is skipped with a warning, and a worker does not exit over advice."""
    import psycopg

    from dispatcher import Platform
    from dispatcher._startup import warn_about_database
    from tests.integration.app import settings

    platform = Platform(settings(postgresql_url))
    try:

        @contextmanager
        def gone() -> Iterator[Any]:
            lost = psycopg.OperationalError("consuming input failed: server closed the connection")
            raise sa.exc.OperationalError("SELECT current_setting('autovacuum')", {}, lost)
            yield

        monkeypatch.setattr(platform.db, "connect", gone)
        with caplog.at_level("WARNING", logger="treadle"):
            warn_about_database(platform)
        said = [r.getMessage() for r in caplog.records]
        assert any("could not check PostgreSQL's autovacuum" in line for line in said), said
    finally:
        platform.close()
