"""The HTTP listener's bookkeeping: notices once per interval, caps on connections, the budget
of descriptors, and the answers it writes without parsing a request."""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import pytest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from dispatcher import Settings
from dispatcher.http._listener import Gate, Limits, Listener, connection_budget, raw_response
from dispatcher.http._notices import Notices
from treadle.errors import RequestTimeout


class Later:
    """A scheduler that runs its callbacks when told to, as a clock advanced by hand."""

    def __init__(self) -> None:
        self.pending: list[tuple[float, Callable[[], None]]] = []

    def __call__(self, delay: float, callback: Callable[[], None]) -> object:
        self.pending.append((delay, callback))
        return None

    def run(self) -> None:
        due, self.pending = self.pending, []
        for _, callback in due:
            callback()


@pytest.fixture
def later() -> Later:
    return Later()


def _notices(later: Later) -> Notices:
    return Notices(logging.getLogger("test.notices"), 10.0, later)


def test_a_flood_of_events_is_one_line_now_and_one_per_interval(
    later: Later, caplog: pytest.LogCaptureFixture
) -> None:
    notices = _notices(later)
    with caplog.at_level(logging.WARNING, "test.notices"):
        for _ in range(1000):
            notices.note("head", "closed {count} connection(s)")
        assert caplog.messages == ["closed 1 connection(s)"]
        assert [delay for delay, _ in later.pending] == [10.0]
        later.run()  # the interval ends
        assert caplog.messages[1] == "closed 999 connection(s) (in the last 10 s)"
        notices.note("head", "closed {count} connection(s)")
        later.run()
        later.run()  # a quiet interval closes the window: the next event is logged at once
        notices.note("head", "closed {count} connection(s)")
    assert caplog.messages[2:] == [
        "closed 1 connection(s) (in the last 10 s)",
        "closed 1 connection(s)",
    ]


def test_kinds_are_counted_apart_and_texts_are_not_formatted(
    later: Later, caplog: pytest.LogCaptureFixture
) -> None:
    notices = _notices(later)
    with caplog.at_level(logging.WARNING, "test.notices"):
        notices.note("a", "from fe80::1%eth0 {x} {count}")
        notices.note("b", "b {count}")
    assert caplog.messages == ["from fe80::1%eth0 {x} 1", "b 1"]


def _limits(**overrides: object) -> Limits:
    values: dict[str, object] = {
        "header_timeout": 1.0,
        "body_timeout": 1.0,
        "max_requests": 10,
        "max_connections": 5,
        "max_per_client": 2,
        **overrides,
    }
    return Limits(**values)  # type: ignore[arg-type]


def test_the_gate_counts_per_address_and_in_all(later: Later) -> None:
    gate = Gate(_limits(), _notices(later))
    assert gate.admit("10.0.0.1") is None
    assert gate.admit("10.0.0.1") is None
    crowded = gate.admit("10.0.0.1")
    assert crowded is not None and crowded.startswith(b"HTTP/1.1 429 ")
    assert b'"connections.too_many"' in crowded and b"retry-after: 1" in crowded
    assert [gate.admit(f"10.0.0.{n}") for n in (2, 3, 4)] == [None, None, None]
    busy = gate.admit("10.0.0.9")
    assert busy is not None and busy.startswith(b"HTTP/1.1 503 ")
    assert b'"server.busy"' in busy
    gate.release("10.0.0.1")
    assert gate.admit("10.0.0.1") is None  # its slot came back


def test_unlimited_clients_meet_only_the_cap_of_the_server(later: Later) -> None:
    settings = Settings(http_unlimited_clients="127.0.0.0/8, ::1")
    gate = Gate(_limits(unlimited=settings.unlimited_clients()), _notices(later))
    assert [gate.admit("127.0.0.1") for _ in range(5)] == [None] * 5
    assert gate.admit("::1") is not None  # the server is full
    with pytest.raises(ValueError, match="http_unlimited_clients"):
        Settings(http_unlimited_clients="localhost")


def test_the_budget_leaves_descriptors_for_the_database_and_the_sandboxes() -> None:
    settings = Settings(db_pool_size=10, sandbox_processes=32)
    assert connection_budget(settings, 20_000) == 20_000 - (256 + 40 + 256)
    assert connection_budget(settings, 1024) == 1024 - 552
    assert connection_budget(settings, 256) == 64  # never nothing at all
    assert Limits.of(settings, 20_000).max_connections == connection_budget(settings, 20_000)
    assert Limits.of(Settings(http_max_connections=7), 20_000).max_connections == 7


