"""The trace context an instance keeps: W3C ids, and a caller's ``traceparent``.

Every instance gets a trace id and the span id of its run when it is created (or the caller's
trace, from a ``traceparent`` header). They are stored with it, so whichever process replays
it later, after whatever crash, adds its spans to the same trace. The engine only keeps the
ids; the platform exports spans (``dispatcher._tracing``) when OpenTelemetry is configured.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


@dataclass(frozen=True)
class TraceParent:
    """A caller's span: where a run created by its request hangs in its trace."""

    trace_id: str
    span_id: str


def parse_traceparent(header: str | None) -> TraceParent | None:
    """The caller's span from a W3C ``traceparent`` header; None when it is missing or not
    valid (as the W3C recommendation says: a new trace is started then)."""
    if not header:
        return None
    match = _TRACEPARENT.match(header.strip().lower())
    if match is None:
        return None
    version, trace_id, span_id, _ = match.groups()
    if version == "ff" or set(trace_id) == {"0"} or set(span_id) == {"0"}:
        return None
    return TraceParent(trace_id, span_id)


def new_trace_id() -> str:
    return os.urandom(16).hex()


def new_span_id() -> str:
    return os.urandom(8).hex()
