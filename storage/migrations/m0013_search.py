"""Instance tags and search.

An instance keeps the ``tags`` given at create (JSON; on PostgreSQL under a GIN index of
their pairs: measured against a table of (tenant, key, value, instance) rows at a million
instances, it answers as fast, writes faster and takes about a hundredth of the space, see
bench/RESULTS.md); an errored one keeps its error's name in ``error_name``. The indexes let
each filter of a listing (``engine._search``) read a tenant's instances newest first, by
status, id, creation time, key and error name.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa


def _partial(name: str, columns: list[Any], where: str) -> None:
    condition = sa.text(where)
    sa.Index(name, *columns, sqlite_where=condition, postgresql_where=condition)


def upgrade(conn: sa.Connection) -> None:
    conn.execute(sa.text("ALTER TABLE instances ADD COLUMN tags " + _json_ddl(conn)))
    conn.execute(sa.text("ALTER TABLE instances ADD COLUMN error_name VARCHAR(256)"))
    name = (
        "error ->> 'name'" if conn.dialect.name == "postgresql" else "json_extract(error, '$.name')"
    )
    conn.execute(
        sa.text(f"UPDATE instances SET error_name = substr({name}, 1, 256) WHERE error IS NOT NULL")
    )
    md = sa.MetaData()
    instances = sa.Table("instances", md, autoload_with=conn)
    c = instances.c
    sa.Index("ix_instances_tenant_pk", c.tenant_id, c.pk)
    sa.Index("ix_instances_tenant_status", c.tenant_id, c.status, c.pk)
    sa.Index("ix_instances_tenant_id", c.tenant_id, c.id)
    sa.Index("ix_instances_tenant_created", c.tenant_id, c.created_at)
    _partial("ix_instances_tenant_key", [c.tenant_id, c.flow_key, c.pk], "flow_key IS NOT NULL")
    _partial("ix_instances_error_name", [c.tenant_id, c.error_name, c.pk], "error_name IS NOT NULL")
    for index in instances.indexes:
        if index.name in _NEW:
            index.create(conn)
    if conn.dialect.name == "postgresql":
        # Tags are searched by containment (tags @> '{"k": "v"}'); on SQLite, by reading them.
        conn.execute(
            sa.text(
                "CREATE INDEX ix_instances_tags ON instances USING gin (tags jsonb_path_ops)"
                " WHERE tags IS NOT NULL"
            )
        )


_NEW = {
    "ix_instances_tenant_pk",
    "ix_instances_tenant_status",
    "ix_instances_tenant_id",
    "ix_instances_tenant_created",
    "ix_instances_tenant_key",
    "ix_instances_error_name",
}


def _json_ddl(conn: sa.Connection) -> str:
    # As m0005 declares JSON columns on SQLite: TEXT affinity.
    return "JSONB" if conn.dialect.name == "postgresql" else "JSONTEXT"
