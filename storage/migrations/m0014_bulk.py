"""Bulk operations: ``bulk_jobs``, one row per bulk action over a tenant's instances.

A job holds its filter (as the API took it), the action, its counts (``matched`` when it was
created; ``done`` and ``failed`` so far, ``failures`` by error code), ``high_pk``, the largest
pk that matched when it was created (it never touches an instance created after), and
``cursor_pk``, the last pk a committed batch covered. A process works on it under a short
lease (``lease_owner``, ``lease_until``); ``ix_bulk_jobs_running`` finds the running jobs
whose lease is free, the one waiting longest first.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from storage._json import TextJSON

_JSON = TextJSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade(conn: sa.Connection) -> None:
    md = sa.MetaData()
    sa.Table("tenants", md, autoload_with=conn)
    jobs = sa.Table(
        "bulk_jobs",
        md,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "tenant_id", sa.Integer, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("filter", _JSON, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("matched", sa.BigInteger, nullable=False),
        sa.Column("done", sa.BigInteger, nullable=False),
        sa.Column("failed", sa.BigInteger, nullable=False),
        sa.Column("failures", _JSON, nullable=True),
        sa.Column("high_pk", _ID, nullable=False),
        sa.Column("cursor_pk", _ID, nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.Float, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("ended_at", sa.Float, nullable=True),
    )
    sa.Index("ix_bulk_jobs_tenant", jobs.c.tenant_id, jobs.c.created_at)
    running = sa.text("status = 'running'")
    sa.Index(
        "ix_bulk_jobs_running",
        jobs.c.lease_until,
        sqlite_where=running,
        postgresql_where=running,
    )
    jobs.create(conn)
