"""The composition root: settings, the platform wiring, the HTTP app and the CLI.

Its names are imported on first use, so that ``treadle``'s client commands (which need only
:func:`main`) do not load the server stack.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from dispatcher._app import create_app
    from dispatcher._cli import main
    from dispatcher._errors import STATUS, error_response, status_of
    from dispatcher._metrics import render as render_metrics
    from dispatcher._openapi import openapi_document
    from dispatcher._platform import Platform, TenantRunner, limits_of
    from dispatcher._settings import Settings

_LAZY = {
    "STATUS": ("dispatcher._errors", "STATUS"),
    "Platform": ("dispatcher._platform", "Platform"),
    "Settings": ("dispatcher._settings", "Settings"),
    "TenantRunner": ("dispatcher._platform", "TenantRunner"),
    "create_app": ("dispatcher._app", "create_app"),
    "error_response": ("dispatcher._errors", "error_response"),
    "limits_of": ("dispatcher._platform", "limits_of"),
    "main": ("dispatcher._cli", "main"),
    "openapi_document": ("dispatcher._openapi", "openapi_document"),
    "render_metrics": ("dispatcher._metrics", "render"),
    "status_of": ("dispatcher._errors", "status_of"),
}

__all__ = [
    "STATUS",
    "Platform",
    "Settings",
    "TenantRunner",
    "create_app",
    "error_response",
    "limits_of",
    "main",
    "openapi_document",
    "render_metrics",
    "status_of",
]


def __getattr__(name: str) -> _typing.Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'dispatcher' has no attribute {name!r}")
    value = getattr(_importlib.import_module(where[0]), where[1])
    globals()[name] = value  # later lookups skip this function
    return value
