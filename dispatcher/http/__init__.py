"""The HTTP API: the Starlette app, its routes, the listener in front of it, the mapping of
errors to statuses, and the OpenAPI document."""

from __future__ import annotations

from dispatcher.http._app import create_app
from dispatcher.http._errors import STATUS, error_response, status_of
from dispatcher.http._openapi import openapi_document

__all__ = ["STATUS", "create_app", "error_response", "openapi_document", "status_of"]
