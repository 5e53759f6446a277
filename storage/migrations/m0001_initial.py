"""The initial schema."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

_JSON = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
_BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_WHERE_DUE = sa.text("due_at IS NOT NULL")


def _schema() -> sa.MetaData:
    md = sa.MetaData()
    f, s, i = sa.Float, sa.String, sa.Integer

    def col(name: str, type_: Any, *args: Any, **kw: Any) -> sa.Column[Any]:
        kw.setdefault("nullable", False)
        return sa.Column(name, type_, *args, **kw)

    def fk(name: str, target: str, type_: Any = i, **kw: Any) -> sa.Column[Any]:
        return col(name, type_, sa.ForeignKey(target, ondelete="CASCADE"), **kw)

    sa.Table(
        "tenants",
        md,
        col("id", i, primary_key=True),
        col("name", s(64), unique=True),
        col("policy", _JSON),
        col("created_at", f),
    )
    sa.Table(
        "api_keys",
        md,
        col("id", s(32), primary_key=True),
        fk("tenant_id", "tenants.id", index=True),
        col("secret_hash", s(128)),
        col("created_at", f),
        col("last_used_at", f, nullable=True),
    )
    sa.Table(
        "admin_tokens",
        md,
        col("id", s(32), primary_key=True),
        col("secret_hash", s(128)),
        col("created_at", f),
    )
    sa.Table(
        "workflows",
        md,
        fk("tenant_id", "tenants.id", primary_key=True, autoincrement=False),
        col("name", s(64), primary_key=True),
        col("version", s(64)),
        col("created_at", f),
        col("updated_at", f),
    )
    sa.Table(
        "workflow_versions",
        md,
        col("tenant_id", i, primary_key=True, autoincrement=False),
        col("workflow", s(64), primary_key=True),
        col("version", s(64), primary_key=True),
        col("sandbox", s(16)),
        col("class_name", s(256), nullable=True),
        col("source", sa.Text, nullable=True),
        col("wasm", sa.LargeBinary, nullable=True),
        col("created_at", f),
    )
    sa.Table(
        "instances",
        md,
        col("pk", _BIG, primary_key=True),
        fk("tenant_id", "tenants.id"),
        col("workflow", s(64)),
        col("id", s(100)),
        col("version", s(64)),
        col("status", s(20)),
        col("params", _JSON, nullable=True),
        col("output", _JSON, nullable=True),
        col("error", _JSON, nullable=True),
        col("created_at", f),
        col("started_at", f, nullable=True),
        col("ended_at", f, nullable=True),
        col("due_at", f, nullable=True),
        col("lease_owner", s(64), nullable=True),
        col("epoch", i),
        col("paused_at", f, nullable=True),
        col("paused_due_at", f, nullable=True),
        col("parent_pk", _BIG, nullable=True),
        col("rollback", _JSON, nullable=True),
        sa.UniqueConstraint("tenant_id", "workflow", "id", name="uq_instances_tenant_workflow_id"),
        sa.Index(
            "ix_instances_due", "due_at", sqlite_where=_WHERE_DUE, postgresql_where=_WHERE_DUE
        ),
        sa.Index("ix_instances_listing", "tenant_id", "workflow", "status", "pk"),
    )
    sa.Table(
        "steps",
        md,
        fk("instance_pk", "instances.pk", _BIG, primary_key=True, autoincrement=False),
        col("name", s(256), primary_key=True),
        col("count", i, primary_key=True, autoincrement=False),
        col("seq", i),
        col("type", s(16)),
        col("status", s(16)),
        col("output", _JSON, nullable=True),
        col("error", _JSON, nullable=True),
        col("attempts", _JSON, nullable=True),
        col("wake_at", f, nullable=True),
        col("event_pk", _BIG, nullable=True),
    )
    sa.Table(
        "events",
        md,
        col("pk", _BIG, primary_key=True),
        fk("instance_pk", "instances.pk", _BIG),
        col("type", s(120)),
        col("payload", _JSON, nullable=True),
        col("created_at", f),
        col("consumed_at", f, nullable=True),
        sa.Index("ix_events_instance", "instance_pk", "type", "pk"),
    )
    sa.Table(
        "history",
        md,
        col("pk", _BIG, primary_key=True),
        fk("instance_pk", "instances.pk", _BIG),
        col("ts", f),
        col("type", s(32)),
        col("step", s(256), nullable=True),
        col("data", _JSON, nullable=True),
        sa.Index("ix_history_instance", "instance_pk", "pk"),
    )
    return md


def upgrade(conn: sa.Connection) -> None:
    _schema().create_all(conn)
