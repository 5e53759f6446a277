"""Errors as HTTP responses: one table, the §6 body shape, Retry-After."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from dispatcher import error_response, status_of
from dispatcher._errors import invalid_input
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
)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidInput(), 400),
        (InvalidDuration(), 400),
        (LimitExceeded(), 400),
        (Unauthorized(), 401),
        (NotFound(), 404),
        (AlreadyExists(), 409),
        (Conflict(), 409),
        (TooLarge(), 413),
        (CodeInvalid(problems=[]), 422),
        (QuotaExceeded(), 429),
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
