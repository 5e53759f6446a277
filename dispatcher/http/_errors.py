"""Errors as HTTP responses: ``{"error": {"code", "message", ...}}`` with a fitting status.

The one table from error class to HTTP status lives here; nothing below the dispatcher knows
about HTTP. A subclass takes the status of its nearest listed ancestor.

Database failures that are no fault of the request (the server is down, or every pooled
connection is busy) become :class:`Unavailable` here, at the boundary: 503 with
``Retry-After``, never 500. :class:`DatabaseOutage` catches them wherever they happen below it
(authentication included); any other exception is still a 500.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from storage import reason, transient
from treadle.errors import (
    AlreadyExists,
    CodeInvalid,
    Conflict,
    InvalidInput,
    LimitExceeded,
    LinkExpired,
    NotFound,
    QuotaExceeded,
    RequestTimeout,
    TooLarge,
    TreadleError,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    WasmBuilding,
    WasmUnavailable,
)
from treadle.runtime import JSONObject

STATUS: dict[type[TreadleError], int] = {
    InvalidInput: 400,
    LimitExceeded: 400,
    Unauthorized: 401,
    NotFound: 404,
    RequestTimeout: 408,
    AlreadyExists: 409,
    Conflict: 409,
    LinkExpired: 410,
    TooLarge: 413,
    UnsupportedMediaType: 415,
    CodeInvalid: 422,
    QuotaExceeded: 429,
    Unavailable: 503,
    WasmUnavailable: 503,
}
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}
_log = logging.getLogger("treadle.http")


def status_of(exc: TreadleError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(exc: TreadleError) -> JSONResponse:
    status = status_of(exc)
    body: JSONObject = {"code": exc.code, "message": exc.message}
    if status < 500:  # details of an internal error are for the log, not the client
        body.update({k: v for k, v in exc.details.items() if k not in body})
    headers = {}
    if isinstance(exc, QuotaExceeded | Unavailable):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def database_error(exc: BaseException) -> Unavailable | None:
    """``exc`` as :class:`Unavailable` if it is a database failure the caller can wait out."""
    if isinstance(exc, sa.exc.TimeoutError):  # no pooled connection came free in time
        message = "the server is handling too many requests; try again shortly"
        return Unavailable(message, code="database.busy", retry_after=1)
    if transient(exc):
        return Unavailable(retry_after=2)
    return None


class DatabaseOutage:
    """Answers 503 for a request that failed on a database that is down or busy.

    A response already under way (a live stream) cannot be replaced: its error goes on as it
    would have. So do errors that are not about the database's availability.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, receive, watched)
        except Exception as exc:
            error = database_error(exc)
            if error is None or started:
                raise
            # One line, no traceback: during an outage every request would log one.
            _log.warning("%s %s: %s (%s)", scope["method"], scope["path"], error.code, reason(exc))
            await error_response(error)(scope, receive, send)


def invalid_input(exc: ValidationError) -> InvalidInput:
    """A pydantic error about a request as one readable :class:`InvalidInput`."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    if any(e["type"] == "json_invalid" for e in errors):
        detail = next(e["msg"] for e in errors if e["type"] == "json_invalid")
        return InvalidInput(f"the request body is not valid JSON ({detail})", code="request.json")
    return InvalidInput("invalid request: " + "; ".join(_describe(e) for e in errors))


def _describe(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    return f"{where}: {message}" if where else message


async def _treadle_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TreadleError)
    # A failed build of the wasm runtime was logged once, with its reason, when it failed.
    if status_of(exc) >= 500 and not isinstance(exc, WasmUnavailable):
        _log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(exc)


async def _building(request: Request, exc: Exception) -> Response:
    """Not an error: nothing was stored, and the same request succeeds once the Python-in-Wasm
    runtime is built. Answered at once, never held for the build (a minute on a first start)."""
    assert isinstance(exc, WasmBuilding)
    seconds = max(1, math.ceil(exc.retry_after))
    body = {"status": "building", "message": exc.message, "retry_after": seconds}
    return JSONResponse(body, status_code=202, headers={"Retry-After": str(seconds)})


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    return error_response(invalid_input(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "request.invalid")
    body = {"error": {"code": code, "message": exc.detail}}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    # Starlette logs the exception and re-raises it to the server after this response.
    body = {"error": {"code": "internal", "message": "internal server error"}}
    return JSONResponse(body, status_code=500)


HANDLERS = {
    WasmBuilding: _building,
    TreadleError: _treadle_error,
    ValidationError: _validation_error,
    HTTPException: _http_error,
    Exception: _internal_error,
}
