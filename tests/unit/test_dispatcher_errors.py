"""Errors as HTTP responses: one table, the §6 body shape, Retry-After."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

import httpx
import psycopg
import pytest
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dispatcher import error_response, status_of
from dispatcher.http._errors import HANDLERS, DatabaseOutage, invalid_input
from tests.integration.app import served
from treadle.errors import (
    AlreadyExists,
    CodeInvalid,
    Conflict,
    InvalidDuration,
    InvalidInput,
    LimitExceeded,
    NotFound,
    QuotaExceeded,
    TooLarge,
    TreadleError,
    Unauthorized,
    Unavailable,
    ValueNotStorable,
)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidInput(), 400),
        (InvalidDuration(), 400),
        (ValueNotStorable(), 400),
        (LimitExceeded(), 400),
        (Unauthorized(), 401),
        (NotFound(), 404),
        (AlreadyExists(), 409),
        (Conflict(), 409),
        (TooLarge(), 413),
        (CodeInvalid(problems=[]), 422),
        (QuotaExceeded(), 429),
        (Unavailable(), 503),
        (TreadleError(), 500),
    ],
)
def test_each_error_class_has_its_status(error: TreadleError, status: int) -> None:
    assert status_of(error) == status
    assert error_response(error).status_code == status


def _body(error: TreadleError) -> object:
    return json.loads(bytes(error_response(error).body))


def test_the_body_carries_the_code_and_message() -> None:
    error = NotFound("instance 'x' not found", code="instance.not_found")
    assert _body(error) == {
        "error": {"code": "instance.not_found", "message": "instance 'x' not found"}
    }


def test_code_problems_are_part_of_the_error() -> None:
    problem = {"line": 3, "column": 4, "message": "import of 'os' is not allowed"}
    assert _body(CodeInvalid(problems=[problem])) == {
        "error": {
            "code": "code.invalid",
            "message": "The workflow code is not valid.",
            "problems": [problem],
        }
    }


def test_quota_errors_say_when_to_retry() -> None:
    response = error_response(QuotaExceeded(retry_after=0.2))
    assert response.headers["retry-after"] == "1"
    assert error_response(QuotaExceeded(retry_after=7.5)).headers["retry-after"] == "8"


def test_internal_errors_keep_their_details_to_themselves() -> None:
    assert _body(TreadleError("boom", secret="x")) == {
        "error": {"code": "internal", "message": "boom"}
    }


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str
    size: int = 0


def test_validation_errors_become_one_readable_message() -> None:
    with pytest.raises(ValidationError) as caught:
        _Body.model_validate_json('{"size": "1", "other": 2}')
    error = invalid_input(caught.value)
    assert error.code == "request.invalid"
    assert "name: Field required" in error.message
    assert "size: Input should be a valid integer" in error.message
    assert "other: unknown field" in error.message


def test_malformed_json_is_named_as_such() -> None:
    with pytest.raises(ValidationError) as caught:
        _Body.model_validate_json("{")
    error = invalid_input(caught.value)
    assert error.code == "request.json" and "not valid JSON" in error.message


def test_unavailable_says_when_to_retry() -> None:
    response = error_response(Unavailable(code="database.busy", retry_after=1))
    assert response.headers["retry-after"] == "1"
    assert _body(Unavailable())["error"]["code"] == "database.unavailable"  # type: ignore[index]


# What the driver raises, wrapped as SQLAlchemy does, and what the caller is told.
_REFUSED = psycopg.OperationalError("connection failed: ... port 5432 failed: Connection refused")
_FAILURES: dict[str, tuple[Exception, int, str]] = {
    "refused": (sa.exc.OperationalError(None, None, _REFUSED), 503, "database.unavailable"),
    "shutdown": (
        sa.exc.OperationalError("SELECT 1", {}, psycopg.errors.AdminShutdown("terminating")),
        503,
        "database.unavailable",
    ),
    "pool": (sa.exc.TimeoutError("QueuePool limit reached"), 503, "database.busy"),
    "bad sql": (
        sa.exc.ProgrammingError("SELECT x", {}, psycopg.errors.UndefinedTable("no x")),
        500,
        "internal",
    ),
    "sqlite": (
        sa.exc.OperationalError("SELECT x", {}, sqlite3.OperationalError("no such table: x")),
        500,
        "internal",
    ),
    "bug": (KeyError("x"), 500, "internal"),
}


@pytest.fixture(scope="module")
def failing() -> Iterator[httpx.Client]:
    """An app whose route ``/{name}`` raises the failure of that name."""

    async def fail(request: Request) -> Response:
        raise _FAILURES[request.path_params["name"]][0]

    app = Starlette(
        routes=[Route("/{name}", fail)],
        middleware=[Middleware(DatabaseOutage)],
        exception_handlers=HANDLERS,
    )
    with served(app) as http:
        yield http


@pytest.mark.parametrize("name", sorted(_FAILURES))
def test_a_database_that_is_down_or_busy_is_a_503_anything_else_a_500(
    failing: httpx.Client, name: str
) -> None:
    _, status, code = _FAILURES[name]
    reply = failing.get(f"/{name}", headers={"Connection": "close"})  # a 500 ends keep-alive
    assert (reply.status_code, reply.json()["error"]["code"]) == (status, code)
    assert ("retry-after" in reply.headers) == (status == 503)
