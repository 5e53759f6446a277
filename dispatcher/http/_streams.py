"""The live event stream of an instance over HTTP (Server-Sent Events).

``GET .../stream`` sends the instance's history first, then live events, until the instance
has finished. The history (and whatever a stream falls behind by) is read by the stream, in
batches, on a few threads kept for streams; live events come from the process's one
:class:`~dispatcher.http._notifier.Notifier`, which also counts the streams (429 past a cap) and
ends those whose key stops working.

When the server begins to stop, every stream ends with one last event, ``server.closing``,
whose SSE ``retry:`` field and ``retry_ms`` tell the client when to connect again. It has no
``id:``: the client's ``Last-Event-ID`` stays the last event it was sent, so it resumes exactly
where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from dispatcher._settings import Settings
from dispatcher.http._instances import caller_of, ids_of, query_of
from dispatcher.http._notifier import BUFFER, CLOSING_END, Notifier, Subscription
from dispatcher.http._routing import Handlers, routes
from engine import FINISHED, MAX_ROW_ID, Engine, HistoryEvent
from storage import iso
from tenants import Caller, TenantStore
from treadle.errors import InvalidInput, NotFound, Unauthorized

_KEEPALIVE_SECONDS = 15.0
_CHECK_SECONDS = 1.0  # how often an idle stream looks whether its client went away
_BATCH = 500
_READERS = 4  # history reads of streams at once, beside the API's pool and the notifier
_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_Batch = tuple[int, list[HistoryEvent], str] | None  # see StreamApi._history
# A restart takes a second or two: sooner, the client would only find the port closed.
_RECONNECT_MS = 1000
CLOSING_EVENT = (
    f"retry: {_RECONNECT_MS}\nevent: server.closing\n"
    f"data: {json.dumps({'type': 'server.closing', 'retry_ms': _RECONNECT_MS})}\n\n"
)


class StreamApi:
    def __init__(
        self, engine: Engine, tenants: TenantStore, settings: Settings, *, buffer: int = BUFFER
    ) -> None:
        self._engine = engine
        self._tenants = tenants
        self.notifier = Notifier(
            engine,
            tenants,
            sse,
            max_streams=settings.max_streams,
            max_per_tenant=settings.max_streams_per_tenant,
            buffer=buffer,
        )
        self._limiter: anyio.CapacityLimiter | None = None

    def handlers(self) -> Handlers:
        return {"stream": self.stream}

    def routes(self) -> list[Route]:
        return routes(self.handlers())

    async def stream(self, request: Request) -> Response:
        """History first, then live events, until the instance has finished."""
        caller, (name, instance_id) = caller_of(request), ids_of(request)
        after = _last_event_id(request)
        subscription = self.notifier.open(caller)  # 429 past a cap, before any read
        subscription.cursor = after
        try:
            # A 404 here, before the stream starts, for an unknown instance.
            first = await self._read(caller, name, instance_id, after)
            if first is None:
                raise Unauthorized("invalid API key")  # deleted since it was checked
        except BaseException:
            self.notifier.close(subscription)
            raise
        events = self._events(request, subscription, (caller, name, instance_id), first)
        return _EventStream(events, lambda: self.notifier.close(subscription))

    def close_all(self) -> None:
        """The server is stopping: end every stream with ``server.closing``; refuse new ones."""
        self.notifier.close_all()

    async def _read(self, caller: Caller, name: str, instance_id: str, after: int) -> _Batch:
        if self._limiter is None:  # made on first use: a limiter belongs to its event loop
            self._limiter = anyio.CapacityLimiter(_READERS)
        return await anyio.to_thread.run_sync(
            self._history, caller, name, instance_id, after, limiter=self._limiter
        )

    def _history(self, caller: Caller, name: str, instance_id: str, after: int) -> _Batch:
        """A batch of the instance's history after ``after``, or None if the caller's key has
        stopped working: checked after the read, so nothing committed since is sent."""
        batch = self._engine.instance_history(caller.tenant_id, name, instance_id, after, _BATCH)
        return batch if self._tenants.live_keys({caller.key_id}) else None

    async def _events(
        self,
        request: Request,
        subscription: Subscription,
        instance: tuple[Caller, str, str],
        first: tuple[int, list[HistoryEvent], str],
    ) -> AsyncIterator[str]:
        """The stream's events; the last one says so when the server cut it short to stop."""
        history = self._history_then_live(request, subscription, instance, first)
        async with contextlib.aclosing(history) as events:
            async for text in events:
                yield text
        if subscription.ended == CLOSING_END:
            yield CLOSING_EVENT

    async def _history_then_live(
        self,
        request: Request,
        subscription: Subscription,
        instance: tuple[Caller, str, str],
        first: tuple[int, list[HistoryEvent], str],
    ) -> AsyncGenerator[str, None]:
        pk, rows, status = first
        while True:
            # From the database until caught up (at first, and after falling behind) ...
            for row in rows:
                if subscription.ended is not None:
                    return  # its key stopped working meanwhile
                subscription.cursor = row["pk"]
                yield sse(row)
            if len(rows) < _BATCH:
                if status in FINISHED:
                    return
                # ... then from the notifier, until the end or until it falls behind.
                self.notifier.watch(subscription, pk)
                async with contextlib.aclosing(self._live(request, subscription)) as live:
                    async for text in live:
                        yield text
                if subscription.ended is not None or not subscription.behind:
                    return
            try:
                batch = await self._read(*instance, subscription.cursor)
            except NotFound:
                return  # deleted while streaming
            if batch is None:
                return  # its key stopped working
            pk, rows, status = batch

    async def _live(
        self, request: Request, subscription: Subscription
    ) -> AsyncGenerator[str, None]:
        quiet_since = time.monotonic()
        while True:
            while subscription.pending:
                yield subscription.pending.popleft()[1]
                quiet_since = time.monotonic()
            if subscription.ended is not None or subscription.behind:
                return
            subscription.ready.clear()
            try:
                async with asyncio.timeout(_CHECK_SECONDS):
                    await subscription.ready.wait()
            except TimeoutError:
                if await request.is_disconnected():
                    return
                if time.monotonic() - quiet_since > _KEEPALIVE_SECONDS:
                    quiet_since = time.monotonic()
                    yield ": keep-alive\n\n"


