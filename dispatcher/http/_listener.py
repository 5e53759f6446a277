"""The HTTP listener of ``treadle serve``: uvicorn, with deadlines and caps on connections.

Without a reverse proxy in front, the listener alone stands between the API and every client
that can reach it, so it bounds what one of them can hold:

- the head of a request must arrive within ``http_header_timeout`` seconds of the connection
  (or of the previous response on a kept-alive one), its body within ``http_body_timeout`` of
  the head. Both are total deadlines: trickling a byte at a time does not extend them. A
  response under way, such as an event stream, has none: it is the server that is sending.
- at most ``http_max_connections`` are open at once (by default what the limit on open files
  leaves), at most ``http_max_connections_per_client`` from one address. Past either, a new
  connection is answered at once, without being read, and closed: it costs a file descriptor
  for a moment, never until a deadline.
- a kept-alive connection is closed after ``http_keep_alive_timeout`` idle seconds or
  ``http_max_requests_per_connection`` requests.

Everything a client can make happen once per connection (a refusal, a deadline passed, an
accept that failed for want of file descriptors, a malformed request) is logged through
:class:`~dispatcher.http._notices.Notices`: one line per kind per interval at most.

The protocol is uvicorn's h11 one, pinned: the hooks below rely on how it drives a request
(``cycle``, ``on_response_complete``); its httptools sibling differs, and is not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Any, ClassVar

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from dispatcher._settings import Settings
from dispatcher.http._errors import error_response
from dispatcher.http._notices import Notices
from treadle.errors import RequestTimeout, TooManyConnections, TreadleError, Unavailable

NOTICE_INTERVAL = 10.0
# On stopping, how long requests under way may take to be answered; then they are cancelled.
# Live streams end at once (``on_shutdown``), so only slow requests ever wait this long.
DRAIN_SECONDS = 5
_log = logging.getLogger("treadle.http")
# What asyncio's accept loop reports when the process or the system is out of descriptors or
# memory; it then stops accepting for a second by itself.
_ACCEPT_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# uvicorn's protocol warns once per bad request, by these words; they become notices (None:
# dropped, a line that only ever follows another).
_PROTOCOL_WARNINGS: tuple[tuple[str, tuple[str, str] | None], ...] = (
    ("Invalid HTTP request", ("invalid", "answered 400 to {count} malformed request(s)")),
    ("Unsupported upgrade", ("upgrade", "ignored {count} request(s) to upgrade the protocol")),
    ("No supported WebSocket", None),
)


@dataclass(frozen=True)
class Limits:
    """What one listener allows; see the module's docstring."""

    header_timeout: float
    body_timeout: float
    max_requests: int
    max_connections: int
    max_per_client: int
    unlimited: tuple[IPv4Network | IPv6Network, ...] = ()

    @classmethod
    def of(cls, settings: Settings, open_files: int) -> Limits:
        """The limits ``settings`` ask for, with ``open_files`` descriptors to go round."""
        budget = connection_budget(settings, open_files)
        return cls(
            header_timeout=settings.http_header_timeout,
            body_timeout=settings.http_body_timeout,
            max_requests=settings.http_max_requests_per_connection,
            max_connections=settings.http_max_connections or budget,
            max_per_client=settings.http_max_connections_per_client,
            unlimited=settings.unlimited_clients(),
        )


