"""The OpenAPI 3.1 document served at ``/openapi.json``.

Request bodies are described by the very pydantic models that parse them, so the document
cannot drift from what the server accepts; responses are described by hand below, next to
the operation table. ``tests/unit/test_dispatcher_openapi.py`` checks that every route of the
app is in the document and nothing else is.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from dispatcher.http import _schemas as s
from dispatcher.http._instances import MAX_BATCH, BatchBody, NewInstanceBody
from dispatcher.http._lifecycle import StatusBody
from engine import MAX_ROW_ID
from loader import Upload
from tenants import KeyLifetime, NewTenant, Policy, Rotation

_REF = "#/components/schemas/{model}"
_ERRORS = {
    400: "The request is not valid (bad JSON, wrong types, unknown fields, bad names, a control "
    "character in the path).",
    401: "Missing or invalid credentials.",
    404: "Not found (also for another tenant's objects).",
    409: "Conflicts with what exists.",
    413: "The request body or a value in it is too large.",
    415: "The request body is not declared as JSON (Content-Type: application/json).",
    422: "The workflow code is not valid; ``problems`` says where.",
    429: "A quota or rate limit of the tenant's policy was reached; see Retry-After.",
    503: "The database is unreachable (``database.unavailable``) or every connection to it is "
    "busy (``database.busy``); try again after Retry-After.",
}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}}
_NAME = {"name": "name", "in": "path", "required": True, "schema": s.NAME}
_TENANT = {"name": "tenant", "in": "path", "required": True, "schema": s.NAME}
_ID = {"name": "id", "in": "path", "required": True, "schema": s.INSTANCE_ID}
_KEY_ID = {"name": "key_id", "in": "path", "required": True, "schema": s.KEY_ID}
# Fields that the models take as any JSON, narrowed to what the server stores (no U+0000).
_JSON_FIELDS = {
    ("NewInstanceBody", "params"): s.ref("JsonValue"),
    ("BatchItem", "params"): s.ref("JsonValue"),
    # Any string (a bad id is the item's error), but no U+0000: the body itself is refused.
    ("BatchItem", "id"): {"anyOf": [s.TEXT, {"type": "null"}]},
}
_JSON_MAPS = {("Policy", "vars")}

_T, _W = "/v1/admin/tenants/{tenant}", "/v1/workflows/{name}"
_I = _W + "/instances/{id}"
# OpenAPI links: what a created object's id opens up (clients and stateful fuzzers follow them).
# (producer path, method) -> (how to fill the next operation's path, {link name: (path, method)})
_LINKS: dict[tuple[str, str], tuple[dict[str, str], dict[str, tuple[str, str]]]] = {
    ("/v1/admin/tenants", "post"): (
        {"tenant": "$response.body#/name"},
        {
            "GetTenant": (_T, "get"),
            "ChangePolicy": (_T + "/policy", "patch"),
            "CreateKey": (_T + "/keys", "post"),
        },
    ),
    (_T + "/keys", "post"): (
        {"tenant": "$request.path.tenant", "key_id": "$response.body#/id"},
        {"DeleteKey": (_T + "/keys/{key_id}", "delete")},
    ),
    (_W, "put"): (
        {"name": "$response.body#/name"},
        {
            "GetWorkflow": (_W, "get"),
            "CreateInstance": (_W + "/instances", "post"),
            "ListInstances": (_W + "/instances", "get"),
            "DeleteWorkflow": (_W, "delete"),
        },
    ),
    (_W + "/instances", "post"): (
        {"name": "$request.path.name", "id": "$response.body#/id"},
        {
            "GetInstance": (_I, "get"),
            "GetLogs": (_I + "/logs", "get"),
            "GetSteps": (_I + "/steps", "get"),
            "ChangeStatus": (_I + "/status", "patch"),
            "SendEvent": (_I + "/events/{type}", "post"),
            "DeleteInstance": (_I, "delete"),
        },
    ),
}


def _op(
    summary: str,
    ok: int,
    result: dict[str, Any] | None,
    errors: tuple[int, ...],
    *,
    auth: str | None,
    body: str | dict[str, Any] | None = None,
    params: tuple[dict[str, Any], ...] = (),
    optional_body: bool = False,
) -> dict[str, Any]:
    responses: dict[str, Any] = {str(ok): {"description": summary}}
    if result is not None:
        responses[str(ok)]["content"] = {"application/json": {"schema": result}}
    # Every API route checks its path (400) and credentials (401, in the database: 503 while
    # that is out of reach); every body is checked for size (413), media type (415) and
    # well-formed JSON (400) before the route sees it.
    common = ((400, 401, 503) if auth else ()) + ((400, 413, 415) if body else ())
    for status in errors + common:
        responses[str(status)] = {
            "description": _ERRORS[status],
            "content": {"application/json": {"schema": s.ref("Error")}},
        }
        if status in (429, 503):
            responses[str(status)]["headers"] = _RETRY_AFTER
    op: dict[str, Any] = {"summary": summary, "responses": dict(sorted(responses.items()))}
    if auth:
        op["security"] = [{auth: []}]
    if params:
        op["parameters"] = list(params)
    if body is not None:
        schema = s.ref(body) if isinstance(body, str) else body
        op["requestBody"] = {"required": not optional_body, "content": s.json(schema)}
    return op


def _admin_paths() -> dict[str, Any]:
    tenant, admin = s.ref("Tenant"), "adminToken"
    return {
        "/v1/admin/tenants": {
            "post": _op("Create a tenant", 201, tenant, (409,), auth=admin, body="NewTenant"),
            "get": _op("List tenants", 200, s.ref("TenantList"), (), auth=admin),
        },
        "/v1/admin/tenants/{tenant}": {
            "get": _op("Get a tenant", 200, tenant, (404,), auth=admin, params=(_TENANT,)),
        },
        "/v1/admin/tenants/{tenant}/policy": {
            "patch": _op(
                "Change some fields of a tenant's policy; returns the whole policy",
                200,
                s.ref("Policy"),
                (404,),
                auth=admin,
                body="Policy",
                params=(_TENANT,),
            ),
        },
    }


def _key_paths() -> dict[str, Any]:
    """A tenant's API keys: create, list (with their last use), rotate, delete."""
    admin, key_id = "adminToken", {**_ID, "name": "key_id"}
    return {
        "/v1/admin/tenants/{tenant}/keys": {
            "get": _op(
                "List the tenant's API keys (never their secrets), with when each was last used",
                200,
                s.ref("KeyList"),
                (404,),
                auth=admin,
                params=(_TENANT,),
            ),
            "post": _op(
                "Create an API key (the key is shown only this once), maybe with a lifetime",
                201,
                s.ref("ApiKey"),
                (404,),
                auth=admin,
                body="KeyLifetime",
                params=(_TENANT,),
                optional_body=True,
            ),
        },
        "/v1/admin/tenants/{tenant}/keys/{key_id}": {
            "delete": _op(
                "Delete an API key; it stops working at once",
                204,
                None,
                (404,),
                auth=admin,
                params=(_TENANT, _KEY_ID),
            ),
        },
        "/v1/admin/tenants/{tenant}/keys/{key_id}/rotate": {
            "post": _op(
                "Replace an API key: a new key now, the old one until the overlap ends",
                201,
                s.ref("RotatedKey"),
                (404, 409),
                auth=admin,
                body="Rotation",
                params=(_TENANT, key_id),
                optional_body=True,
            ),
        },
    }


