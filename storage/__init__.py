"""Database access: engine factory, tables, migrations, group commit, clock, outages."""

from __future__ import annotations

from storage import _tables as tables
from storage._clock import Clock, ManualClock, iso
from storage._committer import BatchWrite, GroupCommitter, pipelined
from storage._cursor import decode_cursor, encode_cursor
from storage._database import Database, normalize_url
from storage._json import dumps
from storage._migrate import available as available_migrations
from storage._migrate import current_version, migrate
from storage._outage import reason, short_of_descriptors, transient, unreachable

__all__ = [
    "BatchWrite",
    "Clock",
    "Database",
    "GroupCommitter",
    "ManualClock",
    "available_migrations",
    "current_version",
    "decode_cursor",
    "dumps",
    "encode_cursor",
    "iso",
    "migrate",
    "normalize_url",
    "pipelined",
    "reason",
    "short_of_descriptors",
    "tables",
    "transient",
    "unreachable",
]
