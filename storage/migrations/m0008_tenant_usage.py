"""Usage metering: a ledger of what each tenant used, by hour.

``tenant_usage`` gets a row from every write that counts something a tenant is billed for
(instances created, step results, attempts, sandbox CPU and wall time, egress, the change of
its storage), in the same transaction; rows of one tenant and hour are folded into one now and
then. Nothing before this migration is counted.
"""

from __future__ import annotations

import sqlalchemy as sa

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
COUNTS = (
    "instances_created",
    "steps",
    "step_attempts",
    "cpu_us",
    "wall_us",
    "egress_requests",
    "egress_bytes",
    "storage_bytes",
)


def upgrade(conn: sa.Connection) -> None:
    md = sa.MetaData()
    sa.Table("tenants", md, sa.Column("id", sa.Integer, primary_key=True))
    usage = sa.Table(
        "tenant_usage",
        md,
        sa.Column("pk", _ID, primary_key=True),
        sa.Column(
            "tenant_id",
            sa.Integer,
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("hour", sa.BigInteger, nullable=False),
        *(sa.Column(name, sa.BigInteger, nullable=False, server_default="0") for name in COUNTS),
    )
    sa.Index("ix_tenant_usage_tenant_hour", usage.c.tenant_id, usage.c.hour)
    usage.create(conn)
