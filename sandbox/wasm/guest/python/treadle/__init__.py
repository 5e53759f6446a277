"""treadle inside the Python-in-Wasm guest: the tenant API of DESIGN §2.

The build copies the SDK's ``treadle.runtime`` modules ``errors``, ``_durations`` and
``_entrypoint`` into ``treadle/runtime/``, so tenant code raises and catches the very classes
it would in the restricted sandbox.
The step API (``treadle._guest``) is a thin client of the host's step runtime.
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
