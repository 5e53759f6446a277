"""How a followed stream comes back (treadle/client/_stream.py): what it retries, how long it
waits, what it raises. The servers here are httpx mock transports; waits are recorded rather
than slept. tests/integration/test_restarts.py restarts a real server under the followers."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

import httpx
import pytest

from treadle import AsyncClient, Client
from treadle.client._stream import CLOSING, MAX_DELAY, Follow
from treadle.errors import ConnectionFailed, NotFinished, NotFound, Unauthorized

Server = Callable[[httpx.Request], httpx.Response]
_CLOSING = f'retry: 1000\nevent: {CLOSING}\ndata: {{"type": "{CLOSING}", "retry_ms": 1000}}\n\n'
_INSTANCE = {
    "id": "i1",
    "workflow": "flow",
    "version": "v1",
    "created_at": "2026-01-01T00:00:00Z",
    "steps": [],
}


def _event(n: int, kind: str = "log") -> str:
    data = {"id": n, "type": kind, "ts": "2026-01-01T00:00:00Z", "step": None, "data": {}}
    return f"id: {n}\nevent: {kind}\ndata: {json.dumps(data)}\n\n"


def _refused() -> httpx.ConnectError:
    return httpx.ConnectError("connection refused")


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits of the clients between attempts, recorded instead of slept."""
    recorded: list[float] = []

    async def asleep(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr("treadle.client._client.time.sleep", recorded.append)
    monkeypatch.setattr("treadle.client._client.asyncio.sleep", asleep)
    return recorded


class _Script:
    """A server that answers each stream request with the next of ``answers`` (an exception
    is raised as the connection's failure), and ``GET`` of the instance with ``status``."""

    def __init__(self, *answers: httpx.Response | Exception, status: str = "waiting") -> None:
        self._answers = list(answers)
        self.status = status
        self.asked: list[str | None] = []  # the Last-Event-ID of each stream request

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/stream"):
            return httpx.Response(200, json={**_INSTANCE, "status": self.status})
        self.asked.append(request.headers.get("last-event-id"))
        answer = self._answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _stream(*events: str) -> httpx.Response:
    return httpx.Response(200, text="".join(events), headers={"content-type": "text/event-stream"})


def _error(status: int, code: str, retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after else {}
    body = {"error": {"code": code, "message": f"{code}!"}}
    return httpx.Response(status, json=body, headers=headers)


def test_waits_double_from_a_fifth_of_a_second_to_five_and_go_on_without_a_bound() -> None:
    follow = Follow("http://t", "flow", "i1")
    delays = [follow.dropped(_refused()) for _ in range(9)]
    assert delays == [0.2, 0.4, 0.8, 1.6, 3.2, MAX_DELAY, MAX_DELAY, MAX_DELAY, MAX_DELAY]


def test_anything_from_the_server_starts_the_waits_from_the_first_again() -> None:
    follow = Follow("http://t", "flow", "i1")
    for _ in range(4):
        follow.dropped(_refused())
    follow.headers()
    assert follow.feed(": keep-alive") is None
    assert follow.dropped(_refused()) == 0.2


def test_reconnects_bounds_the_attempts_in_a_row_the_first_connection_included() -> None:
    follow = Follow("http://t", "flow", "i1", reconnects=2)
    assert [follow.dropped(_refused()), follow.dropped(_refused())] == [0.2, 0.4]
    with pytest.raises(ConnectionFailed, match="could not reach the treadle server at http://t"):
        follow.dropped(_refused())


def test_a_deadline_bounds_the_waits_and_raises_not_finished_once_past() -> None:
    follow = Follow("http://t", "flow", "i1", timeout=0.3)
    for _ in range(3):
        assert follow.dropped(_refused()) <= 0.3
    follow._deadline = 0.0  # as if the time had passed
    with pytest.raises(NotFinished, match=r"did not finish within 0\.3 s"):
        follow.dropped(_refused())


def test_a_server_starting_stopping_or_busy_is_asked_again_after_its_retry_after() -> None:
    follow = Follow("http://t", "flow", "i1")
    assert follow.refused(_error(503, "server.stopping", retry_after="2")) == 2.0
    assert follow.refused(_error(429, "streams.too_many", retry_after="60")) == MAX_DELAY
    assert follow.refused(httpx.Response(502, text="bad gateway")) == 0.8  # the third wait


@pytest.mark.parametrize(
    ("status", "code", "raised"),
    [(401, "auth.invalid_key", Unauthorized), (404, "instance.not_found", NotFound)],
)
def test_an_answer_that_asking_again_cannot_change_is_raised_at_once(
    status: int, code: str, raised: type[Exception]
) -> None:
    follow = Follow("http://t", "flow", "i1")
    with pytest.raises(raised, match=f"{code}!"):
        follow.refused(_error(status, code))


def test_server_closing_is_no_event_of_the_instance_and_sets_the_next_wait() -> None:
    follow = Follow("http://t", "flow", "i1")
    follow.headers()
    fed = [follow.feed(line) for line in (_event(4) + _CLOSING).split("\n")]
    assert [e.id for e in fed if e is not None] == [4] and follow.last_id == 4
    assert not follow.unexplained_end()  # the server said why: no need to ask
    assert follow.ended() == 1.0  # what the server asked for, not 0.2


def test_subscribe_rides_out_a_restart_and_resumes_after_the_last_event(
    waits: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="treadle.client")
    server = _Script(
        _stream(_event(1), _event(2), _CLOSING),
        _refused(),
        _refused(),
        _error(503, "database.unavailable", retry_after="1"),
        _stream(_event(3, "workflow.complete")),
    )
    with Client("http://t", api_key="k", transport=httpx.MockTransport(server)) as sdk:
        events = list(sdk.subscribe("flow", "i1"))
    assert [(e.id, e.type) for e in events] == [(1, "log"), (2, "log"), (3, "workflow.complete")]
    assert server.asked == [None, "2", "2", "2", "2"]
    assert waits == [1.0, 0.4, 0.8, 1.6]  # closing's 1 s, then doubling on from there
    # One line when the stream is lost and one when it is back, not one per attempt.
    assert [r.getMessage() for r in caplog.records] == [
        "the server is going away; reconnecting",
        "reconnected to http://t",
    ]


def test_a_stream_that_ends_early_for_no_reason_is_opened_again_while_the_run_goes_on(
    waits: list[float],
) -> None:
    server = _Script(_stream(_event(1)), _stream(_event(2, "workflow.complete")))
    with Client("http://t", api_key="k", transport=httpx.MockTransport(server)) as sdk:
        assert [e.id for e in sdk.subscribe("flow", "i1")] == [1, 2]
    assert server.asked == [None, "1"] and waits == [0.2]


def test_a_stream_past_the_end_of_a_finished_run_ends_without_reopening(
    waits: list[float],
) -> None:
    server = _Script(_stream(), status="complete")
    with Client("http://t", api_key="k", transport=httpx.MockTransport(server)) as sdk:
        assert list(sdk.subscribe("flow", "i1", after=9)) == []
    assert server.asked == ["9"] and waits == []


def test_a_revoked_key_ends_the_subscription_with_unauthorized(waits: list[float]) -> None:
    server = _Script(_stream(_event(1)), _error(401, "auth.invalid_key"))
    with Client("http://t", api_key="k", transport=httpx.MockTransport(server)) as sdk:
        seen: list[int] = []
        with pytest.raises(Unauthorized):
            for event in sdk.subscribe("flow", "i1"):
                seen.append(event.id)
    assert seen == [1] and server.asked == [None, "1"]


def test_the_async_client_reconnects_the_same_way(waits: list[float]) -> None:
    server = _Script(
        _stream(_event(1), _CLOSING), _refused(), _stream(_event(2, "workflow.complete"))
    )

    async def follow() -> list[int]:
        transport = httpx.MockTransport(server)
        async with AsyncClient("http://t", api_key="k", transport=transport) as sdk:
            return [event.id async for event in sdk.subscribe("flow", "i1")]

    assert asyncio.run(follow()) == [1, 2]
    assert server.asked == [None, "1", "1"] and waits == [1.0, 0.4]


def test_wait_keeps_its_timeout_while_the_server_is_away() -> None:
    asked = 0

    def server(request: httpx.Request) -> httpx.Response:
        nonlocal asked
        asked += 1
        if asked == 1:  # the instance, before following it
            return httpx.Response(200, json={**_INSTANCE, "status": "waiting"})
        raise _refused()  # then the server is gone

    with Client("http://t", api_key="k", transport=httpx.MockTransport(server)) as sdk:
        started = time.monotonic()
        with pytest.raises(NotFinished, match=r"did not finish within 1 s$") as raised:
            sdk.wait("flow", "i1", timeout=1)
    assert 1 <= time.monotonic() - started < 2 and raised.value.status is None
    assert asked > 3  # it kept trying meanwhile
