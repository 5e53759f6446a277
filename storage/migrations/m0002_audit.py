"""The audit log of admin actions, and API-key expiry (for rotation with an overlap)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

_JSON = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
_BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _schema() -> sa.MetaData:
    md = sa.MetaData()
    sa.Table(
        "audit_log",
        md,
        sa.Column("pk", _BIG, primary_key=True),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("client", sa.String(64), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=True),
        sa.Column("target", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("details", _JSON, nullable=True),
        sa.Index("ix_audit_log_tenant", "tenant", "pk"),
        sa.Index("ix_audit_log_action", "action", "pk"),
    )
    return md


def upgrade(conn: sa.Connection) -> None:
    _schema().create_all(conn)
    float_type = sa.Float().compile(dialect=conn.dialect)
    key_id_type = sa.String(32).compile(dialect=conn.dialect)
    conn.execute(sa.text(f"ALTER TABLE api_keys ADD COLUMN expires_at {float_type}"))
    conn.execute(sa.text(f"ALTER TABLE api_keys ADD COLUMN rotated_from {key_id_type}"))
