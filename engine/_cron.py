"""The time maths of schedules: a spec as put, checked, and the fire times it gives.

A cron schedule is evaluated in its time zone's wall time (``croniter`` finds the matching wall
times; it never sees a time zone), and each wall time is then placed on the UTC time line:

- a wall time that does not exist (the hour skipped when clocks go forward) fires as far
  after the gap as it was into it: ``30 2 * * *`` in Europe/Berlin fires at 03:30 CEST on the
  day of the change;
- a wall time that happens twice (the hour repeated when clocks go back) fires once, at its
  first occurrence (summer time);
- two wall times that land on the same instant fire once.

An ``every`` schedule fires at ``anchor + k * every`` (the anchor is when it was created), so
late fires do not make the next ones drift; its time zone plays no part.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from croniter import croniter

from treadle.errors import InvalidInput
from treadle.runtime import JSONObject, JSONValue, parse_duration

OVERLAPS = ("skip", "buffer_one", "allow")
CATCH_UPS = ("none", "latest", "all")
MAX_CATCH_UP = 100
"""The most missed fires one catch-up makes (``catch_up: all``): the most recent ones."""
GRACE_SECONDS = 60.0
"""Under ``catch_up: none``, a fire is missed once it is this late (or half a period late, if
that is shorter): made late by less (a busy moment, not a downtime), it still fires."""
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,\-?LW#]+$")
# Enough to step over any run of wall times that the rules above drop (a repeated hour of a
# schedule firing every minute): 60 of them, and some.
_MAX_STEPS = 1000


def invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", code="schedule.invalid")


@dataclass(frozen=True)
class Spec:
    """A schedule as put, normalised: exactly one of ``cron`` and ``every`` (seconds)."""

    cron: str | None = None
    every: float | None = None
    timezone: str = "UTC"
    params: JSONValue = None
    overlap: str = "skip"
    catch_up: str = "latest"

    def to_json(self) -> JSONObject:
        return {
            "cron": self.cron,
            "every": self.every,
            "timezone": self.timezone,
            "params": self.params,
            "overlap": self.overlap,
            "catch_up": self.catch_up,
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Spec:
        """The spec as :meth:`to_json` stored it (already checked)."""
        every = value.get("every")
        return cls(
            cron=value.get("cron"),
            every=None if every is None else float(every),
            timezone=str(value.get("timezone") or "UTC"),
            params=value.get("params"),
            overlap=str(value.get("overlap") or "skip"),
            catch_up=str(value.get("catch_up") or "latest"),
        )

    def next_fire(self, after: float, anchor: float) -> float:
        """The first fire time strictly after ``after`` (epoch seconds)."""
        if self.every is not None:
            steps = max(math.floor((after - anchor) / self.every) + 1, 1)
            at = anchor + steps * self.every
            return at if at > after else at + self.every
        assert self.cron is not None
        return _next_cron(self.cron, zoneinfo.ZoneInfo(self.timezone), after)

    def due(self, first: float, now: float, anchor: float) -> list[float]:
        """The fire times from ``first`` (a fire time) up to ``now`` that catch-up makes,
        oldest first: all of them (at most the latest :data:`MAX_CATCH_UP`), the latest, or
        the latest if it is hardly late (``none``)."""
        keep = MAX_CATCH_UP if self.catch_up == "all" else 1
        fires = [at for at in self._latest(now, anchor, keep) if at >= first]
        if self.catch_up != "none" or not fires:
            return fires
        latest = fires[-1]
        period = self.next_fire(latest, anchor) - latest
        return fires if now - latest < min(GRACE_SECONDS, period / 2) else []

    def _latest(self, now: float, anchor: float, count: int) -> list[float]:
        """The ``count`` latest fire times up to ``now``, oldest first: worked out backwards,
        so that a long downtime costs no more than a short one."""
        if self.every is not None:
            last = math.floor((now - anchor) / self.every)
            return [anchor + k * self.every for k in range(max(last - count + 1, 1), last + 1)]
        assert self.cron is not None
        return _latest_cron(self.cron, zoneinfo.ZoneInfo(self.timezone), now, count)


def parse_spec(body: Mapping[str, Any]) -> Spec:
    """A spec from the body of a put, checked: raises :class:`InvalidInput` (code
    ``schedule.invalid``) naming the field at fault."""
    for name in ("cron", "every", "timezone", "overlap", "catch_up"):
        if name in body and body[name] is None:
            raise invalid(name, "must not be null")
    cron, every = body.get("cron"), body.get("every")
    if (cron is None) == (every is None):
        raise invalid("cron", 'give exactly one of "cron" and "every"')
    timezone = check_timezone(body.get("timezone", "UTC"))
    overlap = _choice(body.get("overlap", "skip"), "overlap", OVERLAPS)
    catch_up = _choice(body.get("catch_up", "latest"), "catch_up", CATCH_UPS)
    params = body.get("params")
    if cron is not None:
        return Spec(check_cron(cron), None, timezone, params, overlap, catch_up)
    return Spec(None, check_every(every), timezone, params, overlap, catch_up)


def check_cron(value: Any) -> str:
    if not isinstance(value, str):
        raise invalid("cron", "must be a string of 5 fields: minute hour day month weekday")
    fields = value.split()
    if len(fields) != 5:
        raise invalid("cron", f"{value[:100]!r} must have 5 fields (minute hour day month weekday)")
    if not all(_CRON_FIELD.match(f) for f in fields) or not croniter.is_valid(" ".join(fields)):
        raise invalid("cron", f"{value[:100]!r} is not a valid cron expression")
    try:  # valid, yet never matching (30 February)
        _next_cron(" ".join(fields), zoneinfo.ZoneInfo("UTC"), 0.0)
    except Exception:
        raise invalid("cron", f"{value[:100]!r} never fires") from None
    return " ".join(fields)


def check_every(value: Any) -> float:
    try:
        seconds = parse_duration(value, what="every")
    except InvalidInput as exc:
        raise invalid("every", exc.message.removeprefix("every: ")) from None
    if not seconds > 0:
        raise invalid("every", "must be positive")
    if seconds < 1:
        raise invalid("every", "must be at least 1 second")
    return seconds


def check_timezone(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 64:
        raise invalid("timezone", "must be an IANA time zone name such as 'Europe/Berlin'")
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise invalid("timezone", f"unknown time zone {value!r}") from None
    return value


def _choice(value: Any, field: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise invalid(field, f"must be one of {', '.join(choices)}, not {value!r}")
    return str(value)


def _next_cron(expression: str, zone: zoneinfo.ZoneInfo, after: float) -> float:
    """The first instant strictly after ``after`` whose wall time in ``zone`` matches."""
    start = _dt.datetime.fromtimestamp(after, zone).replace(tzinfo=None)
    # From an hour before: a wall time of the repeated hour may still be ahead on the time line.
    wall = croniter(expression, start - _dt.timedelta(hours=1))
    for _ in range(_MAX_STEPS):
        local: _dt.datetime = wall.get_next(_dt.datetime)
        at = _instant(local, zone)
        if at > after:
            return at
    raise ValueError(f"no fire of {expression!r} found after {after}")


def _latest_cron(expression: str, zone: zoneinfo.ZoneInfo, now: float, count: int) -> list[float]:
    # From an hour after: a skipped wall time fires after its gap, so one later than now's
    # wall time may be behind us on the time line.
    start = _dt.datetime.fromtimestamp(now, zone).replace(tzinfo=None) + _dt.timedelta(hours=1)
    wall = croniter(expression, start)
    found: set[float] = set()
    for _ in range(_MAX_STEPS + count):
        at = _instant(wall.get_prev(_dt.datetime), zone)
        if at <= now:
            found.add(at)
            if len(found) == count:
                break
    return sorted(found)


def _instant(wall: _dt.datetime, zone: zoneinfo.ZoneInfo) -> float:
    """``wall`` (naive, in ``zone``) on the time line: fold=0 takes the first of a repeated
    wall time, and shifts a skipped one forward by the gap (the offset before it)."""
    return wall.replace(tzinfo=zone, fold=0).timestamp()


def fire_id(schedule_id: str, fire_at: float) -> str:
    """The id of the instance of the fire at ``fire_at``: ``{id}-YYYYMMDDTHHMMSSZ``."""
    moment = _dt.datetime.fromtimestamp(fire_at, _dt.UTC)
    return f"{schedule_id}-{moment.strftime('%Y%m%dT%H%M%SZ')}"
