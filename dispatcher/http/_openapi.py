"""The OpenAPI 3.1 document served at ``/openapi.json``, built from the table of the API's
operations (``treadle.client.OPERATIONS``).

Request bodies are described by the very pydantic models that parse them, answers by the
client's models that read them (narrowed by what the server knows, ``_schemas.NARROWED``), so
the document cannot drift from what the server accepts or what the client reads.
``tests/unit/test_dispatcher_openapi.py`` checks that every route of the app is in the document
and nothing else is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from dispatcher.http import _schemas as s
from dispatcher.http._bulk import BulkBody
from dispatcher.http._instances import BatchBody, NewInstanceBody
from dispatcher.http._lifecycle import StatusBody
from dispatcher.http._links import LinkBody
from dispatcher.http._schedules import ScheduleBody
from dispatcher.http._schemas import Schema
from loader import Upload
from tenants import KeyLifetime, NewTenant, Policy, Rotation
from treadle.client import OPERATIONS, Operation
from treadle.runtime import JSONValue

_REF = "#/components/schemas/{model}"
_ERRORS = {
    400: "The request is not valid (bad JSON, wrong types, unknown fields, bad names, a control "
    "character in the path).",
    401: "Missing or invalid credentials.",
    404: "Not found (also for another tenant's objects).",
    409: "Conflicts with what exists.",
    410: "The approval link has expired (``link.expired``): used up, out of time, or its "
    "instance has ended. Nothing was sent.",
    413: "The request body or a value in it is too large.",
    415: "The request body is not declared as JSON (Content-Type: application/json).",
    422: "The workflow code is not valid; ``problems`` says where.",
    429: "A quota or rate limit of the tenant's policy was reached; see Retry-After.",
    503: "The database is unreachable (``database.unavailable``) or every connection to it is "
    "busy (``database.busy``); try again after Retry-After. For an upload of Python to the "
    "``wasm`` sandbox also ``wasm.unavailable``: the Python-in-Wasm runtime could not be built "
    "on this server (the message says why; retrying does not help until an operator fixes it).",
}
_BUILDING = (
    "Nothing was stored yet: the server is building the Python-in-Wasm runtime (first start "
    "only) that this upload needs. Send the same request again after Retry-After seconds."
)
_RETRY_AFTER: Schema = {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}}
_SECURITY = {"admin": "adminToken", "tenant": "apiKey"}
_PARAMETER = re.compile(r"\{(\w+)\}")
# The models that parse request bodies; an operation's ``body`` names one of them.
_REQUESTS: list[type[BaseModel]] = [
    NewTenant,
    Policy,
    Upload,
    NewInstanceBody,
    BatchBody,
    StatusBody,
    KeyLifetime,
    Rotation,
    ScheduleBody,
    LinkBody,
    BulkBody,
]
# Fields that the request models take as any JSON, narrowed to what the server stores (no U+0000).
_JSON_FIELDS: dict[tuple[str, str], Schema] = {
    ("NewInstanceBody", "params"): s.ref("JsonValue"),
    ("BatchItem", "params"): s.ref("JsonValue"),
    ("ScheduleBody", "params"): s.ref("JsonValue"),
    # Any string (a bad id is the item's error), but no U+0000: the body itself is refused.
    ("BatchItem", "id"): {"anyOf": [s.TEXT, {"type": "null"}]},
}
_JSON_MAPS = {("Policy", "vars")}
# The client's names of answers that the document has always called otherwise.
_ANSWER_NAMES = {"AuditPage": "AuditList", "LogPage": "Logs", "ApiKeyInfo": "KeyInfo"}
# OpenAPI links: what a created object's id opens up (clients and stateful fuzzers follow them).
# producer -> (how to fill the next operation's path, {link name: operation})
_LINKS: dict[str, tuple[dict[str, JSONValue], dict[str, str]]] = {
    "create_tenant": (
        {"tenant": "$response.body#/name"},
        {"GetTenant": "get_tenant", "ChangePolicy": "update_policy", "CreateKey": "create_key"},
    ),
    "create_key": (
        {"tenant": "$request.path.tenant", "key_id": "$response.body#/id"},
        {"DeleteKey": "delete_key"},
    ),
    "deploy": (
        {"name": "$response.body#/name"},
        {
            "GetWorkflow": "get_workflow",
            "CreateInstance": "create_instance",
            "ListInstances": "list_instances",
            "DeleteWorkflow": "delete_workflow",
        },
    ),
    "create_instance": (
        {"name": "$request.path.name", "id": "$response.body#/id"},
        {
            "GetInstance": "get_instance",
            "GetLogs": "get_logs",
            "GetSteps": "get_steps",
            "ChangeStatus": "change_status",
            "SendEvent": "send_event",
            "DeleteInstance": "delete_instance",
        },
    ),
}


def _operation(op: Operation) -> Schema:
    responses: Schema = {str(op.status): _success(op)}
    if op.also is not None:
        responses[str(op.also)] = _success(op)
    if op.building is not None:
        responses["202"] = {
            "description": _BUILDING,
            "content": s.json(s.ref(_answer_name(op.building))),
            "headers": _RETRY_AFTER,
        }
    # Every API route checks its path (400) and credentials (401, in the database: 503 while
    # that is out of reach); every body is checked for size (413), media type (415) and
    # well-formed JSON (400) before the route sees it.
    secured = op.auth != "none"
    common = ((400, 401, 503) if secured else ()) + ((400, 413, 415) if op.body else ())
    for status in op.errors + common:
        responses[str(status)] = _error(status)
    if op.media == "text/html" and 410 in op.errors:  # an expired link's page is a page too
        responses["410"] = {"description": _ERRORS[410], "content": _HTML}
    operation: Schema = {
        "operationId": op.name,
        "summary": op.summary,
        "responses": dict(sorted(responses.items())),
    }
    if op.query == "list":
        operation["description"] = _TAG_FILTER
    if secured:
        operation["security"] = [{_SECURITY[op.auth]: []}]
    if parameters := _parameters(op):
        operation["parameters"] = parameters
    if op.body is not None:
        body = s.ref(op.body)
        if op.body == "JsonValue":
            what = "the instance's params" if op.name == "send_hook" else "the event payload"
            body["description"] = f"{what}: any JSON value"
        operation["requestBody"] = {"required": not op.optional_body, "content": s.json(body)}
    return operation


_HTML: Schema = {"text/html": {"schema": {"type": "string"}}}
_TAG_FILTER = (
    "Besides the parameters below, `tag.<key>=<value>` (repeatable, e.g. "
    "`tag.team=ml&tag.env=prod`) keeps the instances that carry every one of those tags."
)


def _success(op: Operation) -> Schema:
    response: Schema = {"description": op.summary}
    if op.media == "text/event-stream":
        response["content"] = {op.media: {"schema": s.SSE_EVENT}}
    elif op.media == "text/html":
        response["content"] = _HTML
    elif op.answer is not None:
        response["content"] = s.json(s.ref(_answer_name(op.answer)))
    return response


def _error(status: int) -> Schema:
    response: Schema = {"description": _ERRORS[status], "content": s.json(s.ref("Error"))}
    if status in (429, 503):
        response["headers"] = _RETRY_AFTER
    return response


def _parameters(op: Operation) -> list[JSONValue]:
    parameters: list[JSONValue] = [
        {"name": name, "in": "path", "required": True, "schema": s.PATH_PARAMS[name]}
        for name in _PARAMETER.findall(op.path)
    ]
    return parameters + (s.QUERIES[op.query] if op.query is not None else [])


def _answer_name(model: type[BaseModel]) -> str:
    return _ANSWER_NAMES.get(model.__name__, model.__name__)


def _api_paths() -> Schema:
    paths: dict[str, Schema] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    for producer, (parameters, targets) in _LINKS.items():
        _link(paths, _named(producer), parameters, targets)
    return dict(paths)


def _link(
    paths: dict[str, Schema],
    producer: Operation,
    parameters: dict[str, JSONValue],
    targets: dict[str, str],
) -> None:
    responses = _object(paths[producer.path][producer.method.lower()])["responses"]
    success = _object(_object(responses)[str(producer.status)])
    success["links"] = {
        name: {"operationRef": _operation_ref(_named(target)), "parameters": dict(parameters)}
        for name, target in targets.items()
    }


def _named(name: str) -> Operation:
    return next(op for op in OPERATIONS if op.name == name)


def _operation_ref(op: Operation) -> str:
    path = op.path.replace("~", "~0").replace("/", "~1")
    return f"#/paths/{path}/{op.method.lower()}"


def _object(value: JSONValue) -> Schema:
    assert isinstance(value, dict)
    return value


def _plain_paths() -> Schema:
    text: Schema = {"text/plain": {"schema": {"type": "string"}}}
    layers: Schema = {"type": "object", "additionalProperties": {"type": "boolean"}}
    wall: Schema = {"anyOf": [layers, {"type": "null"}]}
    health: Schema = {
        "type": "object",
        "required": ["status"],
        "properties": {"status": s.STR, "sandbox_wall": wall},
    }
    return {
        "/healthz": {
            "get": {
                "summary": "Ready to serve",
                "responses": {
                    "200": {"description": "ready", "content": s.json(health)},
                    "503": {
                        "description": "not ready: starting, stopping, or the database does not "
                        "answer",
                        "content": s.json(health),
                        "headers": _RETRY_AFTER,
                    },
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics of the whole platform",
                "description": "For the admin token only. `--metrics-port` (serve and worker) "
                "serves them without credentials on a port of their own.",
                "security": [{"adminToken": []}],
                "responses": {
                    "200": {"description": "metrics", "content": text},
                    "401": {"description": _ERRORS[401], "content": s.json(s.ref("Error"))},
                    "503": _error(503),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1", "content": s.json({})}},
            }
        },
        "/": {
            "get": {
                "summary": "Leads a browser to the playground",
                "responses": {
                    "307": {
                        "description": "to /playground",
                        "headers": {
                            "Location": {"schema": {"type": "string"}, "description": "/playground"}
                        },
                    }
                },
            }
        },
        "/playground": _page("The browser playground"),
        "/console": _page("The operator console (it asks for the admin token)"),
    }


def _page(summary: str) -> Schema:
    return {
        "get": {
            "summary": summary,
            "responses": {
                "200": {
                    "description": "an HTML page",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
        }
    }


def _request_schemas() -> dict[str, Schema]:
    _, top = models_json_schema([(m, "validation") for m in _REQUESTS], ref_template=_REF)
    schemas = {name: _object(schema) for name, schema in top.get("$defs", {}).items()}
    for (model, name), narrowed in _JSON_FIELDS.items():
        properties = _object(schemas[model]["properties"])
        properties[name] = {**_object(properties[name]), **narrowed}
    for model, name in _JSON_MAPS:
        field = _object(_object(schemas[model]["properties"])[name])
        field["propertyNames"] = s.TEXT
        field["additionalProperties"] = s.ref("JsonValue")
    return schemas


def _answer_schemas(taken: Iterable[str]) -> dict[str, Schema]:
    """The schemas of the answers, from the client's models; a schema the document already
    has (``Policy``: the request's, which is stricter; ``JsonValue``) is not replaced."""
    answers = [model for op in OPERATIONS for model in (op.answer, op.building)]
    models = list(dict.fromkeys(model for model in answers if model is not None))
    _, top = models_json_schema([(m, "serialization") for m in models], ref_template=_REF)
    schemas: dict[str, Schema] = {}
    for name, schema in top.get("$defs", {}).items():
        name = _ANSWER_NAMES.get(name, name)
        if name not in taken:
            schemas[name] = _object(_renamed(schema))
    for (model, name), narrowed in s.NARROWED.items():
        _object(schemas[model]["properties"])[name] = narrowed
    for model, name in s.OPTIONAL:
        required = schemas[model]["required"]
        assert isinstance(required, list)
        required.remove(name)
    return schemas


def _renamed(schema: JSONValue) -> JSONValue:
    """``schema`` with its references to answers by the document's names."""
    if isinstance(schema, list):
        return [_renamed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    renamed = {key: _renamed(value) for key, value in schema.items()}
    target = renamed.get("$ref")
    if isinstance(target, str):
        model = target.rsplit("/", 1)[1]
        renamed["$ref"] = _REF.format(model=_ANSWER_NAMES.get(model, model))
    return renamed


def openapi_document() -> Schema:
    fixed: dict[str, Schema] = {"Error": s.ERROR, "JsonValue": s.JSON_VALUE}
    requests = _request_schemas()
    answers = _answer_schemas({*fixed, *requests})
    bearer: Schema = {"type": "http", "scheme": "bearer"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "treadle",
            "version": "1",
            "description": "Multi-tenant durable workflows: upload code, create instances.",
        },
        "paths": {**_plain_paths(), **_api_paths()},
        "components": {
            "schemas": {**requests, **fixed, **answers},
            "securitySchemes": {
                "adminToken": {**bearer, "description": "the admin token"},
                "apiKey": {**bearer, "description": "a tenant API key (tdl_...)"},
            },
        },
    }
