"""The table of the API's operations: routes, the OpenAPI document and the client's requests
are all built from it, and a handler missing or extra is an error at start-up."""

from __future__ import annotations

import re

import pytest
from starlette.requests import Request
from starlette.responses import Response

from dispatcher import openapi_document
from dispatcher.http import _schemas
from dispatcher.http._routing import every_route, routes
from treadle.client import OPERATIONS
from treadle.client import _requests as requests


async def _handler(request: Request) -> Response:
    return Response()


def test_each_operation_has_one_name_and_one_route() -> None:
    names = [op.name for op in OPERATIONS]
    assert len(set(names)) == len(names)
    routes_ = [(op.path, op.method) for op in OPERATIONS]
    assert len(set(routes_)) == len(routes_)


def test_routes_come_from_the_table_in_its_order() -> None:
    built = every_route({op.name: _handler for op in OPERATIONS})
    assert [(r.path, r.methods) for r in built] == [
        (op.path, {op.method, "HEAD"} if op.method == "GET" else {op.method}) for op in OPERATIONS
    ]


def test_a_missing_or_unknown_handler_stops_the_server() -> None:
    handlers = {op.name: _handler for op in OPERATIONS}
    del handlers["get_logs"]
    with pytest.raises(LookupError, match="get_logs"):
        every_route(handlers)
    with pytest.raises(LookupError, match="get_log_lines"):
        routes({"get_log_lines": _handler})


def test_the_document_describes_each_operation_of_the_table() -> None:
    document = openapi_document()
    for op in OPERATIONS:
        operation = document["paths"][op.path][op.method.lower()]
        assert operation["operationId"] == op.name
        assert operation["summary"] == op.summary
        assert str(op.status) in operation["responses"]
        for status in op.errors:
            assert str(status) in operation["responses"], (op.name, status)


def test_what_the_table_names_is_in_the_document() -> None:
    schemas = openapi_document()["components"]["schemas"]
    for op in OPERATIONS:
        assert op.body is None or op.body in schemas, op.name
        assert op.query is None or op.query in _schemas.QUERIES, op.name
        for parameter in re.findall(r"\{(\w+)\}", op.path):
            assert parameter in _schemas.PATH_PARAMS, (op.name, parameter)


def test_answers_are_described_by_the_client_models_that_read_them() -> None:
    schemas = openapi_document()["components"]["schemas"]
    logs = schemas["Logs"]
    assert set(logs["required"]) == {"logs", "next_cursor"}
    assert logs["properties"]["logs"]["items"] == {"$ref": "#/components/schemas/LogLine"}
    assert "retry_after" not in schemas["BatchResult"]["properties"]  # a header, not the body
    assert schemas["Instance"]["properties"]["status"]["enum"]


def test_the_client_sends_each_request_where_the_table_says() -> None:
    call = requests.logs("orders", "a/b", "c1")
    assert (call.method, call.path, call.params) == (
        "GET",
        "/v1/workflows/orders/instances/a%2Fb/logs",
        {"cursor": "c1"},
    )
    key = requests.rotate_key("acme", "k1", 0, None, None)
    assert (key.method, key.path, key.auth) == (
        "POST",
        "/v1/admin/tenants/acme/keys/k1/rotate",
        "admin",
    )
    assert requests.audit(None, None, None, None).path == "/v1/admin/audit"
    restart = requests.restart("w", "i", "charge", 2, True)
    assert (restart.method, restart.body) == (
        "PATCH",
        {"status": "restart", "from": {"name": "charge", "count": 2}, "upgrade": True},
    )
