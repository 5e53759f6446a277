from __future__ import annotations

import pytest

from dispatcher._rates import CreateRate


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_tenant_bursts_to_its_rate_then_refills_at_it() -> None:
    clock = Clock()
    rate = CreateRate(clock)
    assert rate.take(1, 3, per_second=10) == (3, 0.0)
    granted, retry_after = rate.take(1, 10, per_second=10)
    assert granted == 7 and retry_after == pytest.approx(0.1)
    assert rate.take(1, 1, per_second=10) == (0, pytest.approx(0.1))
    clock.now += 0.25
    assert rate.take(1, 5, per_second=10)[0] == 2
    clock.now += 60
    assert rate.take(1, 50, per_second=10)[0] == 10  # never more than one second's worth


def test_tenants_have_buckets_of_their_own() -> None:
    rate = CreateRate(Clock())
    assert rate.take(1, 5, per_second=5)[0] == 5
    assert rate.take(1, 1, per_second=5)[0] == 0
    assert rate.take(2, 5, per_second=5)[0] == 5
