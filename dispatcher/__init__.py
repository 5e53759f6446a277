"""The composition root: settings, the platform wiring, the HTTP app and the CLI."""

from __future__ import annotations

from dispatcher._app import create_app
from dispatcher._cli import main
from dispatcher._errors import STATUS, error_response, status_of
from dispatcher._metrics import render as render_metrics
from dispatcher._openapi import openapi_document
from dispatcher._platform import Platform, TenantRunner, limits_of
from dispatcher._settings import Settings

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
