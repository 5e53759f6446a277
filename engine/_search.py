"""Instance tags and the filters of instance listings (and of bulk operations).

A filter reads the same from a query string (``?status=errored&tag.team=ml``) and from JSON
(``{"status": ["errored"], "tags": {"team": "ml"}}``): in JSON, tags are one object (every pair
must match) and ``status`` a string or a list; times are ISO 8601 with a zone in a query and
either that or epoch seconds in JSON. Every clause is index-driven (migration m0013): tags by
containment in a GIN index on PostgreSQL (read on SQLite), an id prefix as a range of ids, an
error by its stored name, times through a bound of pks.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import GenericFunction

from engine._names import MAX_ROW_ID, STATUSES, check_status
from storage import tables
from treadle.errors import InvalidInput

I = tables.instances  # noqa: E741
_B = I.alias("bound")
CLOCK_SLACK = 300.0
"""Seconds by which an instance's pk may lag its ``created_at``: the time from the clock read
of its create to its insert, plus the skew of the clocks of the processes that create. A time
filter reads instances by pk from the bound it gives (``created_at`` sorts by pk but for
creates that race), and then checks ``created_at`` itself."""
MAX_TAGS = 16
MAX_TAG_KEY = 64
MAX_TAG_VALUE = 256
TAG_KEY = re.compile(r"[A-Za-z0-9_.:/-]{1,64}")
TAG_PREFIX = "tag."
INVALID_TAGS = "instance.invalid_tags"
INVALID_FILTER = "request.invalid_filter"
UNKNOWN = "request.unknown_parameter"
PAGING = ("limit", "cursor")
"""Query parameters of a listing that are not its filter."""
FIELDS = (
    "workflow",
    "status",
    "tags",
    "key",
    "created_after",
    "created_before",
    "id_prefix",
    "error_name",
)
"""The fields of a filter in JSON (``status`` and ``tags`` as the query's repeated params)."""
_TEXT = ("key", "id_prefix", "error_name")
_TIMES = ("created_after", "created_before")
# Instance ids are ASCII letters, digits, "_" and "-": every id starting with p sorts in
# [p, p + DEL) when the database compares bytes (SQLite; PostgreSQL with a C collation),
# and the substring test keeps the match exact whatever the collation.
_PAST_ID = "\x7f"
_LEAP_SECOND = re.compile(r"(?<=T\d\d:\d\d):60(?=[.zZ+-])", re.IGNORECASE)


def check_tags(value: Any, what: str = "tags") -> dict[str, str]:
    """``value`` as instance tags: an object of at most 16 string pairs, keys of 1 to 64 of
    ``A-Z a-z 0-9 _ . : / -``, values of at most 256 characters; raises ``InvalidInput``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be an object of strings", code=INVALID_TAGS)
    if len(value) > MAX_TAGS:
        raise InvalidInput(f"{what} has {len(value)} pairs; at most {MAX_TAGS}", code=INVALID_TAGS)
    for key, item in value.items():
        check_tag(key, item, what)
    return dict(value)


def check_tag(key: Any, value: Any, what: str = "tags") -> tuple[str, str]:
    if not isinstance(key, str) or not TAG_KEY.fullmatch(key):
        raise InvalidInput(
            f"{what}: key {str(key)[:80]!r} must be 1 to {MAX_TAG_KEY} characters of "
            "A-Z a-z 0-9 _ . : / -",
            code=INVALID_TAGS,
        )
    if not isinstance(value, str):
        raise InvalidInput(f"{what}: the value of {key!r} must be a string", code=INVALID_TAGS)
    if len(value) > MAX_TAG_VALUE:
        raise InvalidInput(
            f"{what}: the value of {key!r} is longer than {MAX_TAG_VALUE} characters",
            code=INVALID_TAGS,
        )
    return key, value


def error_name(error: Any) -> str | None:
    """The name an instance's error is searched by (``error_name``): its class name."""
    name = error.get("name") if isinstance(error, dict) else None
    return name[:256] if isinstance(name, str) else None


@dataclass(frozen=True)
class InstanceFilter:
    """Which instances of a tenant a listing (or a bulk operation) takes: all that match
    every field given. ``tags`` pairs all match (AND); ``statuses``, any of them."""

    workflow: str | None = None
    statuses: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()  # AND
    key: str | None = None
    created_after: float | None = None  # epoch seconds
    created_before: float | None = None
    id_prefix: str | None = None
    error_name: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> InstanceFilter:
        """The filter of a JSON object (see the module); raises ``InvalidInput`` for an unknown
        field or a bad value."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise InvalidInput("filter must be an object", code=INVALID_FILTER)
        for name in data:
            if name not in FIELDS:
                raise InvalidInput(
                    f"unknown filter field {str(name)[:80]!r}; one of: {', '.join(FIELDS)}",
                    code=UNKNOWN,
                )
        workflow = _text(data.get("workflow"), "workflow")
        status = data.get("status")
        statuses = [status] if isinstance(status, str) else status
        if statuses is not None and not isinstance(statuses, list):
            raise InvalidInput("status must be a string or a list", code=INVALID_FILTER)
        tags = data.get("tags")
        if tags is not None and not isinstance(tags, dict):
            raise InvalidInput("tags must be an object of strings", code=INVALID_FILTER)
        fields = {name: _text(data.get(name), name) for name in _TEXT}
        times = {name: _time(data.get(name), name) for name in _TIMES}
        return cls.build(workflow, statuses or (), (tags or {}).items(), **fields, **times)

    @classmethod
    def from_query(cls, query: Any, workflow: str | None) -> InstanceFilter:
        """The filter of a listing's query (starlette ``QueryParams``): ``status`` and
        ``tag.<k>=<v>`` repeatable; ``limit`` and ``cursor`` are left to the listing; any other
        parameter is refused."""
        tags: list[tuple[str, str]] = []
        for name, value in query.multi_items():
            if name.startswith(TAG_PREFIX):
                tags.append((name[len(TAG_PREFIX) :], value))
            elif name != "status" and name not in PAGING and name not in FIELDS[3:]:
                known = ", ".join(("status", "tag.<key>", *FIELDS[3:], *PAGING))
                raise InvalidInput(
                    f"unknown query parameter {name[:80]!r}; this route takes {known}", code=UNKNOWN
                )
        for name in ("key", "id_prefix", "error_name", *_TIMES):
            if len(query.getlist(name)) > 1:
                raise InvalidInput(f"{name} is given more than once", code=INVALID_FILTER)
        fields = {name: query.get(name) for name in _TEXT}
        times = {name: _time(query.get(name), name) for name in _TIMES}
        return cls.build(workflow, query.getlist("status"), tags, **fields, **times)

    @classmethod
    def build(
        cls,
        workflow: str | None,
        statuses: Iterable[Any],
        tags: Iterable[tuple[Any, Any]],
        **fields: Any,
    ) -> InstanceFilter:
        """A filter from checked parts: statuses known, tags well formed, text non-empty."""
        found = tuple(dict.fromkeys(check_status(_status(s)) for s in statuses))
        pairs = tuple(dict.fromkeys(check_tag(k, v, "tag filter") for k, v in tags))
        if len(pairs) > MAX_TAGS:
            raise InvalidInput(f"at most {MAX_TAGS} tags in a filter", code=INVALID_FILTER)
        for name in _TEXT:
            if fields.get(name) is not None and not 1 <= len(fields[name]) <= 256:
                raise InvalidInput(f"{name} must be 1 to 256 characters", code=INVALID_FILTER)
        return cls(workflow, found, pairs, **fields)

    def to_json(self) -> dict[str, Any]:
        """The filter as :meth:`from_json` reads it (only the fields given)."""
        data: dict[str, Any] = {
            "workflow": self.workflow,
            "status": list(self.statuses) or None,
            "tags": dict(self.tags) or None,
            "key": self.key,
            "created_after": self.created_after,
            "created_before": self.created_before,
            "id_prefix": self.id_prefix,
            "error_name": self.error_name,
        }
        return {name: value for name, value in data.items() if value is not None}

    def where(self, tenant_id: int) -> list[sa.ColumnElement[bool]]:
        """The clauses over ``instances`` selecting the tenant's instances that match."""
        clauses: list[sa.ColumnElement[bool]] = [I.c.tenant_id == tenant_id]
        if self.workflow is not None:
            clauses.append(I.c.workflow == self.workflow)
        if len(self.statuses) == 1:
            clauses.append(I.c.status == self.statuses[0])
        elif self.statuses:
            clauses.append(I.c.status.in_(self.statuses))
        for k, v in self.tags:
            clauses.append(_tagged(k, v))
        if self.key is not None:
            clauses.append(I.c.flow_key == self.key)
        if self.created_after is not None:
            clauses += _created_after(tenant_id, self.created_after)
        if self.created_before is not None:
            clauses += _created_before(tenant_id, self.created_before)
        if self.id_prefix is not None:
            clauses += _id_prefix(self.id_prefix)
        if self.error_name is not None:
            clauses.append(I.c.error_name == self.error_name)
        return clauses


def listing(tenant_id: int, match: InstanceFilter, before: int | None) -> sa.Select[Any]:
    """The tenant's instances that ``match``, newest first, before the cursor ``before``."""
    query = sa.select(I).where(*match.where(tenant_id), I.c.pk <= _newest(tenant_id))
    if before is not None:
        query = query.where(I.c.pk < before)
    return query.order_by(I.c.pk.desc())


def _newest(tenant_id: int) -> sa.ScalarSelect[Any]:
    # Redundant, but it starts a scan of the primary key at the tenant's newest instance: the
    # planner, which takes a tenant's instances to be spread evenly, may otherwise read every
    # newer instance of the other tenants before the first of one that has been quiet.
    return sa.select(sa.func.max(_B.c.pk)).where(_B.c.tenant_id == tenant_id).scalar_subquery()


def _created_after(tenant_id: int, time: float) -> list[sa.ColumnElement[bool]]:
    """``created_at > time``, and a bound of ``pk`` that an index scan of pks starts from: an
    instance created before ``time - CLOCK_SLACK`` got its pk before any created after
    ``time`` (see :data:`CLOCK_SLACK`)."""
    earlier = (
        sa.select(_B.c.pk)
        .where(_B.c.tenant_id == tenant_id, _B.c.created_at < time - CLOCK_SLACK)
        .order_by(_B.c.created_at.desc())
        .limit(1)
        .scalar_subquery()
    )
    return [I.c.created_at > time, I.c.pk > sa.func.coalesce(earlier, 0)]


def _created_before(tenant_id: int, time: float) -> list[sa.ColumnElement[bool]]:
    """``created_at < time``, and the bound of ``pk`` of :func:`_created_after`'s reasoning."""
    later = (
        sa.select(_B.c.pk)
        .where(_B.c.tenant_id == tenant_id, _B.c.created_at > time + CLOCK_SLACK)
        .order_by(_B.c.created_at)
        .limit(1)
        .scalar_subquery()
    )
    return [I.c.created_at < time, I.c.pk < sa.func.coalesce(later, MAX_ROW_ID)]


class has_tag(GenericFunction[bool]):
    """``has_tag(tags, key, value, {key: value} as JSON)``: whether the instance has the tag.
    PostgreSQL: containment, which the GIN index of ``tags`` answers; SQLite: the key read."""

    type = sa.Boolean()
    inherit_cache = True


@compiles(has_tag, "postgresql")
def _has_tag_postgresql(element: has_tag, compiler: SQLCompiler, **kw: Any) -> str:
    tags, _, _, pair = element.clauses.clauses
    return f"({compiler.process(tags, **kw)} @> CAST({compiler.process(pair, **kw)} AS JSONB))"


@compiles(has_tag)
def _has_tag(element: has_tag, compiler: SQLCompiler, **kw: Any) -> str:
    tags, key, value, _ = (compiler.process(c, **kw) for c in element.clauses.clauses)
    return f"(json_extract({tags}, '$.\"' || {key} || '\"') = {value})"


def _tagged(k: str, v: str) -> sa.ColumnElement[bool]:
    pair = json.dumps({k: v}, separators=(",", ":"))
    return has_tag(I.c.tags, sa.literal(k), sa.literal(v), sa.literal(pair))


def _id_prefix(prefix: str) -> list[sa.ColumnElement[bool]]:
    exact = sa.func.substr(I.c.id, 1, len(prefix)) == prefix
    return [I.c.id >= prefix, I.c.id < prefix + _PAST_ID, exact]


def _status(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInput(
            f"status must be one of: {', '.join(STATUSES)}", code="instance.invalid_status"
        )
    return value


def _text(value: Any, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string", code=INVALID_FILTER)
    return value


def _time(value: Any, name: str) -> float | None:
    """Epoch seconds of an ISO 8601 time with a zone (or, in JSON, a number)."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be an ISO 8601 time", code=INVALID_FILTER)
    try:
        return iso_seconds(value)
    except ValueError:
        raise InvalidInput(not_iso(name, value), code=INVALID_FILTER) from None


def iso_seconds(value: str) -> float:
    """Epoch seconds of an ISO 8601 time with a time zone (``2026-05-01T09:00:00Z``,
    ``...+02:00``); raises ``ValueError``. A leap second is the second after."""
    leap = _LEAP_SECOND.search(value)
    text = value[: leap.start()] + ":59" + value[leap.end() :] if leap else value
    try:
        time = _dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        if time.tzinfo is None:
            raise ValueError("no time zone")
        return time.timestamp() + (1 if leap else 0)
    except OverflowError as exc:
        raise ValueError(str(exc)) from None


def not_iso(name: str, value: str) -> str:
    return (
        f"{name}: {value[:64]!r} is not an ISO 8601 time with a time zone, "
        "like 2026-05-01T09:00:00Z"
    )