def _audit_paths() -> dict[str, Any]:
    admin = "adminToken"
    tenant_filter = {"name": "tenant", "in": "query", "required": False, "schema": s.NAME}
    return {
        "/v1/admin/tenants/{tenant}/audit": {
            "get": _op(
                "The audit log of one tenant, newest first",
                200,
                s.ref("AuditList"),
                (400, 404),
                auth=admin,
                params=(_TENANT, *s.AUDIT_PARAMS),
            ),
        },
        "/v1/admin/audit": {
            "get": _op(
                "The audit log of admin actions, newest first",
                200,
                s.ref("AuditList"),
                (400,),
                auth=admin,
                params=(tenant_filter, *s.AUDIT_PARAMS),
            ),
        },
    }


def _workflow_paths() -> dict[str, Any]:
    key = "apiKey"
    return {
        "/v1/workflows": {
            "get": _op("List workflows", 200, s.ref("WorkflowList"), (), auth=key),
        },
        "/v1/workflows/{name}": {
            "put": _op(
                "Upload workflow code and make it the current version",
                201,
                s.ref("StoredCode"),
                (422, 429),
                auth=key,
                body="Upload",
                params=(_NAME,),
            ),
            "get": _op(
                "Get a workflow and its versions",
                200,
                s.ref("Workflow"),
                (404,),
                auth=key,
                params=(_NAME,),
            ),
            "delete": _op(
                "Delete a workflow, its code and its instances",
                204,
                None,
                (404,),
                auth=key,
                params=(_NAME,),
            ),
        },
    }


