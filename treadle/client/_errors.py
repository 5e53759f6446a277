"""The errors only the HTTP client raises (they carry the client's models), and the errors of
the API that no sandbox raises: ``treadle.runtime`` is compiled into the Python-in-Wasm runtime,
so what is added there changes that runtime and rebuilds it on every machine."""

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


class WasmBuilding(TreadleError):
    """The server is building the Python-in-Wasm runtime (first start only); try again shortly.

    Not a failure: the upload was not stored, and the same upload succeeds once the runtime is
    built. ``retry_after`` is the server's estimate of the seconds the build still takes. The
    server answers such an upload ``202`` with ``{"status": "building", "message",
    "retry_after"}``; ``Client.deploy(..., wait=...)`` retries until it is deployed.
    """

    code: str = "wasm.building"

    def __init__(self, message: str | None = None, *, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class WasmUnavailable(TreadleError):
    """The Python-in-Wasm runtime could not be built on this server; wasm uploads of Python
    source fail until its operator fixes the cause and restarts it."""

    code: str = "wasm.unavailable"