def connection_budget(settings: Settings, open_files: int) -> int:
    """The connections ``open_files`` descriptors leave room for.

    The rest is kept for the database pool (a SQLite connection holds the file, its WAL and
    its shared memory), the pipes of the sandbox processes, the listening sockets, logs and
    the files a request reads: run short of those and a request fails halfway instead of
    being refused at the door.
    """
    reserved = 256 + 4 * settings.db_pool_size + 8 * settings.sandbox_processes
    return max(open_files - reserved, open_files // 4)


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # a container may forbid it: keep what we have
            _log.warning("could not raise the limit on open files to %d (%s)", hard, exc)
        else:
            soft = hard
    return soft


class Gate:
    """Counts the open connections, in all and per client address; refuses those past a cap."""

    def __init__(self, limits: Limits, notices: Notices) -> None:
        self.limits = limits
        self.notices = notices
        self._open = 0
        self._by_client: Counter[str] = Counter()
        self._busy = raw_response(
            Unavailable(
                "the server has as many connections open as it can take; try again shortly",
                code="server.busy",
            )
        )
        self._crowded = raw_response(
            TooManyConnections(
                f"at most {limits.max_per_client} connections may be open from one address; "
                "close some and try again"
            )
        )

    def admit(self, client: str) -> bytes | None:
        """Count a new connection from ``client``; or, if it is refused, the answer to it."""
        if self._open >= self.limits.max_connections:
            cap = self.limits.max_connections
            self.notices.note("busy", f"refused {{count}} connection(s): {cap} were open")
            return self._busy
        if self._by_client[client] >= self.limits.max_per_client and not self._unlimited(client):
            cap = self.limits.max_per_client
            text = f"refused {{count}} connection(s) past {cap} from one address (last: {client})"
            self.notices.note("crowded", text)
            return self._crowded
        self._open += 1
        self._by_client[client] += 1
        return None

    def release(self, client: str) -> None:
        self._open -= 1
        self._by_client[client] -= 1
        if self._by_client[client] <= 0:
            del self._by_client[client]

    def _unlimited(self, client: str) -> bool:
        if not self.limits.unlimited:
            return False
        try:
            address = ip_address(client)
        except ValueError:
            return False
        return any(address in network for network in self.limits.unlimited)


def raw_response(exc: TreadleError) -> bytes:
    """``exc`` as a whole HTTP/1.1 response that closes the connection, for writing unparsed."""
    response = error_response(exc)
    lines = [f"HTTP/1.1 {response.status_code} {HTTPStatus(response.status_code).phrase}"]
    lines += [f"{name.decode()}: {value.decode()}" for name, value in response.raw_headers]
    lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + bytes(response.body)


_HEAD_TIMEOUT = raw_response(RequestTimeout("the request head did not arrive in time"))
_BODY_TIMEOUT = raw_response(RequestTimeout("the request body did not arrive in time"))


class GuardedProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, admitted by a :class:`Gate` and held to its deadlines."""

    gate: ClassVar[Gate]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._host = ""
        self._admitted = False
        self._timer: asyncio.TimerHandle | None = None
        self._awaiting: str | None = None  # "head" or "body": what the timer is for
        self._partial = False  # some of a request head has come
        self._requests = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._host = self.client[0] if self.client else ""
        refusal = self.gate.admit(self._host)
        if refusal is not None:
            transport.write(refusal)
            transport.close()
            return
        self._admitted = True
        self._expect("head", self.gate.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        if self._admitted:
            self._admitted = False
            self.gate.release(self._host)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        before = self.cycle
        self._partial = self._partial or self._awaiting == "head"
        super().data_received(data)
        self._after_events(before)

    def on_response_complete(self) -> None:
        before = self.cycle
        super().on_response_complete()
        if self.transport.is_closing():
            self._cancel()
        elif self.cycle is before:  # no pipelined request began: the next head is due
            self._expect("head", self.gate.limits.header_timeout)
        else:
            self._after_events(before)

    def _after_events(self, before: Any) -> None:
        cycle = self.cycle
        if cycle is not None and cycle is not before:  # a request's head has come
            self._partial = False
            self._requests += 1
            if self._requests >= self.gate.limits.max_requests:
                # The answer says so, so that the client does not send another on it.
                cycle.default_headers = [*cycle.default_headers, (b"connection", b"close")]
                cycle.keep_alive = False
            if cycle.more_body:
                self._expect("body", self.gate.limits.body_timeout)
            else:
                self._cancel()
        elif self._awaiting == "body" and cycle is not None and not cycle.more_body:
            self._cancel()

    def _expect(self, what: str, seconds: float) -> None:
        self._cancel()
        self._awaiting = what
        self._timer = self.loop.call_later(seconds, self._expired)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._awaiting = None, None

    def _expired(self) -> None:
        awaiting, self._timer, self._awaiting = self._awaiting, None, None
        if self.transport.is_closing():
            return
        if awaiting == "head":
            self._head_expired()
        else:
            self._body_expired()
        self.transport.close()

    def _head_expired(self) -> None:
        if self._partial:
            self.transport.write(_HEAD_TIMEOUT)
        if self._partial or self._requests == 0:  # not a kept-alive connection left idle
            seconds = self.gate.limits.header_timeout
            text = f"closed {{count}} connection(s) with no request head within {seconds:g} s"
            self.gate.notices.note("head", text)

    def _body_expired(self) -> None:
        cycle = self.cycle
        if not cycle.response_started:
            self.transport.write(_BODY_TIMEOUT)
        # What the application reads next is the end of the connection; whatever it answers
        # goes nowhere.
        cycle.disconnected = True
        cycle.message_event.set()
        seconds = self.gate.limits.body_timeout
        text = f"closed {{count}} connection(s) with no complete request body within {seconds:g} s"
        self.gate.notices.note("body", text)


def _bound(gate: Gate) -> type[GuardedProtocol]:
    class Protocol(GuardedProtocol):
        pass

    Protocol.gate = gate
    return Protocol


class _ProtocolWarnings(logging.Filter):
    """Turns uvicorn's warning per bad request into notices."""

    def __init__(self, notices: Notices) -> None:
        super().__init__()
        self._notices = notices

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        for words, notice in _PROTOCOL_WARNINGS:
            if message.startswith(words):
                if notice is not None:
                    self._notices.note(*notice)
                return False
        return True


class _CancelledAtShutdown(logging.Filter):
    """Drops uvicorn's traceback of a request cancelled past :data:`DRAIN_SECONDS`: the
    shutdown cancelled it on purpose, and said so in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, asyncio.CancelledError)


class Listener(uvicorn.Server):
    """uvicorn serving ``app`` on ``settings.host:port`` within :class:`Limits`.

    It leaves SIGINT and SIGTERM to its caller, which sets ``should_exit`` to stop it. As it
    begins to stop it calls ``on_shutdown`` (which ends the live streams), then gives the
    requests under way :data:`DRAIN_SECONDS` to be answered.
    """

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        limits: Limits,
        on_shutdown: Callable[[], None] = lambda: None,
    ) -> None:
        self.limits = limits
        self._on_shutdown = on_shutdown
        self.notices = Notices(_log, NOTICE_INTERVAL, _call_later)
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            # JSON logs: uvicorn's loggers go through the root's JSON handler, not their own.
            log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
            http=_bound(Gate(limits, self.notices)),
            ws="none",  # no route takes a WebSocket; an upgraded one would escape the gate
            timeout_keep_alive=settings.http_keep_alive_timeout,
            backlog=settings.http_backlog,
            h11_max_incomplete_event_size=settings.http_max_head_bytes,
            timeout_graceful_shutdown=DRAIN_SECONDS,
        )
        super().__init__(config)
        self._warnings = _ProtocolWarnings(self.notices)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn's own handlers would raise the signal again once it has stopped, and take a
        # second Ctrl-C to mean "cancel everything", with a traceback per task.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        asyncio.get_running_loop().set_exception_handler(self._loop_error)
        logging.getLogger("uvicorn.error").addFilter(self._warnings)
        await super().startup(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._on_shutdown()
        cancelled = _CancelledAtShutdown()
        logging.getLogger("uvicorn.error").addFilter(cancelled)
        try:
            await super().shutdown(sockets)
        finally:
            logging.getLogger("uvicorn.error").removeFilter(self._warnings)
            logging.getLogger("uvicorn.error").removeFilter(cancelled)

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if (
            isinstance(exc, OSError)
            and exc.errno in _ACCEPT_ERRORS
            and "accept" in str(context.get("message", ""))
        ):
            why = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
            text = f"accept failed {{count}} time(s): {why}; trying again each second"
            self.notices.note("accept", text)
            return
        loop.default_exception_handler(context)


def _call_later(delay: float, callback: Any) -> object:
    return asyncio.get_running_loop().call_later(delay, callback)
