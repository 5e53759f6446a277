"""The client's parts that need no server: error mapping, the SSE decoder, reconnection.

tests/integration/test_sdk.py drives the client against a real server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from dispatcher import STATUS, error_response
from sandbox.restricted._policy import restricted_import
from tests.unit.test_sandbox_policy import probe
from treadle import Client
from treadle.client._requests import error_of
from treadle.client._stream import SseDecoder
from treadle.errors import (
    AlreadyExists,
    CodeInvalid,
    ConnectionFailed,
    InvalidDuration,
    NotFinished,
    NotFound,
    QuotaExceeded,
    ServerError,
    TreadleError,
)


def test_tenant_code_cannot_reach_the_client() -> None:
    facade = restricted_import("treadle")
    assert not hasattr(facade, "Client") and not hasattr(facade, "AsyncClient")
    assert probe("import treadle\nreturn str(getattr(treadle, 'Client', None))")["output"] == "None"
    with pytest.raises(CodeInvalid, match="1 problem") as raised:
        probe("from treadle import Client\nreturn 1")
    assert "no 'Client' available" in raised.value.problems[0]["message"]


def _answer(exc: TreadleError) -> httpx.Response:
    """What the server's own error handling sends for ``exc``."""
    sent = error_response(exc)
    return httpx.Response(sent.status_code, headers=dict(sent.headers), content=sent.body)


@pytest.mark.parametrize("cls", sorted(STATUS, key=lambda c: c.__name__))
def test_every_error_of_the_server_table_comes_back_as_its_class(
    cls: type[TreadleError],
) -> None:
    if cls is CodeInvalid:
        sent: TreadleError = CodeInvalid(problems=[{"line": 3, "column": 1, "message": "no"}])
    elif cls is QuotaExceeded:
        sent = QuotaExceeded("slow down", retry_after=2.5)
    else:
        sent = cls("it went wrong", code="thing." + cls.code)
    got = error_of(_answer(sent))
    assert type(got) is cls
    assert (got.code, got.message) == (sent.code, sent.message)
    if isinstance(got, CodeInvalid):
        assert got.problems == [{"line": 3, "column": 1, "message": "no"}]
    if isinstance(got, QuotaExceeded):
        assert got.retry_after == 3  # the header is whole seconds, rounded up


def test_codes_name_subclasses_and_other_answers_still_map() -> None:
    assert type(error_of(_answer(AlreadyExists(code="instance.already_exists")))) is AlreadyExists
    assert type(error_of(_answer(InvalidDuration()))) is InvalidDuration
    assert type(error_of(httpx.Response(502, text="bad gateway"))) is ServerError
    teapot = error_of(httpx.Response(418, json={"error": {"code": "tea", "message": "no"}}))
    assert type(teapot) is TreadleError and teapot.code == "tea"


def test_the_sse_decoder_reads_events_and_skips_comments() -> None:
    decoder = SseDecoder()
    body = {"id": 7, "type": "log", "ts": "2026-01-01T00:00:00.000Z", "step": "a", "data": {}}
    lines = [": keep-alive", "", "id: 7", "event: log", "data: " + json.dumps(body), ""]
    events = [e for e in map(decoder.feed, lines) if e is not None]
    assert [(e.id, e.type, e.step) for e in events] == [(7, "log", "a")]


def _event(n: int, kind: str = "log") -> bytes:
    data = {"id": n, "type": kind, "ts": "2026-01-01T00:00:00Z", "step": None, "data": {}}
    return f"id: {n}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode()


class _Dropping(httpx.SyncByteStream):
    """A response body that breaks off after ``chunks``, as a dropped connection does."""

    def __init__(self, *chunks: bytes) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


def test_subscribe_resumes_after_a_dropped_connection_with_last_event_id() -> None:
    asked: list[str | None] = []

    def server(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("last-event-id"))
        if len(asked) == 1:
            return httpx.Response(200, stream=_Dropping(_event(1), _event(2), b"id: 3\n"))
        return httpx.Response(200, content=_event(3) + _event(4, "workflow.complete"))

    with Client("http://t", api_key="k", transport=httpx.MockTransport(server)) as sdk:
        events = list(sdk.subscribe("flow", "i1"))
    assert [e.id for e in events] == [1, 2, 3, 4] and events[-1].final
    assert asked == [None, "2"]


def test_subscribe_gives_up_when_the_server_stays_away() -> None:
    calls = 0

    def server(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(200, stream=_Dropping(_event(1)))
        raise httpx.ConnectError("connection refused")

    transport = httpx.MockTransport(server)
    with Client("http://t", api_key="k", reconnects=2, transport=transport) as sdk:
        with pytest.raises(ConnectionFailed, match="connection refused"):
            list(sdk.subscribe("flow", "i1"))
    assert calls == 1 + 2  # the first connection, then two reconnections


def test_a_stream_error_answer_is_raised_before_any_event() -> None:
    def server(request: httpx.Request) -> httpx.Response:
        body = {"error": {"code": "instance.not_found", "message": "no instance 'i1'"}}
        return httpx.Response(404, json=body)

    with Client("http://t", api_key="k", transport=httpx.MockTransport(server)) as sdk:
        with pytest.raises(NotFound, match="no instance"):
            next(iter(sdk.subscribe("flow", "i1")))


def test_ids_with_slashes_stay_one_path_segment() -> None:
    paths: list[str] = []

    def server(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path.decode())
        return httpx.Response(202, json={})

    with Client("http://t", api_key="k", transport=httpx.MockTransport(server)) as sdk:
        sdk.send_event("flow", "a/b", "go", {"x": 1})
    assert paths == ["/v1/workflows/flow/instances/a%2Fb/events/go"]


_WAITING = {
    "id": "i1",
    "workflow": "flow",
    "version": "v1",
    "status": "waiting",
    "created_at": "2026-01-01T00:00:00Z",
    "steps": [],
}


class _KeepAlives(httpx.SyncByteStream):
    """A stream of an instance that goes on waiting: only keep-alive comments, often."""

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(400):  # 20 s at most, far past the timeouts below
            yield b": keep-alive\n\n"
            time.sleep(0.05)  # the pace of a server, not a wait for work


def test_wait_times_out_even_while_keep_alives_arrive() -> None:
    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/stream"):
            return httpx.Response(200, stream=_KeepAlives())
        return httpx.Response(200, json=_WAITING)

    with Client("http://t", api_key="k", transport=httpx.MockTransport(server)) as sdk:
        started = time.monotonic()
        with pytest.raises(NotFinished, match=r"within 1.5 s \(it is waiting\)") as raised:
            sdk.wait("flow", "i1", timeout=1.5)
    assert 1.5 <= time.monotonic() - started < 2.5
    assert raised.value.status == "waiting"
