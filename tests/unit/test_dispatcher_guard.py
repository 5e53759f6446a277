"""The request guard: what it lets through to the routes, and what it refuses, with which code."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from dispatcher.http._guard import RequestGuard, check_json, check_media_type, check_path
from treadle.errors import InvalidInput, UnsupportedMediaType


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": [1, 2.5, -3e10, true, null, "caf\xc3\xa9", "\\ud83d\\ude00"]}',
        b'"a \\\\u0000 that is only text"',
        b"[" * 150 + b"]" * 150,
        b'{"a": {"a": 1}, "b": {"a": 2}}',  # the same key in different objects is fine
    ],
)
def test_clean_json_passes(body: bytes) -> None:
    check_json(body)


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        (b"\xc3\x28", "request.encoding", "offset 0"),
        (b"{", "request.json", "line 1 column 2"),
        (b'{"a": 1, "b": {"c": 1, "c": 2}}', "request.json", "'c' appears twice"),
        (b"[NaN]", "request.json", "NaN"),
        (b"Infinity", "request.json", "Infinity"),
        (b"[1e999]", "request.json", "1e999 is too large"),
        (b"1" * 4301, "request.json", "too large"),
        (b"[" * 50_000 + b"]" * 50_000, "request.json", "nested too deeply"),
        (b'[{"k": ["\\u0000"]}]', "request.json", "U+0000"),
        (b'{"\\udc00": 1}', "request.json", "lone surrogate"),
    ],
)
def test_unclean_json_is_refused(body: bytes, code: str, words: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        check_json(body)
    assert raised.value.code == code
    assert words in raised.value.message


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/json",
        "APPLICATION/JSON;charset=UTF-8",
        'application/json; charset="utf8"',
        "application/merge-patch+json",
    ],
)
def test_json_media_types_pass(content_type: str | None) -> None:
    check_media_type(content_type)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=utf-16", ""],
)
def test_other_media_types_are_refused(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType, match="application/json"):
        check_media_type(content_type)


@pytest.mark.parametrize("path", ["/v1/a\x00b", "/v1/a\nb", "/v1/\x7f", "/v1/\x1b"])
def test_control_characters_in_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidInput, match="control character"):
        check_path(path)


def test_unicode_paths_pass() -> None:
    check_path("/v1/workflows/café/instances/😀")


async def _echo(request: Request) -> JSONResponse:
    return JSONResponse({"body": (await request.body()).decode()})


_APP = Starlette(
    routes=[Route("/v1/echo", _echo, methods=["POST"]), Route("/other", _echo, methods=["POST"])],
    middleware=[Middleware(RequestGuard)],
)


def _post(path: str, body: bytes = b"", content_type: str | None = None) -> httpx.Response:
    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=_APP)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            headers = {"content-type": content_type} if content_type else {}
            return await client.post(path, content=body, headers=headers)

    return asyncio.run(post())


def test_the_route_reads_the_body_the_guard_has_read() -> None:
    reply = _post("/v1/echo", b'{"a": 1}', "application/json")
    assert reply.json() == {"body": '{"a": 1}'}
    assert _post("/v1/echo").json() == {"body": ""}


def test_the_guard_answers_with_the_error_shape() -> None:
    reply = _post("/v1/echo", b"{", "application/json")
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "request.json"
    typed = _post("/v1/echo", b"a=1", "text/plain")
    assert typed.status_code == 415
    assert typed.json()["error"]["code"] == "request.unsupported_media_type"


def test_routes_outside_the_api_are_left_alone() -> None:
    assert _post("/other", b"{").json() == {"body": "{"}
