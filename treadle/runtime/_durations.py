"""Durations as tenant code writes them: seconds, ``"<n> <unit>"`` strings, or timedeltas."""

from __future__ import annotations

import datetime as _dt
import re

from treadle.runtime.errors import InvalidDuration

MAX_DURATION_SECONDS = 365 * 86400

_UNITS = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "week": 7 * 86400,
}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+?)s?\s*$")

Duration = float | int | str | _dt.timedelta


def parse_duration(value: Duration, *, what: str = "duration") -> float:
    """Return ``value`` in seconds.

    A number is seconds; a string is ``"<n> <unit>"`` with unit second(s), minute(s), hour(s),
    day(s) or week(s); a :class:`datetime.timedelta` is taken as it is. Negative values and
    values over 365 days are rejected.
    """
    if isinstance(value, bool):
        raise InvalidDuration(f"{what}: expected a number of seconds, a string or a timedelta")
    if isinstance(value, _dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _PATTERN.match(value.lower())
        if match is None or match.group(2) not in _UNITS:
            raise InvalidDuration(
                f"{what}: {value!r} is not a duration like '10 seconds', '5 minutes' or '2 days'"
            )
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise InvalidDuration(f"{what}: expected a number of seconds, a string or a timedelta")
    if seconds != seconds or seconds < 0:
        raise InvalidDuration(f"{what}: must not be negative")
    if seconds > MAX_DURATION_SECONDS:
        raise InvalidDuration(f"{what}: must not exceed 365 days")
    return seconds


def parse_instant(value: float | int | str | _dt.datetime, *, what: str = "time") -> float:
    """Return ``value`` (a datetime, an ISO 8601 string or epoch seconds) as epoch seconds."""
    if isinstance(value, bool):
        raise InvalidDuration(f"{what}: expected a datetime, an ISO 8601 string or epoch seconds")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidDuration(f"{what}: {value!r} is not an ISO 8601 time") from None
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.UTC)
        return value.timestamp()
    raise InvalidDuration(f"{what}: expected a datetime, an ISO 8601 string or epoch seconds")
