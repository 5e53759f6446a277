"""Every error treadle raises derives from :class:`TreadleError`.

Each class's docstring is its default message and ``code`` is the dotted code the HTTP API puts
in ``{"error": {"code": ...}}``. The errors of the platform live in :mod:`treadle.runtime` (a
sandbox raises them too); those only the HTTP client raises, and those of the API that no
sandbox raises (``WasmBuilding``, ``WasmUnavailable``), live in :mod:`treadle.client`.
"""

from __future__ import annotations

from treadle.client._errors import (
    ConnectionFailed,
    InstanceFailed,
    NotFinished,
    ServerError,
    WasmBuilding,
    WasmUnavailable,
)
from treadle.runtime.errors import (
    AlreadyExists,
    CodeInvalid,
    Conflict,
    InvalidDuration,
    InvalidInput,
    LimitExceeded,
    LinkExpired,
    NonRetryableError,
    NotFound,
    QuotaExceeded,
    RequestTimeout,
    StepError,
    StorageQuotaExceeded,
    TooLarge,
    TooManyConnections,
    TooManyStreams,
    TreadleError,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    UploadBusy,
    ValueNotStorable,
    WaitTimeout,
)

__all__ = [
    "AlreadyExists",
    "CodeInvalid",
    "Conflict",
    "ConnectionFailed",
    "InstanceFailed",
    "InvalidDuration",
    "InvalidInput",
    "LimitExceeded",
    "LinkExpired",
    "NonRetryableError",
    "NotFinished",
    "NotFound",
    "QuotaExceeded",
    "RequestTimeout",
    "ServerError",
    "StepError",
    "StorageQuotaExceeded",
    "TooLarge",
    "TooManyConnections",
    "TooManyStreams",
    "TreadleError",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "UploadBusy",
    "ValueNotStorable",
    "WaitTimeout",
    "WasmBuilding",
    "WasmUnavailable",
]
