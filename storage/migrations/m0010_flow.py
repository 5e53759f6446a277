"""Flow control inside a tenant, and schedules.

A workflow may carry ``flow`` (per-key concurrency, rate, debounce, singleton); an instance
gets its ``flow_key``, its ``priority`` (0-9, higher first), the ``flow_mode`` it was created
under (``debounce`` or ``singleton``, which two unique partial indexes make exclusive per key)
and the stored part of its ``waiting_reason`` (``start_at``, ``debounce``).

Queued instances leave ``ix_instances_tenant_due``: the claim takes started work (waking,
retried, lease expired) from it, unkeyed queued instances by priority from
``ix_instances_queue``, and keyed ones key by key, through ``flow_keys``: a row per key with
its limits and ``ready_at``, when the claim should next look at it (NULL: not until a create
or a ``flow_wakeups`` row says so). A key full or empty costs a claim nothing.

``schedules`` holds each schedule's spec and its next fire, fired under a short lease.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from storage._json import TextJSON

_JSON = TextJSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_LIVE_STARTED = "status IN ('running', 'waiting', 'waitingForPause', 'paused')"
_LIVE = "status IN ('queued', 'running', 'waiting', 'waitingForPause', 'paused')"


def _partial(name: str, table: sa.Table, columns: list[Any], where: str, **kw: Any) -> None:
    condition = sa.text(where)
    sa.Index(name, *columns, sqlite_where=condition, postgresql_where=condition, **kw)


def upgrade(conn: sa.Connection) -> None:
    conn.execute(sa.text("ALTER TABLE workflows ADD COLUMN flow " + _json_ddl(conn)))
    for column in (
        "flow_key VARCHAR(128)",
        "priority SMALLINT NOT NULL DEFAULT 5",
        "flow_mode VARCHAR(16)",
        "waiting_reason VARCHAR(16)",
    ):
        conn.execute(sa.text(f"ALTER TABLE instances ADD COLUMN {column}"))
    conn.execute(sa.text("DROP INDEX ix_instances_tenant_due"))

    md = sa.MetaData()
    instances = sa.Table("instances", md, autoload_with=conn)
    sa.Table("workflows", md, autoload_with=conn)
    c = instances.c
    key = [c.tenant_id, c.workflow, c.flow_key]
    _partial(
        "ix_instances_tenant_due",
        instances,
        [c.tenant_id, c.due_at],
        "due_at IS NOT NULL AND (status <> 'queued' OR waiting_reason IS NOT NULL)",
    )
    _partial(
        "ix_instances_queue",
        instances,
        [c.tenant_id, c.priority.desc(), c.due_at],
        "status = 'queued' AND flow_key IS NULL AND waiting_reason IS NULL",
    )
    _partial(
        "ix_instances_key_queue",
        instances,
        [*key, c.priority.desc(), c.due_at],
        "status = 'queued' AND flow_key IS NOT NULL AND waiting_reason IS NULL",
    )
    _partial("ix_instances_key_live", instances, key, f"flow_key IS NOT NULL AND {_LIVE_STARTED}")
    _partial(
        "ix_instances_key_started",
        instances,
        [*key, c.started_at],
        "flow_key IS NOT NULL AND started_at IS NOT NULL",
    )
    _partial(
        "uq_instances_singleton",
        instances,
        key,
        f"flow_mode = 'singleton' AND {_LIVE}",
        unique=True,
    )
    _partial(
        "uq_instances_debounce",
        instances,
        key,
        "flow_mode = 'debounce' AND status = 'queued' AND started_at IS NULL",
        unique=True,
    )
    for index in instances.indexes:
        if index.name in _NEW:
            index.create(conn)

    workflow_fk = sa.ForeignKeyConstraint(
        ["tenant_id", "workflow"], ["workflows.tenant_id", "workflows.name"], ondelete="CASCADE"
    )
    keys = sa.Table(
        "flow_keys",
        md,
        sa.Column("tenant_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("workflow", sa.String(64), primary_key=True),
        sa.Column("flow_key", sa.String(128), primary_key=True),
        sa.Column("concurrency", sa.Integer, nullable=True),
        sa.Column("rate_limit", sa.Integer, nullable=True),
        sa.Column("rate_period", sa.Float, nullable=True),
        sa.Column("ready_at", sa.Float, nullable=True),
        workflow_fk,
    )
    _partial(
        "ix_flow_keys_ready", keys, [keys.c.tenant_id, keys.c.ready_at], "ready_at IS NOT NULL"
    )
    wakeups = sa.Table(
        "flow_wakeups",
        md,
        sa.Column("pk", _ID, primary_key=True),
        sa.Column(
            "tenant_id", sa.Integer, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("workflow", sa.String(64), nullable=False),
        sa.Column("flow_key", sa.String(128), nullable=False),
    )
    sa.Index("ix_flow_wakeups_tenant", wakeups.c.tenant_id)
    schedules = sa.Table(
        "schedules",
        md,
        sa.Column("tenant_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("workflow", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("spec", _JSON, nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("next_fire_at", sa.Float, nullable=True),
        sa.Column("last_fire_at", sa.Float, nullable=True),
        sa.Column("last_instance", sa.String(100), nullable=True),
        sa.Column("held_fire_at", sa.Float, nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.Float, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "workflow"],
            ["workflows.tenant_id", "workflows.name"],
            ondelete="CASCADE",
        ),
    )
    _partial("ix_schedules_next", schedules, [schedules.c.next_fire_at], "next_fire_at IS NOT NULL")
    _partial("ix_schedules_held", schedules, [schedules.c.held_fire_at], "held_fire_at IS NOT NULL")
    for table in (keys, wakeups, schedules):
        table.create(conn)


_NEW = {
    "ix_instances_tenant_due",
    "ix_instances_queue",
    "ix_instances_key_queue",
    "ix_instances_key_live",
    "ix_instances_key_started",
    "uq_instances_singleton",
    "uq_instances_debounce",
}


def _json_ddl(conn: sa.Connection) -> str:
    # As m0005 declares JSON columns on SQLite: TEXT affinity.
    return "JSONB" if conn.dialect.name == "postgresql" else "JSONTEXT"
