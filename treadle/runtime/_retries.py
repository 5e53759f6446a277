"""Step retry and timeout configuration: defaults, validation, and the backoff schedule.

Shared by the sandbox's step runtime and the local test harness (``treadle.testing``).
"""

from __future__ import annotations

from typing import Any

from treadle.runtime._durations import MAX_DURATION_SECONDS, parse_duration

DEFAULT_RETRIES: dict[str, Any] = {"limit": 5, "delay": "10 seconds", "backoff": "exponential"}
DEFAULT_TIMEOUT = "10 minutes"
MAX_RETRIES = 10000
BACKOFFS = ("constant", "linear", "exponential")
_ROLLBACK_OPTIONS = ("retries", "timeout")


def resolve_retries(config: Any) -> dict[str, Any]:
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


def resolve_timeout(timeout: Any) -> float:
    """A step's per-attempt ``timeout`` option in seconds (default 10 minutes)."""
    seconds = parse_duration(DEFAULT_TIMEOUT if timeout is None else timeout, what="timeout")
    if seconds <= 0:
        raise ValueError("timeout must be greater than zero")
    return seconds


def resolve_rollback_config(options: Any) -> dict[str, Any]:
    """A ``rollback_config`` option resolved like a step's: retries and a per-attempt timeout."""
    if options is None:
        options = {}
    if not isinstance(options, dict) or any(k not in _ROLLBACK_OPTIONS for k in options):
        raise ValueError("rollback_config must be a dict with 'retries' and/or 'timeout'")
    return {
        "retries": resolve_retries(options.get("retries")),
        "timeout": resolve_timeout(options.get("timeout")),
    }


def retry_delay(retries: dict[str, Any], retry: int) -> float:
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


def next_retry(retries: dict[str, Any], attempt: int, now: float) -> float | None:
    """When to retry after failed attempt number ``attempt`` (1-based); None when exhausted.

    ``limit`` counts retries after the first attempt, so ``limit=2`` allows attempts 1, 2, 3.
    Backoff for retry n: constant = d, linear = d·n, exponential = d·2^(n-1).
    """
    resolved = resolve_retries({**DEFAULT_RETRIES, **retries})
    if attempt < 1 or attempt > resolved["limit"]:
        return None
    return now + retry_delay(resolved, attempt)
