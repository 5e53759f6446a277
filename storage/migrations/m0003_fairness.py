"""Quotas and fair claiming: a row of admission state per tenant, and per-tenant indexes.

``tenant_quotas`` holds each tenant's create token bucket (shared by every API process) and an
upper bound of its queued instances, so a create checks ``max_queued_instances`` without
counting the tenant's queue. Instances get an index per tenant on ``due_at`` (the claimer takes
each tenant's oldest due instances, tenant by tenant) and a small one over the instances that
hold a worker (the claimer counts them against ``max_running_instances``). The global index on
``due_at`` goes: nothing orders all tenants' instances by due time any more, and every lease
renewal would keep paying for it.

Independent of m0002: the runner applies every migration a database has not seen, so this one
may be applied before or after it.
"""

from __future__ import annotations

import sqlalchemy as sa

_RUNNING = "status IN ('running', 'waitingForPause')"


def upgrade(conn: sa.Connection) -> None:
    md = sa.MetaData()
    instances = sa.Table("instances", md, autoload_with=conn)
    quotas = sa.Table(
        "tenant_quotas",
        md,
        sa.Column(
            "tenant_id",
            sa.Integer,
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("refilled_at", sa.Float, nullable=False),
        sa.Column("queued_bound", sa.Integer, nullable=True),
        sa.Column("full_at", sa.Float, nullable=False),
    )
    quotas.create(conn)
    conn.execute(sa.text("DROP INDEX ix_instances_due"))
    partial = {
        "ix_instances_tenant_due": (("tenant_id", "due_at"), "due_at IS NOT NULL"),
        "ix_instances_running": (("tenant_id", "due_at"), _RUNNING),
        "ix_instances_queued": (("tenant_id",), "status = 'queued'"),
    }
    for name, (columns, where) in partial.items():
        condition = sa.text(where)
        sa.Index(
            name,
            *(instances.c[c] for c in columns),
            sqlite_where=condition,
            postgresql_where=condition,
        ).create(conn)
