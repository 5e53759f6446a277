"""The guest's end of the ``host`` interface (``wit/world.wit``): one call per operation, JSON
arguments, and a JSON reply that is a value or the exception to raise here.

A suspend never comes back: the host traps the guest, which cannot catch it.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Mapping
from typing import Any

from treadle.runtime import clipped_traceback
from treadle.runtime.errors import InvalidDuration, NonRetryableError, StepError, WaitTimeout

HostCall = Callable[[str, str], str]
HostLog = Callable[[str], None]
# Raised here when a terminate-with-rollback replay reaches a step without a final record.
STOP_KIND = "treadle.stop"
_KNOWN: dict[str, type[Exception]] = {
    "InvalidDuration": InvalidDuration,
    "NonRetryableError": NonRetryableError,
    "WaitTimeout": WaitTimeout,
}
_call: HostCall | None = None
_log: HostLog | None = None


class Stopped(BaseException):
    """A terminate-with-rollback replay reached a step without a final record: run() ends."""


def bind(call: HostCall, log: HostLog) -> None:
    """Connect to the host's imports (the component's ``host`` interface)."""
    global _call, _log
    _call, _log = call, log


def raw(op: str, text: str) -> str:
    """Host operation ``op`` with its arguments as JSON text; the reply as JSON text."""
    if _call is None:
        raise RuntimeError("the host interface is not bound")
    return _call(op, text)


def call(op: str, **args: object) -> Any:
    """Host operation ``op``: its value, or the exception it says to raise."""
    reply = json.loads(raw(op, json.dumps(args, separators=(",", ":"))))
    if "raise" in reply:
        raise exception(reply["raise"])
    return reply.get("ok")


def log(message: str) -> None:
    """One line of the instance's log."""
    if _log is not None:
        _log(message)


def exception(info: Mapping[str, object]) -> BaseException:
    """The exception the host says to raise, as restricted code would see it."""
    kind, message = str(info.get("kind", "Exception")), str(info.get("message", ""))
    if kind == "StepError":
        failed = StepError(message, name=str(info.get("name", "Error")))
        failed.traceback = clipped_traceback(info.get("traceback"))
        return failed
    if kind == STOP_KIND:
        return Stopped(message)
    if info.get("final"):  # a platform error that retrying cannot help
        final: type[Exception] = type(kind, (NonRetryableError,), {})
        return final(message)
    known = _KNOWN.get(kind) or getattr(builtins, kind, None)
    if isinstance(known, type) and issubclass(known, Exception):
        return known(message)
    unknown: type[Exception] = type(kind, (Exception,), {})
    return unknown(message)
