"""Hostile input stopped at the door: bad paths and request bodies that are not clean JSON.

Every route parses its body with pydantic, which is strict about shapes and types; what it lets
through, and what the databases then choke on, is refused here once for all routes, with a 4xx
that says what is wrong: a body that is not declared as JSON (415), not UTF-8, not JSON, with a
key twice in one object (pydantic would keep the last one silently), NaN or Infinity, numbers
beyond what JSON can carry, strings with U+0000 or lone surrogates (PostgreSQL cannot store
either), and paths with control characters (PostgreSQL refuses NUL in a query).

It runs after authentication, so an anonymous caller cannot make the server parse anything,
and inside the body limit, so what it buffers is at most ``max_body_bytes``. A webhook's
delivery has no credential: its route checks its body with :func:`check_json` once the
signature verifies.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dispatcher.http._errors import error_response
from treadle.errors import InvalidInput, TreadleError, UnsupportedMediaType
from treadle.runtime import JSONObject, JSONValue

_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SIGNED = re.compile(r"/v1/hooks/[^/]+")  # checked by its route (``dispatcher.http._hooks``)
# Only a body with one of these escapes can hold a string PostgreSQL refuses, so only such a
# body is walked string by string.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


class RequestGuard:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith("/v1/"):
            await self._app(scope, receive, send)
            return
        try:
            check_path(scope["path"])
            if scope["method"] in _WITH_BODY and not _SIGNED.fullmatch(scope["path"]):
                receive = await self._checked_body(scope, receive)
        except TreadleError as exc:
            await error_response(exc)(scope, receive, send)
            return
        await self._app(scope, receive, send)

    async def _checked_body(self, scope: Scope, receive: Receive) -> Receive:
        """Read the whole body, check it, and hand it on to the route as if unread."""
        chunks, last = [], None
        while True:
            message = await receive()
            if message["type"] != "http.request":
                last = message  # the client went away: the route will see it
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body.strip():
            check_media_type(Headers(scope=scope).get("content-type"))
            check_json(body)
        return _replay(body, last, receive)


def _replay(body: bytes, last: Message | None, receive: Receive) -> Receive:
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
    if last is not None:
        pending.append(last)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


def check_path(path: str) -> None:
    if _CONTROL.search(path):
        raise InvalidInput(
            "the path has a control character; names and ids never do", code="request.invalid_path"
        )


def check_media_type(content_type: str | None) -> None:
    """A body declared as anything but JSON in UTF-8 is refused; an undeclared one is JSON."""
    if content_type is None:
        return
    media, _, parameters = content_type.partition(";")
    media = media.strip().lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        charset = _charset(parameters)
        if charset in (None, "utf-8", "utf8"):
            return
    raise UnsupportedMediaType(
        f"the body must be JSON in UTF-8 (Content-Type: application/json), not {content_type!r}"
    )


def _charset(parameters: str) -> str | None:
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


def check_json(body: bytes) -> None:
    """Raise :class:`InvalidInput` unless ``body`` is JSON that every route and database can
    take as it is."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"the request body is not UTF-8 (bad byte at offset {exc.start})",
            code="request.encoding",
        ) from None
    value = _parse(text)
    if _SUSPECT_ESCAPE.search(text):
        for string in _strings(value):
            _check_string(string)


def _parse(text: str) -> Any:
    try:
        return json.loads(
            text, object_pairs_hook=_object, parse_constant=_constant, parse_float=_float
        )
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise InvalidInput(
            f"the request body is not valid JSON ({exc.msg} at {where})", code="request.json"
        ) from None
    except RecursionError:
        raise InvalidInput("the request body is nested too deeply", code="request.json") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        message = f"the request body has a number too large ({exc})"
        raise InvalidInput(message, code="request.json") from None


def _object(pairs: list[tuple[str, JSONValue]]) -> JSONObject:
    value = dict(pairs)
    if len(value) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                message = f"the key {key!r} appears twice in one object"
                raise InvalidInput(message, code="request.json")
            seen.add(key)
    return value


def _constant(name: str) -> Any:
    raise InvalidInput(f"{name} is not a JSON number", code="request.json")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidInput(f"the number {text[:40]} is too large", code="request.json")
    return value


def _strings(value: Any) -> Iterator[str]:
    """Every string in ``value``, keys too; iterative, so any depth json.loads took is fine."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            yield from item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _check_string(string: str) -> None:
    if "\x00" in string:
        raise InvalidInput(
            "strings in the request body must not contain U+0000 (\\u0000)", code="request.json"
        )
    try:
        string.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(
            "the request body has a lone surrogate escape (\\ud800-\\udfff): not valid Unicode",
            code="request.json",
        ) from None
