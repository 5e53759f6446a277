"""Webhooks: ``hooks`` holds a workflow's signed webhooks, ``hook_deliveries`` the
``Idempotency-Key`` of each delivery that created an instance.

A hook's ``id`` (``hk_...``, unguessable) is its public address; ``name`` is what the tenant
calls it, unique per workflow. ``secret`` is kept as it is (an HMAC needs it), and after a
rotation ``previous_secret`` verifies too until ``previous_expires_at``. A delivery row is
inserted in the transaction that creates its instance, so a key repeated, even by two
processes at once, creates one instance.
"""

from __future__ import annotations

import sqlalchemy as sa


def upgrade(conn: sa.Connection) -> None:
    md = sa.MetaData()
    sa.Table("workflows", md, autoload_with=conn)
    hooks = sa.Table(
        "hooks",
        md,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.Integer, nullable=False),
        sa.Column("workflow", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("previous_secret", sa.String(128), nullable=True),
        sa.Column("previous_expires_at", sa.Float, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "workflow"],
            ["workflows.tenant_id", "workflows.name"],
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("tenant_id", "workflow", "name", name="uq_hooks_name"),
    )
    deliveries = sa.Table(
        "hook_deliveries",
        md,
        sa.Column(
            "hook_id",
            sa.String(64),
            sa.ForeignKey("hooks.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("idempotency_key", sa.String(255), primary_key=True),
        sa.Column("instance_id", sa.String(100), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    sa.Index("ix_hook_deliveries_created", deliveries.c.created_at)
    for table in (hooks, deliveries):
        table.create(conn)
