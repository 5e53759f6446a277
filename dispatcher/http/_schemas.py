"""JSON Schemas of the API's responses (DESIGN §6), for the OpenAPI document."""

from __future__ import annotations

from typing import Any

from engine import MAX_EVENT_TYPE, MAX_INSTANCE_ID, STATUSES
from tenants import ACTIONS
from treadle.runtime import MAX_SAFE_INTEGER

STR: dict[str, Any] = {"type": "string"}
INT: dict[str, Any] = {"type": "integer"}
ANY: dict[str, Any] = {}
TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
MAYBE_TIME: dict[str, Any] = {"type": ["string", "null"], "format": "date-time"}
NAME_PATTERN = "^[a-zA-Z0-9_][a-zA-Z0-9_-]*$"
NAME: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": NAME_PATTERN}
EVENT_TYPE: dict[str, Any] = {**NAME, "maxLength": MAX_EVENT_TYPE}
INSTANCE_ID: dict[str, Any] = {**NAME, "maxLength": MAX_INSTANCE_ID}
KEY_ID: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 32,
    "pattern": "^[a-zA-Z0-9]+$",
}
# What treadle stores (treadle.runtime._values): JSON whose strings (keys too) have no
# U+0000 (nor lone surrogates, which no schema can say) and whose integers are within ±2^53.
TEXT: dict[str, Any] = {"type": "string", "pattern": "^[^\\x00]*$"}
JSON_VALUE: dict[str, Any] = {
    "description": (
        "Any JSON value that can be stored: strings and keys without U+0000 or lone "
        "surrogates, integers within ±2^53 (other numbers finite), nested at most 256 deep."
    ),
    "anyOf": [
        {"type": ["null", "boolean"]},
        TEXT,
        {"type": "array", "items": {"$ref": "#/components/schemas/JsonValue"}},
        {
            "type": "object",
            "propertyNames": TEXT,
            "additionalProperties": {"$ref": "#/components/schemas/JsonValue"},
        },
        {"type": "integer", "minimum": -MAX_SAFE_INTEGER, "maximum": MAX_SAFE_INTEGER},
        {"type": "number", "not": {"type": "integer"}},
    ],
}
# One Server-Sent Event of ``.../stream`` as a client's SSE parser gives it.
SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "event": {"type": "string"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": '{"id", "type", "ts", "step", "data"} as JSON',
        },
    },
}
STATUS: dict[str, Any] = {
    "type": "string",
    "enum": list(STATUSES),
}


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    """An object with ``required`` properties and, maybe, ``optional`` ones."""
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
    }


def array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


LIST_PARAMS = (
    {"name": "status", "in": "query", "required": False, "schema": STATUS},
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
    },
    {
        "name": "cursor",
        "in": "query",
        "required": False,
        "schema": STR,
        "description": "the next_cursor of the previous page (anything else is a 400)",
    },
)
# A page of an instance's logs or steps: at most ``limit`` items and about 4 MiB of them.
PAGE_PARAMS = (
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000},
    },
    LIST_PARAMS[2],
)

_PROBLEM = obj(
    {"line": {"type": ["integer", "null"]}, "column": {"type": ["integer", "null"]}, "message": STR}
)
_ERROR = obj(
    {"code": STR, "message": STR},
    {"problems": array(_PROBLEM)},
)
_ITEM_ERROR = obj({"index": INT, "id": STR, "code": STR, "message": STR})
_ATTEMPT = obj(
    {"started_at": MAYBE_TIME, "ended_at": MAYBE_TIME, "success": {"type": "boolean"}},
    {"error": ANY},
)
_STEP = obj(
    {
        "name": STR,
        "count": INT,
        "type": {"type": "string", "enum": ["do", "sleep", "wait_for_event"]},
        "status": {"type": "string", "enum": ["running", "complete", "errored", "waiting"]},
        "output": ANY,
        "attempts": array(_ATTEMPT),
    },
    {"error": ANY, "wake_at": MAYBE_TIME},
)
_INSTANCE_FIELDS = {
    "id": STR,
    "workflow": STR,
    "version": STR,
    "status": STATUS,
    "params": ANY,
    "output": ANY,
    "error": {"type": ["object", "null"]},
    "created_at": TIME,
    "started_at": MAYBE_TIME,
    "ended_at": MAYBE_TIME,
}
_SUMMARY_FIELDS = {
    "name": STR,
    "version": STR,
    "sandbox": STR,
    "created_at": TIME,
    "updated_at": TIME,
}
_VERSION = obj(
    {"version": STR, "sandbox": STR, "created_at": TIME},
    {"class_name": {"type": ["string", "null"]}},
)

