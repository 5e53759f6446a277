"""Following an instance's Server-Sent Events stream, shared by both clients.

The server sends the history first, then live events, and ends the response once the
instance has finished. A stream that stops before that is opened again with
``Last-Event-ID``, so no event is lost or repeated: its connection failed, dropped or went
silent for longer than the server's keep-alive interval; the server answered 429, 502, 503 or
504 (it is starting, stopping or busy); or the server said it was going away
(``server.closing``, sent when it stops). The waits between attempts double from
:data:`FIRST_DELAY` to :data:`MAX_DELAY`, and start from the first again once the server
sends anything. An answer that will not change by asking again (401, 404, ...) is raised at once.
"""

from __future__ import annotations

import json
import logging
import time

import httpx
from pydantic import JsonValue, ValidationError

from treadle.client._models import StreamEvent
from treadle.client._requests import connection_failed, error_of, stream_path
from treadle.errors import (
    ConnectionFailed,
    NotFinished,
    QuotaExceeded,
    ServerError,
    Unavailable,
)

SILENCE_SECONDS = 60.0
"""A stream quiet for this long is taken as dropped (the server sends a keep-alive each 15 s)."""
FIRST_DELAY = 0.2
"""Seconds before the first attempt to open a stream again."""
MAX_DELAY = 5.0
"""The longest wait between two attempts."""
CLOSING = "server.closing"
"""The last event of a stream the server ends because it is stopping."""
_RETRY_STATUSES = frozenset({429, 502, 503, 504})
# One line when a stream is lost and one when it is back, not one per attempt; the CLI prints
# them on stderr.
_log = logging.getLogger("treadle.client")
_RESYNC_SECONDS = 1.0


class SseDecoder:
    """Server-Sent Events from lines (without their line ends), one :class:`StreamEvent` each."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._fields: dict[str, str] = {}
        self.closing: float | None = None
        """Once the server said it is going away: seconds to wait before connecting again."""

    def feed(self, line: str) -> StreamEvent | None:
        """The event that ``line`` completes (a blank line ends an event), else None.

        ``server.closing`` is not an event of the instance: it sets :attr:`closing` instead.
        """
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: the keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name in ("id", "event", "retry"):
            self._fields[name] = value
        return None

    def _dispatch(self) -> StreamEvent | None:
        data, fields = "\n".join(self._data), self._fields
        self._data, self._fields = [], {}
        if fields.get("event") == CLOSING:
            retry = fields.get("retry", "")
            self.closing = int(retry) / 1000 if retry.isascii() and retry.isdigit() else 1.0
            return None
        if not data:
            return None
        try:
            event: dict[str, JsonValue] = {"id": fields.get("id"), "type": fields.get("event")}
            event.update(json.loads(data))
            return StreamEvent.model_validate(event)
        except (ValueError, ValidationError) as exc:
            raise ServerError(f"the stream sent an event that is not valid: {exc}") from exc


class Follow:
    """Where a subscription is: the last event seen, the attempts to reconnect, the deadline.

    ``reconnects`` bounds the attempts in a row that bring no event (None: no bound, the
    stream is followed for as long as it is read); past it the last failure is raised.
    """

    def __init__(
        self,
        url: str,
        workflow: str,
        instance_id: str,
        *,
        after: int | None = None,
        timeout: float | None = None,
        reconnects: int | None = None,
    ) -> None:
        self.url = url
        self.workflow = workflow
        self.instance_id = instance_id
        self._reconnects = reconnects
        self.path = stream_path(workflow, instance_id)
        self.last_id = after
        self.finished = False
        """Whether the last event said the instance ended: the stream is over."""
        self._failures = 0
        self._lost = False  # said so, and not yet back
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._connected_at = 0.0
        self._timeout = timeout
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

    def feed(self, line: str) -> StreamEvent | None:
        """The event that ``line`` of the current connection completes, if any."""
        if self._lost:
            self._lost = False
            _log.info("reconnected to %s", self.url)
        self._failures = 0  # the server is there and sending (a keep-alive counts too)
        event = self._decoder.feed(line)
        if event is not None:
            self.last_id = event.id
            self.finished = event.final
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

    def unexplained_end(self) -> bool:
        """The stream ended by itself, neither with the instance's end nor because the
        server is stopping: ask the instance whether it has finished (an ``after`` past its
        last event sees nothing more) before opening the stream again."""
        return not self.finished and self._decoder.closing is None

    def ended(self) -> float:
        """The stream ended before the instance did: how long to wait before opening it
        again (what the server asked for, if it is stopping), or raise."""
        closing = self._decoder.closing
        why = "the stream ended early" if closing is None else "the server is going away"
        delay = self._next_delay(
            why, ConnectionFailed(f"the stream from {self.url} kept ending before it finished")
        )
        return delay if closing is None else self._bounded(max(delay, min(closing, MAX_DELAY)))

    def dropped(self, exc: httpx.TransportError) -> float:
        """The connection failed: how long to wait before the next one, or raise."""
        error = connection_failed(self.url, exc)
        return self._next_delay(error.message, error, cause=exc)

    def refused(self, response: httpx.Response) -> float:
        """The server answered an error (read in full): how long to wait before asking again
        if it is starting, stopping or busy; else (or past ``reconnects``) it is raised."""
        error = error_of(response)
        if response.status_code not in _RETRY_STATUSES:
            raise error
        delay = self._next_delay(f"the server answered {response.status_code}", error)
        asked = error.retry_after if isinstance(error, QuotaExceeded | Unavailable) else 0.0
        return self._bounded(max(delay, min(asked, MAX_DELAY)))

    def _next_delay(self, why: str, error: Exception, cause: Exception | None = None) -> float:
        self.check_deadline()
        self._failures += 1
        if self._reconnects is not None and self._failures > self._reconnects:
            raise error from cause
        if not self._lost:
            self._lost = True
            _log.info("%s; reconnecting", why)
        return self._bounded(min(FIRST_DELAY * 2.0 ** (self._failures - 1), MAX_DELAY))

    def _bounded(self, delay: float) -> float:
        remaining = self.remaining()
        return delay if remaining is None else min(delay, remaining)
