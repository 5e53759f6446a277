"""treadle inside the Python-in-Wasm guest: the names tenant code imports (see
``docs/workflows.md``).

The build bundles the SDK's whole ``treadle.runtime`` package next to this file, so tenant code
runs the very step API, and raises and catches the very classes, it would in the restricted
sandbox; ``treadle_guest`` connects that runtime to the host.
"""

from treadle.runtime._durations import MAX_DURATION_SECONDS, parse_duration, parse_instant
from treadle.runtime._entrypoint import WorkflowEntrypoint
from treadle.runtime.errors import NonRetryableError, StepError, TreadleError, WaitTimeout

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
