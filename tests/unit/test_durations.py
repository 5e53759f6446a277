from __future__ import annotations

import datetime as dt

import pytest

from treadle import parse_duration, parse_instant
from treadle.errors import InvalidDuration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (5, 5.0),
        (0.5, 0.5),
        ("1 second", 1.0),
        ("10 seconds", 10.0),
        ("2 minutes", 120.0),
        ("1 hour", 3600.0),
        ("3 days", 3 * 86400.0),
        ("1 week", 7 * 86400.0),
        ("1.5 hours", 5400.0),
        (dt.timedelta(minutes=2), 120.0),
        ("365 days", 365 * 86400.0),
    ],
)
def test_durations_in_every_accepted_form(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value", ["soon", "10 fortnights", "-1 seconds", -1, "366 days", True, None]
)
def test_bad_durations_are_refused_with_a_clear_message(value: object) -> None:
    with pytest.raises(InvalidDuration):
        parse_duration(value, what="sleep")  # type: ignore[arg-type]


def test_instants_from_datetimes_iso_strings_and_epoch_seconds() -> None:
    moment = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert parse_instant(moment) == moment.timestamp()
    assert parse_instant("2030-01-01T00:00:00Z") == moment.timestamp()
    assert parse_instant(moment.timestamp()) == moment.timestamp()
    with pytest.raises(InvalidDuration):
        parse_instant("next tuesday")