class _EventStream(StreamingResponse):
    """An SSE response that gives its stream back to the notifier however it ends, even when
    the client left before its first byte (and so before its generator ran)."""

    def __init__(self, events: AsyncIterator[str], closed: Callable[[], None]) -> None:
        super().__init__(events, media_type="text/event-stream", headers=_HEADERS)
        self._closed = closed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._closed()


def sse(row: HistoryEvent) -> str:
    """A history event as one Server-Sent Event."""
    event = {
        "id": row["pk"],
        "type": row["type"],
        "ts": iso(row["ts"]),
        "step": row["step"],
        "data": row["data"],
    }
    return f"id: {row['pk']}\nevent: {row['type']}\ndata: {json.dumps(event)}\n\n"


def _last_event_id(request: Request) -> int:
    """The Last-Event-ID header, else the ``after`` query parameter; both are checked."""
    header = _event_id(request.headers.get("last-event-id"), "Last-Event-ID")
    after = _event_id(query_of(request, "after").get("after"), "after")
    return header if header is not None else after or 0


def _event_id(value: str | None, what: str) -> int | None:
    if value is None:
        return None
    # (the length first: int() refuses more than 4300 digits)
    if not (value.isascii() and value.isdigit()) or len(value) > 19 or int(value) > MAX_ROW_ID:
        raise InvalidInput(f"{what} must be an event id from 0 to {MAX_ROW_ID}, not {value[:40]!r}")
    return int(value)
