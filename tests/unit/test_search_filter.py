"""The filter of instance listings and bulk operations: read from a query string and from
JSON alike, written back to JSON and read again unchanged; what either refuses, and how."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.datastructures import QueryParams

from engine import InstanceFilter
from treadle.errors import InvalidInput

QUERY = (
    "status=errored&status=waiting&tag.team=ml&tag.run.id=a%2Fb&key=user-1&id_prefix=ord-"
    "&created_after=2026-01-01T00:00:00Z&created_before=2026-01-02T01:00:00%2B01:00"
    "&error_name=KeyError&limit=5&cursor=abc"
)


def test_a_query_and_its_json_are_the_same_filter() -> None:
    found = InstanceFilter.from_query(QueryParams(QUERY), "orders")
    assert found == InstanceFilter(
        workflow="orders",
        statuses=("errored", "waiting"),
        tags=(("team", "ml"), ("run.id", "a/b")),
        key="user-1",
        created_after=1767225600.0,
        created_before=1767312000.0,
        id_prefix="ord-",
        error_name="KeyError",
    )
    assert InstanceFilter.from_json(found.to_json()) == found
    assert InstanceFilter.from_json({"status": "errored"}).statuses == ("errored",)
    times = {"created_after": "2026-01-01T00:00:00Z", "created_before": 1767312000}
    assert InstanceFilter.from_json(times) == InstanceFilter(
        created_after=1767225600.0, created_before=1767312000.0
    )
    assert InstanceFilter.from_json(None) == InstanceFilter() == InstanceFilter.from_json({})
    assert InstanceFilter().to_json() == {}


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"colour": "red"}, "request.unknown_parameter"),
        ({"tag.team": "ml"}, "request.unknown_parameter"),
        ({"status": "done"}, "instance.invalid_status"),
        ({"status": ["errored", 3]}, "instance.invalid_status"),
        ({"status": {"a": 1}}, "request.invalid_filter"),
        ({"tags": ["team", "ml"]}, "request.invalid_filter"),
        ({"tags": {"team": 1}}, "instance.invalid_tags"),
        ({"tags": {"bad key": "v"}}, "instance.invalid_tags"),
        ({"key": 5}, "request.invalid_filter"),
        ({"key": ""}, "request.invalid_filter"),
        ({"created_after": True}, "request.invalid_filter"),
        ({"created_after": "2026-01-01"}, "request.invalid_filter"),
        (["status"], "request.invalid_filter"),
    ],
)
def test_json_that_is_not_a_filter_is_refused(data: Any, code: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        InstanceFilter.from_json(data)
    assert refused.value.code == code


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("colour=red", "request.unknown_parameter"),
        ("workflow=x", "request.unknown_parameter"),
        ("status=", "instance.invalid_status"),
        ("key=a&key=b", "request.invalid_filter"),
        ("tag.=v", "instance.invalid_tags"),
        ("created_before=tomorrow", "request.invalid_filter"),
    ],
)
def test_a_query_that_is_not_a_filter_is_refused(query: str, code: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        InstanceFilter.from_query(QueryParams(query), None)
    assert refused.value.code == code
