"""A cap on request bodies, enforced before they are read into memory."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dispatcher.http._errors import error_response
from treadle.errors import InvalidInput, TooLarge


class BodyLimit:
    """Refuse bodies over ``max_bytes``: by their Content-Length at once, or, when they come in
    chunks, as soon as the chunks read exceed it (the route then fails with 413)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self._app = app
        self._max = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        try:
            declared = _content_length(Headers(scope=scope))
        except InvalidInput as exc:
            await error_response(exc)(scope, receive, send)
            return
        if declared is not None and declared > self._max:
            await error_response(self._too_large())(scope, receive, send)
            return
        await self._app(scope, self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self._max:
                raise self._too_large()
            return message

        return counted

    def _too_large(self) -> TooLarge:
        return TooLarge(f"the request body is larger than {self._max} bytes")


def _content_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise InvalidInput("the Content-Length header is not a number")
    return int(value)
