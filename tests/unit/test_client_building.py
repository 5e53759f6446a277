"""``deploy`` while the server builds the Python-in-Wasm runtime: the server's own answers
(202 with Retry-After; 503 once the build failed) through a transport that plays them back."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator

import httpx
import pytest
from starlette.requests import Request

from dispatcher import error_response
from dispatcher.http._errors import HANDLERS
from treadle import AsyncClient, Client
from treadle.errors import WasmBuilding, WasmUnavailable

STORED = {"name": "sum", "version": "v1", "sandbox": "wasm"}


def building(seconds: float) -> httpx.Response:
    """What the server answers an upload while it builds (its handler for WasmBuilding)."""
    exc = WasmBuilding(
        f"building the Python-in-Wasm runtime, about {seconds:.0f} s left", retry_after=seconds
    )
    sent = asyncio.run(HANDLERS[WasmBuilding](Request({"type": "http"}), exc))
    return httpx.Response(sent.status_code, headers=dict(sent.headers), content=sent.body)


def playing(answers: list[httpx.Response], sent: list[float]) -> httpx.MockTransport:
    replies: Iterator[httpx.Response] = iter(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(time.monotonic())
        return next(replies)

    return httpx.MockTransport(handle)


def test_without_wait_a_deploy_says_at_once_that_the_server_is_building() -> None:
    sent: list[float] = []
    client = Client("http://treadle", api_key="k", transport=playing([building(41.2)], sent))
    with pytest.raises(WasmBuilding) as caught:
        client.deploy("sum", "source", sandbox="wasm")
    assert caught.value.message == "building the Python-in-Wasm runtime, about 41 s left"
    assert (caught.value.code, caught.value.retry_after) == ("wasm.building", 42)
    assert len(sent) == 1


def test_with_wait_a_deploy_is_sent_again_after_retry_after_until_it_is_stored() -> None:
    sent: list[float] = []
    answers = [building(1), building(1), httpx.Response(201, json=STORED)]
    client = Client("http://treadle", api_key="k", transport=playing(answers, sent))
    seen: list[float] = []
    stored = client.deploy(
        "sum", "source", sandbox="wasm", wait=30, on_building=lambda b: seen.append(b.retry_after)
    )
    assert (stored.name, stored.sandbox) == ("sum", "wasm")
    assert seen == [1, 1]
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert len(gaps) == 2 and all(0.9 < gap < 2.5 for gap in gaps), gaps  # Retry-After: 1


def test_a_deploy_gives_up_once_its_wait_is_over() -> None:
    sent: list[float] = []
    client = Client("http://treadle", api_key="k", transport=playing([building(30)] * 5, sent))
    with pytest.raises(WasmBuilding, match=r"about 30 s left; gave up after waiting 1\.5 s$"):
        client.deploy("sum", "source", sandbox="wasm", wait=1.5)
    assert len(sent) == 2  # once, then once more when the wait was up
    assert 1.4 < sent[1] - sent[0] < 2.5


def test_a_failed_build_is_its_own_error() -> None:
    failed = WasmUnavailable("the Python-in-Wasm runtime could not be built: no space left")
    sent_error = error_response(failed)
    answer = httpx.Response(
        sent_error.status_code, headers=dict(sent_error.headers), content=sent_error.body
    )
    client = Client("http://treadle", api_key="k", transport=playing([answer], []))
    with pytest.raises(WasmUnavailable, match="could not be built: no space left") as caught:
        client.deploy("sum", "source", sandbox="wasm", wait=60)
    assert answer.status_code == 503 and caught.value.code == "wasm.unavailable"


def test_the_async_client_waits_the_same_way() -> None:
    sent: list[float] = []
    answers = [building(1), httpx.Response(201, json=STORED)]
    replies = iter(answers)

    async def handle(request: httpx.Request) -> httpx.Response:
        sent.append(time.monotonic())
        return next(replies)

    async def deploy() -> str:
        async with AsyncClient(
            "http://treadle", api_key="k", transport=httpx.MockTransport(handle)
        ) as client:
            return (await client.deploy("sum", "source", sandbox="wasm", wait=30)).version

    assert asyncio.run(deploy()) == "v1"
    assert len(sent) == 2
