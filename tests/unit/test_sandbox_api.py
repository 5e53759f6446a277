"""The public surface of ``sandbox``: names, limits, retry schedule and defaults."""

from __future__ import annotations

import pytest

import sandbox
from sandbox import Artifact, Limits
from treadle.errors import InvalidDuration
from treadle.runtime import DEFAULT_RETRIES, DEFAULT_TIMEOUT, next_retry


def test_the_public_api_is_exactly_this() -> None:
    assert sandbox.__all__ == [
        "LAYERS",
        "NOTHING_SPENT",
        "Artifact",
        "Deadline",
        "Done",
        "Failed",
        "Host",
        "Limits",
        "NotReady",
        "Outcome",
        "ReplayRequest",
        "RuntimeBuild",
        "SandboxPool",
        "Spent",
        "Suspended",
        "Wall",
    ]
    assert sandbox.__all__ == sorted(sandbox.__all__, key=lambda n: (not n.isupper(), n))


def test_defaults_match_the_design() -> None:
    assert DEFAULT_RETRIES == {"limit": 5, "delay": "10 seconds", "backoff": "exponential"}
    assert DEFAULT_TIMEOUT == "10 minutes"
    assert Limits() == Limits(
        memory_mb=256,
        step_cpu_ms=30000,
        max_step_result_bytes=1048576,
        max_steps_per_instance=10000,
    )
    assert Artifact("v", "restricted", "src").class_name is None


@pytest.mark.parametrize(
    "kwargs", [{"memory_mb": 0}, {"memory_mb": 32}, {"step_cpu_ms": -1}, {"step_cpu_ms": True}]
)
def test_limits_reject_nonsense(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="Limits"):
        Limits(**kwargs)


def test_default_retries_back_off_exponentially_from_ten_seconds() -> None:
    delays = [next_retry(DEFAULT_RETRIES, n, 1000.0) for n in range(1, 7)]
    assert delays == [1010.0, 1020.0, 1040.0, 1080.0, 1160.0, None]


@pytest.mark.parametrize(
    ("backoff", "expected"),
    [("constant", [2.0, 2.0, 2.0]), ("linear", [2.0, 4.0, 6.0]), ("exponential", [2.0, 4.0, 8.0])],
)
def test_backoff_schedules(backoff: str, expected: list[float]) -> None:
    retries = {"limit": 3, "delay": "2 seconds", "backoff": backoff}
    assert [next_retry(retries, n, 0.0) for n in (1, 2, 3)] == expected
    assert next_retry(retries, 4, 0.0) is None


def test_limit_counts_retries_after_the_first_attempt() -> None:
    assert next_retry({"limit": 0, "delay": 1}, 1, 0.0) is None
    assert next_retry({"limit": 1, "delay": 1}, 1, 0.0) == 1.0
    assert next_retry({"limit": 1, "delay": 1}, 2, 0.0) is None


def test_partial_retry_configs_take_the_defaults_for_the_rest() -> None:
    assert next_retry({"limit": 1}, 1, 0.0) == 10.0
    assert next_retry({"delay": 0}, 5, 0.0) == 0.0


def test_huge_exponential_delays_are_capped_at_the_longest_sleep() -> None:
    retries = {"limit": 10000, "delay": "1 day", "backoff": "exponential"}
    assert next_retry(retries, 10000, 0.0) == 365 * 86400.0


@pytest.mark.parametrize(
    ("retries", "message"),
    [
        ({"limit": 10001}, "limit must be an integer from 0 to 10000"),
        ({"limit": -1}, "limit must be an integer"),
        ({"limit": True}, "limit must be an integer"),
        ({"limit": 2.5}, "limit must be an integer"),
        ({"backoff": "random"}, "backoff must be one of constant, linear, exponential"),
        ({"tries": 3}, "unknown option"),
    ],
)
def test_invalid_retry_configs_say_what_is_wrong(retries: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        next_retry(retries, 1, 0.0)


def test_an_invalid_retry_delay_is_a_duration_error() -> None:
    with pytest.raises(InvalidDuration, match="delay"):
        next_retry({"delay": "soon"}, 1, 0.0)
