"""What a log line is about: the tenant, the instance and the trace of the work in progress.

A context variable, so that it follows the work: set by the engine around a replay on its
runner thread, by the API around a request (and copied into the threads it hands work to).
The JSON log format (``treadle serve --log-format json``) adds it to every line.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_CONTEXT: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar(
    "treadle_log_context", default=()
)


def log_context() -> dict[str, str]:
    """The fields of the work in progress (``tenant``, ``instance_id``, ``trace_id``)."""
    return dict(_CONTEXT.get())


@contextlib.contextmanager
def logging_for(**fields: str | None) -> Iterator[None]:
    """Within the block, log lines carry ``fields`` (those not None) on top of the current
    ones."""
    added = {k: v for k, v in fields.items() if v is not None}
    token = _CONTEXT.set(tuple({**dict(_CONTEXT.get()), **added}.items()))
    try:
        yield
    finally:
        _CONTEXT.reset(token)
