"""Checks of uploads run on threads of their own, within their deadline, and never answer 500."""

from __future__ import annotations

import asyncio
import threading

import pytest

from loader import UploadLimits
from loader._checks import Checks
from sandbox import Artifact
from treadle.errors import CodeInvalid, UploadBusy

ARTIFACT = Artifact("v1", "restricted", "source", None)


class FakeValidator:
    """Answers as the sandbox pool would, and remembers how it was asked."""

    def __init__(self, fails_with: Exception | None = None) -> None:
        self.fails_with = fails_with
        self.calls: list[tuple[str, str, float | None]] = []
        self.release = threading.Event()
        self.release.set()

    def validate(self, tenant: str, artifact: Artifact, *, timeout: float | None = None) -> str:
        self.calls.append((tenant, threading.current_thread().name, timeout))
        self.release.wait(10)
        if self.fails_with is not None:
            raise self.fails_with
        return "Entry"


def _checks(validator: FakeValidator) -> Checks:
    return Checks(validator, UploadLimits(checks=2, per_tenant=1, check_seconds=3))


def test_a_check_runs_on_a_thread_of_its_own_with_its_deadline() -> None:
    validator = FakeValidator()
    checks = _checks(validator)
    try:
        assert asyncio.run(checks.check(1, "acme", ARTIFACT)) == "Entry"
    finally:
        checks.close()
    ((tenant, thread, timeout),) = validator.calls
    assert (tenant, timeout) == ("acme", 3)
    assert thread.startswith("treadle-check")


def test_invalid_code_is_reported_as_it_is() -> None:
    problem = {"line": 1, "column": 1, "message": "it did not finish loading within 3 s"}
    checks = _checks(FakeValidator(CodeInvalid("bad", problems=[problem])))
    try:
        with pytest.raises(CodeInvalid) as caught:
            asyncio.run(checks.check(1, "acme", ARTIFACT))
    finally:
        checks.close()
    assert caught.value.problems == [problem]


def test_a_check_that_could_not_run_is_busy_not_an_internal_error() -> None:
    checks = _checks(FakeValidator(RuntimeError("a sandbox worker did not start")))
    try:
        with pytest.raises(UploadBusy, match="no sandbox worker could be started") as caught:
            asyncio.run(checks.check(1, "acme", ARTIFACT))
    finally:
        checks.close()
    assert caught.value.retry_after == 3


def test_a_request_that_goes_away_keeps_the_turn_until_its_check_ends() -> None:
    validator = FakeValidator()
    validator.release.clear()
    checks = _checks(validator)

    async def scenario() -> None:
        request = asyncio.create_task(checks.check(1, "acme", ARTIFACT))
        while not validator.calls:
            await asyncio.sleep(0.01)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        # The tenant's one turn is still the running check's: the next upload waits for it.
        following = asyncio.create_task(checks.check(1, "acme", ARTIFACT))
        await asyncio.sleep(0.2)
        assert not following.done() and len(validator.calls) == 1
        validator.release.set()
        assert await following == "Entry"

    try:
        asyncio.run(asyncio.wait_for(scenario(), 10))
    finally:
        validator.release.set()
        checks.close()
