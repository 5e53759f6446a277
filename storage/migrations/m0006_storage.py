"""Storage accounting: what each instance holds, and a ledger of each tenant's storage.

Instances get ``stored_bytes`` (the bytes written for them: params, step records, events, logs,
outcome) and ``log_bytes`` (the bytes of log lines kept, for the cap per instance). The table
``storage_usage`` is an append-only ledger of each tenant's storage: every write that stores
data for a tenant adds a row, every deletion a negative one, and the rows of a tenant are
folded into one now and then; their sum is the tenant's storage, checked against
``max_storage_mb``.

What instances stored before this migration is not counted: both columns start at 0.
"""

from __future__ import annotations

import sqlalchemy as sa

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade(conn: sa.Connection) -> None:
    for column in ("stored_bytes", "log_bytes"):
        conn.execute(
            sa.text(f"ALTER TABLE instances ADD COLUMN {column} BIGINT NOT NULL DEFAULT 0")
        )
    md = sa.MetaData()
    sa.Table("tenants", md, sa.Column("id", sa.Integer, primary_key=True))
    usage = sa.Table(
        "storage_usage",
        md,
        sa.Column("pk", _ID, primary_key=True),
        sa.Column(
            "tenant_id",
            sa.Integer,
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("bytes", sa.BigInteger, nullable=False),
    )
    sa.Index("ix_storage_usage_tenant", usage.c.tenant_id)
    usage.create(conn)
