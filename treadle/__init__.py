"""treadle: the SDK that tenant workflow code imports, and the HTTP client."""

from __future__ import annotations

from treadle._durations import MAX_DURATION_SECONDS, parse_duration, parse_instant
from treadle._entrypoint import WorkflowEntrypoint
from treadle.errors import NonRetryableError, StepError, TreadleError, WaitTimeout

__all__ = [
    "MAX_DURATION_SECONDS",
    "NonRetryableError",
    "StepError",
    "TreadleError",
    "WaitTimeout",
    "WorkflowEntrypoint",
    "parse_duration",
    "parse_instant",
]
