"""Following an instance's Server-Sent Events stream, shared by both clients.

The server sends the history first, then live events, and ends the response once the
instance has finished. A connection that drops (or goes silent for longer than the server's
keep-alive interval) is opened again with ``Last-Event-ID``, so no event is lost or repeated.
"""

from __future__ import annotations

import json
import time

import httpx
from pydantic import JsonValue, ValidationError

from treadle.client._models import StreamEvent
from treadle.client._requests import connection_failed, stream_path
from treadle.errors import NotFinished, ServerError

SILENCE_SECONDS = 60.0
"""A stream quiet for this long is taken as dropped (the server sends a keep-alive each 15 s)."""
_RECONNECT_DELAY = 0.2
_RESYNC_SECONDS = 1.0


class SseDecoder:
    """Server-Sent Events from lines (without their line ends), one :class:`StreamEvent` each."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._fields: dict[str, str] = {}

    def feed(self, line: str) -> StreamEvent | None:
        """The event that ``line`` completes (a blank line ends an event), else None."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: the keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name in ("id", "event"):
            self._fields[name] = value
        return None

    def _dispatch(self) -> StreamEvent | None:
        data, fields = "\n".join(self._data), self._fields
        self._data, self._fields = [], {}
        if not data:
            return None
        try:
            event: dict[str, JsonValue] = {"id": fields.get("id"), "type": fields.get("event")}
            event.update(json.loads(data))
            return StreamEvent.model_validate(event)
        except (ValueError, ValidationError) as exc:
            raise ServerError(f"the stream sent an event that is not valid: {exc}") from exc


class Follow:
    """Where a subscription is: the last event seen, failed reconnections, the deadline."""

    def __init__(
        self,
        url: str,
        workflow: str,
        instance_id: str,
        *,
        after: int | None = None,
        timeout: float | None = None,
        reconnects: int = 5,
    ) -> None:
        self.url = url
        self._reconnects = reconnects
        self.path = stream_path(workflow, instance_id)
        self.last_id = after
        self._failures = 0
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._connected_at = 0.0
        self._timeout = timeout
        self._opened = False
        self._decoder = SseDecoder()

    def headers(self) -> dict[str, str]:
        """The headers of the next connection; it is opened now."""
        self._connected_at = time.monotonic()
        self._decoder = SseDecoder()
        headers = {"Accept": "text/event-stream"}
        if self.last_id is not None:
            headers["Last-Event-ID"] = str(self.last_id)
        return headers

    def read_timeout(self) -> float:
        """How long one read of the next connection may block."""
        remaining = self.remaining()
        return SILENCE_SECONDS if remaining is None else min(SILENCE_SECONDS, remaining)

    def remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def opened(self) -> None:
        """The server accepted a connection: from now on a dropped one is opened again."""
        self._opened = True

    def feed(self, line: str) -> StreamEvent | None:
        """The event that ``line`` of the current connection completes, if any."""
        event = self._decoder.feed(line)
        if event is not None:
            self.last_id = event.id
            self._failures = 0
        return event

    def should_reconnect(self) -> bool:
        """Whether to open the connection again so that its read timeout fits the deadline;
        raises :class:`NotFinished` once the deadline has passed.

        Checked on every line, keep-alive comments included (they keep a read from timing
        out). A read may block for the read timeout the connection was opened with; once a
        second of it has gone, a wait with a deadline reconnects (with ``Last-Event-ID``, so
        nothing is lost) rather than overrun its deadline by that much.
        """
        self.check_deadline()
        return self._deadline is not None and (
            time.monotonic() - self._connected_at > _RESYNC_SECONDS
        )

    def check_deadline(self, status: str | None = None) -> None:
        remaining = self.remaining()
        if remaining is not None and remaining <= 0:
            raise NotFinished(self.timed_out_message(status), status=status)

    def timed_out_message(self, status: str | None) -> str:
        now = f" (it is {status})" if status else ""
        return f"the instance did not finish within {self._timeout:g} s{now}"

    def dropped(self, exc: httpx.TransportError) -> float:
        """The connection failed: how long to wait before the next one, or raise."""
        self.check_deadline()
        self._failures += 1
        if not self._opened or self._failures > self._reconnects:
            raise connection_failed(self.url, exc) from exc
        delay = min(_RECONNECT_DELAY * 2.0 ** (self._failures - 1), 5.0)
        remaining = self.remaining()
        return delay if remaining is None else min(delay, remaining)
