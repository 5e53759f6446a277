"""Each tenant's share of an API process's reads."""

from __future__ import annotations

import asyncio

from dispatcher.http._fairness import ReadShares, counted


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
