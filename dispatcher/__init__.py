"""The composition root: settings, the platform wiring, the HTTP app and the server commands.

The HTTP layer lives in :mod:`dispatcher.http`; the ``treadle`` command line, a client of that
API, in :mod:`treadle.client` (this package plugs ``serve``, ``worker`` and ``migrate`` into it).
"""

from __future__ import annotations

from dispatcher._platform import Platform, TenantRunner, limits_of
from dispatcher._settings import Settings
from dispatcher.http import STATUS, create_app, error_response, openapi_document, status_of

__all__ = [
    "STATUS",
    "Platform",
    "Settings",
    "TenantRunner",
    "create_app",
    "error_response",
    "limits_of",
    "openapi_document",
    "status_of",
]
