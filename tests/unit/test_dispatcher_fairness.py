"""Each tenant's share of an API process's reads."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from starlette.types import Receive, Scope, Send

from dispatcher.http._auth import Authenticate
from dispatcher.http._fairness import READS_PER_TENANT, ReadShares, counted
from tenants import TenantStore


def test_a_tenants_reads_beyond_its_share_wait_in_order_and_others_do_not() -> None:
    async def scenario() -> list[str]:
        shares = ReadShares(limit=2)
        started: list[str] = []
        release = asyncio.Event()

        async def read(tenant: int, name: str) -> None:
            async with shares.turn(tenant):
                started.append(name)
                await release.wait()

        tasks = [asyncio.create_task(read(1, f"a{i}")) for i in range(5)]
        tasks.append(asyncio.create_task(read(2, "b")))
        while len(started) < 3:
            await asyncio.sleep(0)
        first = list(started)
        release.set()
        await asyncio.gather(*tasks)
        return first + started[3:]

    assert asyncio.run(scenario()) == ["a0", "a1", "b", "a2", "a3", "a4"]


def test_reads_take_turns_and_writes_and_live_streams_do_not() -> None:
    assert counted("GET", "/v1/workflows")
    assert counted("HEAD", "/v1/workflows/w/instances/i")
    assert not counted("POST", "/v1/workflows/w/instances")
    assert not counted("GET", "/v1/workflows/w/instances/i/stream")


def test_an_anonymous_clients_webhooks_and_links_take_its_addresss_turns() -> None:
    """A webhook's delivery or an approval link has no tenant until its route reads it: one
    address gets READS_PER_TENANT of them at once, and another address is not held back."""

    async def scenario() -> tuple[int, list[str]]:
        running: list[str] = []
        peak = 0
        release = asyncio.Event()

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            nonlocal peak
            running.append(scope["client"][0])
            peak = max(peak, running.count("10.0.0.1"))
            await release.wait()
            running.remove(scope["client"][0])

        guard = Authenticate(app, cast(TenantStore, None))  # no credential is ever checked

        def call(address: str, method: str, path: str) -> Any:
            scope = {"type": "http", "method": method, "path": path, "client": (address, 1)}
            return asyncio.create_task(guard(scope, _nothing, _nothing))

        tasks = [call("10.0.0.1", "POST", f"/v1/hooks/hk_{i}") for i in range(6)]
        tasks += [call("10.0.0.1", "GET", "/v1/links/abc") for _ in range(3)]
        tasks.append(call("10.0.0.2", "POST", "/v1/links/abc"))
        for _ in range(50):
            await asyncio.sleep(0)
        seen = list(running)
        release.set()  # the others then run, never more than the share at once
        await asyncio.gather(*tasks)
        return peak, seen

    peak, seen = asyncio.run(scenario())
    assert peak == READS_PER_TENANT
    assert seen.count("10.0.0.1") == READS_PER_TENANT and "10.0.0.2" in seen


async def _nothing(*_: Any) -> Any:
    raise AssertionError("the app under test neither receives nor sends")
