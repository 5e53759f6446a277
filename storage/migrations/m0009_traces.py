"""Traces: each instance keeps the OpenTelemetry context of its trace.

``trace_id`` (32 hex digits) and ``span_id`` (16, the span of the whole run) are made at the
create, or ``trace_id`` taken from the caller's ``traceparent``, whose span becomes
``parent_span_id``. Kept with the instance, they let any process, after any crash, add the
spans of later steps to the same trace. Instances created before this migration have none.
"""

from __future__ import annotations

import sqlalchemy as sa


def upgrade(conn: sa.Connection) -> None:
    for column, size in (("trace_id", 32), ("span_id", 16), ("parent_span_id", 16)):
        conn.execute(sa.text(f"ALTER TABLE instances ADD COLUMN {column} VARCHAR({size})"))
