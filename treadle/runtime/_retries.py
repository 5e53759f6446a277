"""Step retry and timeout policies: their types, their defaults, validation, the backoff schedule.

The one home of a step's options: what tenant code may pass (:class:`RetryOptions`), what they
resolve to (:class:`RetryPolicy`, :class:`StepConfig`) and the defaults. Shared by the sandbox's
step runtime, the sandbox driver (which checks what a worker announces against them) and the
local test harness (``treadle.testing``).
"""

from __future__ import annotations

from typing import Final, Literal, TypedDict

from treadle.runtime._durations import MAX_DURATION_SECONDS, Duration, parse_duration

Backoff = Literal["constant", "linear", "exponential"]


class RetryOptions(TypedDict, total=False):
    """A step's ``retries`` option as tenant code writes it; what it leaves out is defaulted."""

    limit: int
    delay: Duration
    backoff: Backoff


class RetryPolicy(TypedDict):
    """A resolved ``retries`` option: ``limit`` retries after the first attempt, ``delay`` in
    seconds before the first retry, grown by ``backoff``."""

    limit: int
    delay: float
    backoff: Backoff


class StepConfig(TypedDict):
    """A step's resolved options: its retry policy and its per-attempt timeout in seconds."""

    retries: RetryPolicy
    timeout: float


DEFAULT_RETRIES: Final[RetryOptions] = {
    "limit": 5,
    "delay": "10 seconds",
    "backoff": "exponential",
}
DEFAULT_TIMEOUT: Final = "10 minutes"
MAX_RETRIES = 10000
BACKOFFS: tuple[Backoff, ...] = ("constant", "linear", "exponential")
_ROLLBACK_OPTIONS = ("retries", "timeout")


def resolve_retries(config: object) -> RetryPolicy:
    """Validate a step's ``retries`` option; return it with defaults filled in, delay in seconds.

    Raises :class:`ValueError` (or ``InvalidDuration`` for the delay) with a message that says
    what to fix: this runs in tenant code, and the message is what the tenant sees.
    """
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise ValueError("retries must be a dict like {'limit': 5, 'delay': '10 seconds'}")
    unknown = sorted(str(k) for k in config if k not in DEFAULT_RETRIES)
    if unknown:
        raise ValueError(
            f"retries: unknown option(s) {', '.join(unknown)}; use limit, delay, backoff"
        )
    merged = {**DEFAULT_RETRIES, **config}
    limit = merged["limit"]
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_RETRIES:
        raise ValueError(
            f"retries: limit must be an integer from 0 to {MAX_RETRIES}, got {limit!r}"
        )
    backoff = merged["backoff"]
    if backoff not in BACKOFFS:
        raise ValueError(f"retries: backoff must be one of {', '.join(BACKOFFS)}, got {backoff!r}")
    delay = parse_duration(merged["delay"], what="retries: delay")
    return {"limit": limit, "delay": delay, "backoff": backoff}


def resolve_timeout(timeout: Duration | None) -> float:
    """A step's per-attempt ``timeout`` option in seconds (default 10 minutes)."""
    seconds = parse_duration(DEFAULT_TIMEOUT if timeout is None else timeout, what="timeout")
    if seconds <= 0:
        raise ValueError("timeout must be greater than zero")
    return seconds


def resolve_step_config(retries: object, timeout: Duration | None) -> StepConfig:
    """A step's ``retries`` and ``timeout`` options resolved (see :func:`resolve_retries`)."""
    return {"retries": resolve_retries(retries), "timeout": resolve_timeout(timeout)}


def resolve_rollback_config(options: object) -> StepConfig:
    """A ``rollback_config`` option resolved like a step's: retries and a per-attempt timeout."""
    if options is None:
        options = {}
    if not isinstance(options, dict) or any(k not in _ROLLBACK_OPTIONS for k in options):
        raise ValueError("rollback_config must be a dict with 'retries' and/or 'timeout'")
    return resolve_step_config(options.get("retries"), options.get("timeout"))


def retry_delay(retries: RetryOptions | RetryPolicy, retry: int) -> float:
    """Seconds to wait before retry number ``retry`` (1-based), capped at the longest sleep."""
    delay = float(parse_duration(retries["delay"], what="retries: delay"))
    backoff = retries.get("backoff", "exponential")
    if backoff == "constant":
        seconds = delay
    elif backoff == "linear":
        seconds = delay * retry
    else:
        # 2**64 already overflows any sane schedule; the cap keeps the float finite.
        seconds = delay * 2.0 ** min(retry - 1, 64)
    return min(seconds, float(MAX_DURATION_SECONDS))


def next_retry(retries: RetryOptions | RetryPolicy, attempt: int, now: float) -> float | None:
    """When to retry after failed attempt number ``attempt`` (1-based); None when exhausted.

    ``limit`` counts retries after the first attempt, so ``limit=2`` allows attempts 1, 2, 3.
    Backoff for retry n: constant = d, linear = d·n, exponential = d·2^(n-1).
    """
    resolved = resolve_retries({**DEFAULT_RETRIES, **retries})
    if attempt < 1 or attempt > resolved["limit"]:
        return None
    return now + retry_delay(resolved, attempt)
