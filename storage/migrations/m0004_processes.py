"""The engine processes that share a database, for taking over a dead one's instances at once.

A process registers a row when it starts and holds a session-level advisory lock keyed by the
row's ``lock_key`` for as long as its database session lives; when the process dies, its
session ends and the lock goes with it, which every other process can see (``pg_locks``). The
table is used on PostgreSQL only: a SQLite file belongs to one process, which takes back
whatever was running when it starts.
"""

from __future__ import annotations

import sqlalchemy as sa


def upgrade(conn: sa.Connection) -> None:
    md = sa.MetaData()
    sa.Table(
        "processes",
        md,
        sa.Column("owner", sa.String(64), primary_key=True),
        sa.Column("lock_key", sa.Integer, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
    )
    md.create_all(conn)
