"""Approval links: a URL that sends one event to one instance, without an API key.

Only the SHA-256 of a link's token is stored (``token_hash``, 64 hex digits): whoever reads
the table cannot use a link. ``uses_left`` counts down to 0; ``expires_at`` ends it anyway. A
link minted by a workflow's ``step.approval_link`` carries that step's key (``step_key``), unique
per instance, so a retried mint replaces the link rather than add one. The rows go with their
instance (ON DELETE CASCADE).
"""

from __future__ import annotations

import sqlalchemy as sa

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade(conn: sa.Connection) -> None:
    md = sa.MetaData()
    sa.Table("instances", md, autoload_with=conn)
    links = sa.Table(
        "approval_links",
        md,
        sa.Column("pk", _ID, primary_key=True),
        sa.Column(
            "instance_pk", _ID, sa.ForeignKey("instances.pk", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("step_key", sa.String(300), nullable=True),
        sa.Column("uses", sa.Integer, nullable=False),
        sa.Column("uses_left", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    sa.Index("uq_approval_links_token", links.c.token_hash, unique=True)
    sa.Index("uq_approval_links_step", links.c.instance_pk, links.c.step_key, unique=True)
    links.create(conn)
