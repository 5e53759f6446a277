"""Turns to check uploads: bounded at once and per tenant, a short queue, fair between tenants."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from loader import UploadLimits
from loader._admission import Admission
from treadle.errors import UploadBusy

T = TypeVar("T")


def _run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(scenario(), 10))


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_tenant_checks_a_few_at_once_queues_a_few_and_is_refused_past_that() -> None:
    admission = Admission(UploadLimits(checks=4, per_tenant=2, queued_per_tenant=3))

    async def scenario() -> None:
        await admission.enter(1)
        await admission.enter(1)
        waiting = [asyncio.create_task(admission.enter(1)) for _ in range(3)]
        await _settle()
        assert admission.waiting(1) == 3 and not any(w.done() for w in waiting)
        with pytest.raises(UploadBusy) as refused:
            await admission.enter(1)
        assert refused.value.code == "upload.busy"
        assert refused.value.retry_after == 10
        assert "5 uploads of this tenant are being checked or waiting" in refused.value.message
        await admission.enter(2)  # another tenant is not held up by them
        admission.leave(1)
        await _settle()
        assert sum(w.done() for w in waiting) == 1 and admission.busy == 3
        for _ in range(4):
            admission.leave(1)
        admission.leave(2)
        await asyncio.gather(*waiting)
        assert admission.busy == 0

    _run(scenario)


def test_a_queued_upload_gives_up_after_the_wait_and_frees_its_place() -> None:
    limits = UploadLimits(checks=1, per_tenant=1, queued_per_tenant=1, wait_seconds=0.05)
    admission = Admission(limits)

    async def scenario() -> None:
        await admission.enter(1)
        with pytest.raises(UploadBusy, match=r"no turn to check this upload came within 0\.05 s"):
            await admission.enter(1)
        assert admission.waiting(1) == 0
        admission.leave(1)
        await admission.enter(1)  # the turn was not lost to the one that gave up
        admission.leave(1)
        assert admission.busy == 0

    _run(scenario)


def test_a_request_that_goes_away_gives_back_its_place() -> None:
    admission = Admission(UploadLimits(checks=1, per_tenant=1))

    async def scenario() -> None:
        await admission.enter(1)
        gone = asyncio.create_task(admission.enter(2))
        await _settle()
        gone.cancel()
        await _settle()
        assert gone.cancelled() and admission.waiting(2) == 0
        admission.leave(1)
        assert admission.busy == 0

    _run(scenario)


def test_a_freed_turn_goes_to_the_tenant_served_longest_ago() -> None:
    admission = Admission(UploadLimits(checks=1, per_tenant=1, queued_per_tenant=4))
    order: list[str] = []

    async def upload(tenant_id: int, name: str) -> None:
        await admission.enter(tenant_id)
        order.append(name)

    async def scenario() -> None:
        await upload(1, "a1")
        tasks = [asyncio.create_task(upload(1, f"a{n}")) for n in (2, 3, 4)]
        await _settle()
        tasks += [asyncio.create_task(upload(2, "b1")), asyncio.create_task(upload(3, "c1"))]
        await _settle()
        for tenant_id in (1, 2, 3, 1, 1, 1):
            admission.leave(tenant_id)
            await _settle()
        await asyncio.gather(*tasks)

    _run(scenario)
    # The attacker's queue delays the others by one check (the one running), not by its length.
    assert order == ["a1", "b1", "c1", "a2", "a3", "a4"]


def test_the_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        UploadLimits(checks=0)
    with pytest.raises(ValueError):
        UploadLimits(check_seconds=0)
    assert UploadLimits(check_seconds=2.5).retry_after == 3