def test_the_soft_limit_on_open_files_is_raised_to_the_hard_one() -> None:
    code = (
        "import resource as r\n"
        "from dispatcher.http._listener import raise_open_files_limit\n"
        "soft, hard = r.getrlimit(r.RLIMIT_NOFILE)\n"
        "r.setrlimit(r.RLIMIT_NOFILE, (min(256, soft), hard))\n"
        "now = raise_open_files_limit()\n"
        "assert now == r.getrlimit(r.RLIMIT_NOFILE)[0], now\n"
        "assert now == (hard if hard != r.RLIM_INFINITY else min(256, soft)), (now, hard)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)  # not this process's limit


def test_a_raw_answer_is_a_whole_response_that_closes() -> None:
    answer = raw_response(RequestTimeout("too slow"))
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 408 Request Timeout"
    assert "connection: close" in lines
    assert f"content-length: {len(body)}" in lines
    assert body == b'{"error":{"code":"request.timeout","message":"too slow"}}'


# -- the protocol, behind a real listener on a free port, before a tiny application ------------

DEADLINE = 0.5


async def _echo(request: Request) -> Response:
    try:
        body = await request.body()
    except ClientDisconnect:  # the body deadline passed: what is answered now goes nowhere
        return Response(status_code=400)
    return JSONResponse({"length": len(body)})


async def _ok(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def _stream(request: Request) -> Response:
    async def ticks() -> AsyncIterator[str]:
        for n in range(5):  # 1.5 s in all: three deadlines' worth
            yield f"data: {n}\n\n"
            await asyncio.sleep(0.3)

    return StreamingResponse(ticks(), media_type="text/event-stream")


APP = Starlette(
    routes=[
        Route("/echo", _echo, methods=["POST"]),
        Route("/ok", _ok, methods=["GET"]),
        Route("/stream", _stream, methods=["GET"]),
    ]
)


@dataclass
class Running:
    listener: Listener
    port: int

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        return sock


@pytest.fixture
def running() -> Iterator[Running]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    settings = Settings(
        http_header_timeout=DEADLINE,
        http_body_timeout=DEADLINE,
        http_keep_alive_timeout=5,
        http_max_requests_per_connection=3,
        log_level="warning",
    )
    listener = Listener(APP, settings, Limits.of(settings, 1024))
    thread = threading.Thread(target=listener.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not listener.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the listener did not start"
        time.sleep(0.01)
    try:
        yield Running(listener, sock.getsockname()[1])
    finally:
        listener.should_exit = True
        thread.join(10)
        sock.close()


def _read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    started, data = time.monotonic(), b""
    while chunk := sock.recv(65536):
        data += chunk
    return data, time.monotonic() - started


def _responses(data: bytes) -> list[int]:
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]


def test_a_connection_that_sends_nothing_is_closed_at_the_header_deadline(
    running: Running,
) -> None:
    with running.connect() as sock:
        data, took = _read_until_closed(sock)
    assert data == b""  # it asked nothing: it is told nothing
    assert DEADLINE - 0.05 <= took < DEADLINE + 1.0


def test_a_head_sent_a_byte_at_a_time_is_answered_408_at_the_deadline(running: Running) -> None:
    with running.connect() as sock:
        started = time.monotonic()
        for byte in b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
            try:
                sock.send(bytes([byte]))
            except OSError:
                break
            time.sleep(0.05)
        data, _ = _read_until_closed(sock)
    assert time.monotonic() - started < DEADLINE + 1.0
    assert _responses(data) == [408]
    assert b'"request.timeout"' in data and b"head" in data


def test_a_body_must_arrive_within_the_body_deadline(running: Running) -> None:
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"
    with running.connect() as sock:
        sock.sendall(head + b"01234")
        time.sleep(DEADLINE / 2)
        sock.sendall(b"56789")  # in time: answered
        sock.sendall(head + b"0")
        data, took = _read_until_closed(sock)
    assert _responses(data) == [200, 408]
    assert b'{"length":10}' in data and b"body" in data
    assert took < DEADLINE + 1.0


def test_a_response_under_way_has_no_deadline(running: Running) -> None:
    with running.connect() as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data, took = _read_until_closed(sock)
    assert _responses(data) == [200]
    assert all(f"data: {n}".encode() in data for n in range(5))
    assert took > 2 * DEADLINE


def test_a_kept_alive_connection_serves_so_many_requests_then_closes(running: Running) -> None:
    request = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"
    with running.connect() as sock:
        sock.sendall(request * 5)  # pipelined: all at once
        data, took = _read_until_closed(sock)
    assert _responses(data) == [200, 200, 200]
    assert data.lower().count(b"connection: close") == 1  # the third says it is the last
    assert took < DEADLINE  # at once after the third, not at a deadline


def test_malformed_requests_are_answered_400_and_noted_once(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    too_big = b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000  # and not ended
    with caplog.at_level(logging.WARNING):
        for n in range(20):
            with running.connect() as sock:
                sock.sendall(too_big if n % 2 else b"NOT HTTP AT ALL\r\n\r\n")
                data, _ = _read_until_closed(sock)
            assert _responses(data) == [400]
    noted = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert noted == ["answered 400 to 1 malformed request(s)"]
    assert not [r for r in caplog.records if "Invalid HTTP request" in r.getMessage()]


def test_an_accept_out_of_descriptors_is_noted_not_raised(
    later: Later, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings()
    listener = Listener(APP, settings, Limits.of(settings, 1024))
    listener.notices = _notices(later)
    loop = asyncio.new_event_loop()
    try:
        context = {
            "message": "socket.accept() out of system resource",
            "exception": OSError(errno.EMFILE, "Too many open files"),
        }
        with caplog.at_level(logging.WARNING):
            for _ in range(100):
                listener._loop_error(loop, context)
    finally:
        loop.close()
    assert [r.getMessage() for r in caplog.records] == [
        "accept failed 1 time(s): Too many open files; trying again each second"
    ]
    assert not any(r.exc_info for r in caplog.records)
