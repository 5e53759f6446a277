"""The time maths of schedules (``engine._cron``) and what a pass of the firer makes of a due
schedule (``engine._firer.plan``): cron in a time zone across DST changes (Europe/Berlin),
``every`` anchored, catch-up and overlap, all on fixed times."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from engine._cron import MAX_CATCH_UP, Spec, fire_id, parse_spec
from engine._firer import plan
from engine._schedules import Due
from treadle.errors import InvalidInput

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def _at(*fields: int) -> float:
    """A wall time in Berlin (the first, summer, one of a repeated hour)."""
    return dt.datetime(*fields, tzinfo=BERLIN).timestamp()  # type: ignore[misc]


def _walls(spec: Spec, after: float, count: int) -> list[str]:
    out = []
    for _ in range(count):
        after = spec.next_fire(after, 0.0)
        out.append(dt.datetime.fromtimestamp(after, BERLIN).isoformat())
    return out


def test_a_daily_cron_across_spring_forward_fires_after_the_gap() -> None:
    spec = parse_spec({"cron": "30 2 * * *", "timezone": "Europe/Berlin"})
    # 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that day.
    assert _walls(spec, _at(2026, 3, 28, 12), 3) == [
        "2026-03-29T03:30:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]


def test_a_daily_cron_across_fall_back_fires_once_at_the_first_occurrence() -> None:
    spec = parse_spec({"cron": "30 2 * * *", "timezone": "Europe/Berlin"})
    # 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
    assert _walls(spec, _at(2026, 10, 24, 12), 3) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]


def test_an_half_hourly_cron_across_both_changes() -> None:
    spec = parse_spec({"cron": "*/30 * * * *", "timezone": "Europe/Berlin"})
    # Spring: the skipped 02:00 and 02:30 land on 03:00 and 03:30, which fire once each.
    assert _walls(spec, _at(2026, 3, 29, 1, 15), 4) == [
        "2026-03-29T01:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:30:00+02:00",
        "2026-03-29T04:00:00+02:00",
    ]
    # Autumn: the repeated hour fires in its first occurrence only.
    assert _walls(spec, _at(2026, 10, 25, 1, 45), 4) == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T03:00:00+01:00",
        "2026-10-25T03:30:00+01:00",
    ]


def test_cron_is_utc_by_default_and_fire_ids_name_the_utc_second() -> None:
    spec = parse_spec({"cron": "0 9 * * 1"})  # Mondays at 09:00 UTC
    at = spec.next_fire(dt.datetime(2026, 12, 4, tzinfo=dt.UTC).timestamp(), 0.0)
    assert fire_id("weekly", at) == "weekly-20261207T090000Z"


def test_every_is_anchored_so_late_fires_do_not_drift() -> None:
    spec = parse_spec({"every": "2 seconds"})
    assert spec.every == 2.0
    assert spec.next_fire(100.0, 100.0) == 102.0
    assert spec.next_fire(103.9, 100.0) == 104.0  # made late, the next is still on the grid
    assert spec.next_fire(104.0, 100.0) == 106.0


def test_catch_up_all_latest_and_none() -> None:
    every = {"every": 10}
    assert parse_spec({**every, "catch_up": "all"}).due(110, 141, 100) == [110, 120, 130, 140]
    assert parse_spec({**every, "catch_up": "latest"}).due(110, 141, 100) == [140]
    assert parse_spec({**every, "catch_up": "none"}).due(110, 141, 100) == [140]  # 1 s late
    assert parse_spec({**every, "catch_up": "none"}).due(110, 147, 100) == []  # missed
    long_down = parse_spec({**every, "catch_up": "all"}).due(110, 10_000_000, 100)
    assert len(long_down) == MAX_CATCH_UP and long_down[-1] == 10_000_000 - 0


def test_catch_up_of_a_cron_works_backwards_through_dst() -> None:
    spec = parse_spec({"cron": "30 2 * * *", "timezone": "Europe/Berlin", "catch_up": "all"})
    first = _at(2026, 3, 27, 2, 30)
    due = spec.due(first, _at(2026, 3, 31, 12), 0.0)
    walls = [dt.datetime.fromtimestamp(at, BERLIN).strftime("%d %H:%M") for at in due]
    assert walls == ["27 02:30", "28 02:30", "29 03:30", "30 02:30", "31 02:30"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"cron": "61 * * * *"}, "cron: '61 * * * *' is not a valid cron expression"),
        ({"cron": "0 0 * * * *"}, "cron: '0 0 * * * *' must have 5 fields"),
        ({"every": 0}, "every: must be positive"),
        ({"every": 0.5}, "every: must be at least 1 second"),
        ({"every": 5, "timezone": "Mars/Base"}, "timezone: unknown time zone 'Mars/Base'"),
        ({"every": 5, "overlap": "never"}, "overlap: must be one of skip, buffer_one, allow"),
        ({"cron": "* * * * *", "every": 5}, 'cron: give exactly one of "cron" and "every"'),
    ],
)
def test_bad_specs_name_their_field(body: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match="^" + message.replace("*", r"\*")) as raised:
        parse_spec(body)
    assert raised.value.code == "schedule.invalid"


def _due(spec: Spec, next_at: float, held: float | None = None) -> Due:
    return Due(1, "wf", "s", spec, next_at, "s-x", held, 100.0, 100.0)


def test_overlap_skip_drops_fires_while_the_last_instance_is_live() -> None:
    spec = parse_spec({"every": 10})
    assert plan(_due(spec, 110), 111, last_live=True).make == []
    assert plan(_due(spec, 110), 111, last_live=False).make == [110]


def test_overlap_buffer_one_holds_the_first_fire_back() -> None:
    spec = parse_spec({"every": 10, "overlap": "buffer_one"})
    held = plan(_due(spec, 110), 111, last_live=True)
    assert (held.make, held.held) == ([], 110)
    still = plan(_due(spec, 120, held=110), 121, last_live=True)
    assert (still.make, still.held) == ([], 110)  # one held at most: the newer is dropped
    done = plan(_due(spec, 130, held=110), 131, last_live=False)
    assert (done.make, done.held) == ([110], 130)  # the held one now; the due one waits


def test_overlap_allow_makes_every_fire_catch_up_chose() -> None:
    spec = parse_spec({"every": 10, "overlap": "allow", "catch_up": "all"})
    assert plan(_due(spec, 110), 131, last_live=True).make == [110, 120, 130]
