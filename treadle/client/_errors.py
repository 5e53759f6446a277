"""The errors only the HTTP client raises: they carry the client's models."""

from __future__ import annotations

from typing import TYPE_CHECKING

from treadle.runtime import TreadleError

if TYPE_CHECKING:
    from treadle.client._models import Instance


class ServerError(TreadleError):
    """The server failed to handle the request."""

    code: str = "internal"


class ConnectionFailed(TreadleError):
    """Could not reach the treadle server."""

    code: str = "client.connection"


class NotFinished(TreadleError):
    """The instance did not finish within the timeout."""

    code: str = "client.timeout"

    def __init__(self, message: str | None = None, *, status: str | None = None) -> None:
        super().__init__(message, status=status)
        self.status = status


class InstanceFailed(TreadleError):
    """The instance ended without completing.

    Raised by the client's ``wait`` for an ``errored`` or ``terminated`` instance. ``instance``
    is the finished instance (with its ``status``, ``error`` and ``steps``); ``name`` and
    ``message`` are the instance's error, if it has one.
    """

    code: str = "instance.failed"

    def __init__(self, message: str | None = None, *, instance: Instance, name: str = "") -> None:
        super().__init__(message)
        self.instance = instance
        self.name = name