RESPONSES: dict[str, Any] = {
    "Error": obj({"error": _ERROR}),
    "JsonValue": JSON_VALUE,
    "Tenant": obj({"name": STR, "policy": ref("Policy"), "created_at": TIME}),
    "TenantList": obj({"tenants": array(ref("Tenant"))}),
    "ApiKey": obj({"id": STR, "key": STR, "created_at": TIME, "expires_at": MAYBE_TIME}),
    "StoredCode": obj({"name": STR, "version": STR, "sandbox": STR}),
    "WorkflowSummary": obj(_SUMMARY_FIELDS),
    "WorkflowList": obj({"workflows": array(ref("WorkflowSummary"))}),
    "Workflow": obj({**_SUMMARY_FIELDS, "versions": array(_VERSION)}),
    "Created": obj({"id": STR, "status": STATUS, "version": STR}),
    "BatchResult": obj(
        {"created": array(ref("Created")), "errors": array(_ITEM_ERROR)},
    ),
    "InstanceSummary": obj(_INSTANCE_FIELDS),
    "Instance": obj(
        {**_INSTANCE_FIELDS, "steps": array(_STEP)},
        {
            "steps_next_cursor": {
                "type": "string",
                "description": "only when the embedded steps are not all of them: the cursor "
                "of GET .../steps that reads on",
            }
        },
    ),
    "StepPage": obj({"steps": array(_STEP), "next_cursor": {"type": ["string", "null"]}}),
    "InstanceList": obj(
        {"instances": array(ref("InstanceSummary")), "next_cursor": {"type": ["string", "null"]}}
    ),
    "Logs": obj(
        {
            "logs": array(obj({"ts": TIME, "step": {"type": ["string", "null"]}, "message": STR})),
            "next_cursor": {"type": ["string", "null"]},
        }
    ),
}

# -- API keys and the audit log --------------------------------------------------------------

MAYBE_STR: dict[str, Any] = {"type": ["string", "null"]}
AUDIT_PARAMS = (
    {
        "name": "action",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": list(ACTIONS)},
    },
    LIST_PARAMS[1],
    LIST_PARAMS[2],
)
_KEY_INFO = {
    "id": STR,
    "created_at": TIME,
    "last_used_at": {**MAYBE_TIME, "description": "at most a minute behind the latest use"},
    "expires_at": MAYBE_TIME,
    "expired": {"type": "boolean"},
    "rotated_from": MAYBE_STR,
}
_AUDIT_ENTRY = {
    "id": INT,
    "time": TIME,
    "actor": {
        "type": "string",
        "description": "configured, admin:<token id>, bootstrap, system or anonymous",
    },
    "client": MAYBE_STR,
    "action": {"type": "string", "enum": list(ACTIONS)},
    "tenant": MAYBE_STR,
    "target": {**MAYBE_STR, "description": "the key concerned, if any"},
    "outcome": {"type": "string", "enum": ["ok", "denied"]},
    "details": {"type": "object"},
}

RESPONSES.update(
    {
        "RotatedKey": obj(
            {
                "id": STR,
                "key": STR,
                "created_at": TIME,
                "expires_at": MAYBE_TIME,
                "rotated_from": STR,
                "old_key_expires_at": TIME,
            }
        ),
        "KeyInfo": obj(_KEY_INFO),
        "KeyList": obj({"keys": array(ref("KeyInfo"))}),
        "AuditEntry": obj(_AUDIT_ENTRY),
        "AuditList": obj({"entries": array(ref("AuditEntry")), "next_cursor": MAYBE_STR}),
    }
)