def _instance_paths() -> dict[str, Any]:
    key, base = "apiKey", "/v1/workflows/{name}/instances"
    one = (_NAME, _ID)
    event_type = {"name": "type", "in": "path", "required": True, "schema": s.EVENT_TYPE}
    payload = {**s.ref("JsonValue"), "description": "the event payload: any JSON value"}
    return {
        base: {
            "post": _op(
                "Create an instance of the workflow's current version",
                201,
                s.ref("Created"),
                (404, 409, 429),
                auth=key,
                body="NewInstanceBody",
                params=(_NAME,),
                optional_body=True,
            ),
            "get": _op(
                "List instances, newest first",
                200,
                s.ref("InstanceList"),
                (400, 404),
                auth=key,
                params=(_NAME, *s.LIST_PARAMS),
            ),
        },
        base + "/batch": {
            "post": _op(
                f"Create up to {MAX_BATCH} instances; errors are reported per item",
                200,
                s.ref("BatchResult"),
                (404, 429),
                auth=key,
                body="BatchBody",
                params=(_NAME,),
            ),
        },
        base + "/{id}/events/{type}": {
            "post": _op(
                "Send an event to an instance",
                202,
                {"type": "object"},
                (404, 409, 429),
                auth=key,
                body=payload,
                params=(*one, event_type),
                optional_body=True,
            ),
        },
        base + "/{id}/logs": {
            "get": _op(
                "Get a page of an instance's log, oldest first",
                200,
                s.ref("Logs"),
                (404,),
                auth=key,
                params=(*one, *s.PAGE_PARAMS),
            ),
        },
        base + "/{id}/steps": {
            "get": _op(
                "Get a page of an instance's steps, in order",
                200,
                s.ref("StepPage"),
                (404,),
                auth=key,
                params=(*one, *s.PAGE_PARAMS),
            ),
        },
        **_lifecycle_paths(base, key, one),
    }


def _lifecycle_paths(base: str, key: str, one: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    event_id = {"type": "integer", "minimum": 0, "maximum": MAX_ROW_ID}
    after = {
        "name": "after",
        "in": "query",
        "required": False,
        "schema": event_id,
        "description": "resume after this event id (or send the Last-Event-ID header)",
    }
    last_event_id = {
        "name": "Last-Event-ID",
        "in": "header",
        "required": False,
        "schema": event_id,
        "description": "resume after this event id; takes precedence over ``after``",
    }
    sse = {"text/event-stream": {"schema": s.SSE_EVENT}}
    stream = _op(
        "Stream the instance's history, then live events (Server-Sent Events)",
        200,
        None,
        (400, 404, 429),
        auth=key,
        params=(*one, after, last_event_id),
    )
    stream["responses"]["200"]["content"] = sse
    return {
        base + "/{id}": {
            "get": _op("Get an instance", 200, s.ref("Instance"), (404,), auth=key, params=one),
            "delete": _op("Delete an instance", 204, None, (404,), auth=key, params=one),
        },
        base + "/{id}/status": {
            "patch": _op(
                "Pause, resume, terminate or restart an instance",
                200,
                s.ref("Instance"),
                (404, 409),
                auth=key,
                body="StatusBody",
                params=one,
            ),
        },
        base + "/{id}/stream": {"get": stream},
    }


def _plain_paths() -> dict[str, Any]:
    text = {"text/plain": {"schema": {"type": "string"}}}
    layers = {"type": "object", "additionalProperties": {"type": "boolean"}}
    wall = {"anyOf": [layers, {"type": "null"}]}
    health = {
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
                    "503": {
                        "description": _ERRORS[503],
                        "content": s.json(s.ref("Error")),
                        "headers": _RETRY_AFTER,
                    },
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1", "content": s.json({})}},
            }
        },
        "/playground": {
            "get": {
                "summary": "The browser playground",
                "responses": {
                    "200": {
                        "description": "an HTML page",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }


def _request_schemas() -> dict[str, Any]:
    models: list[type[BaseModel]] = [
        NewTenant,
        Policy,
        Upload,
        NewInstanceBody,
        BatchBody,
        StatusBody,
        KeyLifetime,
        Rotation,
    ]
    _, top = models_json_schema([(m, "validation") for m in models], ref_template=_REF)
    schemas: dict[str, Any] = top.get("$defs", {})
    for (model, name), schema in _JSON_FIELDS.items():
        schemas[model]["properties"][name] = {**schemas[model]["properties"][name], **schema}
    for model, name in _JSON_MAPS:
        schemas[model]["properties"][name]["propertyNames"] = s.TEXT
        schemas[model]["properties"][name]["additionalProperties"] = s.ref("JsonValue")
    return schemas


def _add_links(paths: dict[str, Any]) -> None:
    for (path, method), (parameters, targets) in _LINKS.items():
        operation = paths[path][method]
        created = next(code for code in operation["responses"] if code.startswith("2"))
        operation["responses"][created]["links"] = {
            name: {"operationRef": _operation_ref(*target), "parameters": parameters}
            for name, target in targets.items()
        }


def _operation_ref(path: str, method: str) -> str:
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method


def openapi_document() -> dict[str, Any]:
    paths = {
        **_plain_paths(),
        **_admin_paths(),
        **_key_paths(),
        **_audit_paths(),
        **_workflow_paths(),
        **_instance_paths(),
    }
    _add_links(paths)
    bearer = {"type": "http", "scheme": "bearer"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "treadle",
            "version": "1",
            "description": "Multi-tenant durable workflows: upload code, create instances.",
        },
        "paths": paths,
        "components": {
            "schemas": {**_request_schemas(), **s.RESPONSES},
            "securitySchemes": {
                "adminToken": {**bearer, "description": "the admin token"},
                "apiKey": {**bearer, "description": "a tenant API key (tdl_...)"},
            },
        },
    }
