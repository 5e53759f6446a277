"""The JSON Schemas of the OpenAPI document that no model states: path and query parameters,
stored JSON, errors, the event stream, and what the server knows of its answers beyond the
client's models."""

from __future__ import annotations

from engine import MAX_EVENT_TYPE, MAX_INSTANCE_ID, MAX_ROW_ID, STATUSES
from tenants import ACTIONS
from treadle.runtime import (
    MAX_DURATION_SECONDS,
    MAX_FRAME_FILE_CHARS,
    MAX_FRAME_LINE,
    MAX_FRAMES,
    MAX_FUNCTION_CHARS,
    MAX_SAFE_INTEGER,
    MAX_SOURCE_CHARS,
    JSONObject,
    JSONValue,
)

Schema = JSONObject
"""A JSON Schema, or a piece of the OpenAPI document: JSON of any shape."""
STR: Schema = {"type": "string"}
TIME: Schema = {"type": "string", "format": "date-time"}
MAYBE_TIME: Schema = {"type": ["string", "null"], "format": "date-time"}
NAME_PATTERN = "^[a-zA-Z0-9_][a-zA-Z0-9_-]*$"
NAME: Schema = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": NAME_PATTERN}
EVENT_TYPE: Schema = {**NAME, "maxLength": MAX_EVENT_TYPE}
INSTANCE_ID: Schema = {**NAME, "maxLength": MAX_INSTANCE_ID}
KEY_ID: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": 32,
    "pattern": "^[a-zA-Z0-9]+$",
}
# What treadle stores (treadle.runtime._values): JSON whose strings (keys too) have no
# U+0000 (nor lone surrogates, which no schema can say) and whose integers are within ±2^53.
TEXT: Schema = {"type": "string", "pattern": "^[^\\x00]*$"}
JSON_VALUE: Schema = {
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
SSE_EVENT: Schema = {
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
STATUS: Schema = {
    "type": "string",
    "enum": list(STATUSES),
}

# Tags of a create (``engine._search``): strings, searched by ``tag.<key>=<value>``.
TAGS: Schema = {
    "anyOf": [
        {
            "type": "object",
            "maxProperties": 16,
            "propertyNames": {"pattern": "^[A-Za-z0-9_.:/-]{1,64}$"},
            "additionalProperties": {"type": "string", "maxLength": 256, "pattern": "^[^\\x00]*$"},
        },
        {"type": "null"},
    ],
    "description": "at most 16 pairs; keys of 1-64 of A-Z a-z 0-9 _ . : / -, values of at "
    "most 256 characters",
}

# -- flow control of a create (docs/flow-control.md) ---------------------------------------------

MAX_KEY = 128  # engine._flow.MAX_KEY
PRIORITIES = range(10)
DEFAULT_PRIORITY = 5
KEY: Schema = {"anyOf": [{**TEXT, "minLength": 1, "maxLength": MAX_KEY}, {"type": "null"}]}
PRIORITY: Schema = {
    "anyOf": [{"type": "integer", "minimum": 0, "maximum": 9}, {"type": "null"}],
    "description": "0-9, higher first within the tenant; default 5",
}
# A time zone is required; a time in the past starts the instance now.
START_AT: Schema = {
    "anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}],
    "description": "ISO 8601 with a time zone: the instance starts no earlier",
}
# What the document can say of a duration; a unit that does not exist, or over 365 days in
# another unit than seconds, is a 400 ``duration.invalid`` naming the field.
DELAY: Schema = {
    "anyOf": [
        {"type": "number", "minimum": 0, "maximum": MAX_DURATION_SECONDS},
        {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*[a-zA-Z]+\s*$"},
        {"type": "null"},
    ],
    "description": "seconds, or '<n> <unit>': the instance starts no earlier than this after "
    "the create",
}
BOTH_STARTS: Schema = {
    "required": ["start_at", "delay"],
    "properties": {"start_at": {"not": {"type": "null"}}, "delay": {"not": {"type": "null"}}},
}
WAITING_REASONS = ["concurrency_key", "rate_limit", "debounce", "tenant_limit", "start_at"]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def json(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


def obj(required: Schema, optional: Schema | None = None) -> Schema:
    """An object with ``required`` properties and, maybe, ``optional`` ones."""
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
    }


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


# -- parameters -----------------------------------------------------------------------------------

PATH_PARAMS: dict[str, Schema] = {
    "name": NAME,
    "tenant": NAME,
    "id": INSTANCE_ID,
    "key_id": KEY_ID,
    "type": EVENT_TYPE,
    "schedule": NAME,
    "job": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9_-]+$"},
    "hook": NAME,
    "hook_id": {
        "type": "string",
        "minLength": 4,
        "maxLength": 64,
        "pattern": "^hk_[A-Za-z0-9_-]+$",
    },
    "token": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9_-]+$"},
}
"""The schema of each path parameter of the API's paths, by its name."""


def query(name: str, schema: Schema, description: str | None = None) -> Schema:
    parameter: Schema = {"name": name, "in": "query", "required": False, "schema": schema}
    if description is not None:
        parameter["description"] = description
    return parameter


_CURSOR = query("cursor", STR, "the next_cursor of the previous page (anything else is a 400)")
_LIMIT = query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50})
_ACTION = query("action", {"type": "string", "enum": list(ACTIONS)})
_FILTER_TEXT: Schema = {"type": "string", "minLength": 1, "maxLength": 256}
_EVENT_ID: Schema = {"type": "integer", "minimum": 0, "maximum": MAX_ROW_ID}
QUERIES: dict[str, list[JSONValue]] = {
    # The filters of a listing (``engine._search``): every one given must match.
    "list": [
        {**query("status", array(STATUS), "repeatable: any of these"), "explode": True},
        # ``tag.<key>=<value>`` has a name of the caller's making, which OpenAPI cannot state
        # as a parameter: the operation's description says it (``dispatcher.http._openapi``).
        query("key", _FILTER_TEXT, "the flow control key"),
        query("created_after", TIME, "ISO 8601 with a time zone"),
        query("created_before", TIME, "ISO 8601 with a time zone"),
        query("id_prefix", _FILTER_TEXT, "instances whose id starts with this"),
        query("error_name", _FILTER_TEXT, "errored instances whose error has this name"),
        _LIMIT,
        _CURSOR,
    ],
    # A page of an instance's logs or steps: at most ``limit`` items and about 4 MiB of them.
    "page": [
        query("limit", {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000}),
        _CURSOR,
    ],
    "audit": [_ACTION, _LIMIT, _CURSOR],
    "audit_all": [query("tenant", NAME), _ACTION, _LIMIT, _CURSOR],
    "usage": [
        query("from", TIME, "ISO 8601; default 24 hours before `to`"),
        query("to", TIME, "ISO 8601; default now; at most 366 days after `from`"),
    ],
    "stream": [
        query("after", _EVENT_ID, "resume after this event id (or send the Last-Event-ID header)"),
        {
            "name": "Last-Event-ID",
            "in": "header",
            "required": False,
            "schema": _EVENT_ID,
            "description": "resume after this event id; takes precedence over ``after``",
        },
    ],
}
"""The query parameters (and headers) of each kind of query of the table's operations."""
ERROR = obj(
    {
        "error": obj(
            {"code": STR, "message": STR},
            {
                "existing_id": {
                    **STR,
                    "description": "instance.singleton: the live instance of the key",
                },
                "problems": array(
                    obj(
                        {
                            "line": {"type": ["integer", "null"]},
                            "column": {"type": ["integer", "null"]},
                            "message": STR,
                        }
                    )
                ),
            },
        )
    }
)
"""Every error answer: ``{"error": {"code", "message"}}``, ``problems`` for invalid code."""

MAYBE_STR: Schema = {"type": ["string", "null"]}
FRAME = obj(
    {
        "file": {"type": "string", "maxLength": MAX_FRAME_FILE_CHARS},
        "line": {"type": "integer", "minimum": 1, "maximum": MAX_FRAME_LINE},
        "function": {"type": "string", "maxLength": MAX_FUNCTION_CHARS},
        "source": {"type": "string", "maxLength": MAX_SOURCE_CHARS},
    }
)
ERROR_VALUE: Schema = {
    "type": ["object", "null"],
    "description": "why it failed: the error's type name and message; traceback (only when "
    "the workflow's code raised it) holds the frames of that code, outermost first",
    "properties": {
        "name": STR,
        "message": STR,
        "traceback": {**array(FRAME), "maxItems": MAX_FRAMES},
    },
}
"""An error of an instance, a step or an attempt (``treadle.runtime.ErrorValue``)."""

# -- what the server knows of the answers' fields beyond their models ----------------------------

_WAITING: Schema = {
    "type": ["string", "null"],
    "enum": [*WAITING_REASONS, None],
    "description": "why a queued instance waits; null when it does not",
}
_PRIORITY: Schema = {"type": "integer", "minimum": 0, "maximum": 9}
_KEY: Schema = {"type": ["string", "null"], "maxLength": MAX_KEY}

# The answers' schemas come from the client's models (``treadle.client``), which read fields
# loosely (a newer server may add a status); the document says exactly what this server sends.
NARROWED: dict[tuple[str, str], Schema] = {
    ("Building", "status"): {"type": "string", "enum": ["building"]},
    ("Building", "retry_after"): {"type": "integer", "minimum": 1},
    ("Created", "status"): STATUS,
    ("InstanceSummary", "status"): STATUS,
    ("Instance", "status"): STATUS,
    ("InstanceSummary", "error"): ERROR_VALUE,
    ("Instance", "error"): ERROR_VALUE,
    ("Step", "error"): ERROR_VALUE,
    ("Attempt", "error"): ERROR_VALUE,
    ("Instance", "steps_next_cursor"): {
        "type": "string",
        "description": "only when the embedded steps are not all of them: the cursor "
        "of GET .../steps that reads on",
    },
    ("Step", "type"): {"type": "string", "enum": ["do", "sleep", "wait_for_event"]},
    ("Step", "status"): {"type": "string", "enum": ["running", "complete", "errored", "waiting"]},
    ("KeyInfo", "last_used_at"): {
        **MAYBE_TIME,
        "description": "at most a minute behind the latest use",
    },
    ("AuditEntry", "actor"): {
        "type": "string",
        "description": "configured, admin:<token id>, bootstrap, system or anonymous",
    },
    ("AuditEntry", "action"): {"type": "string", "enum": list(ACTIONS)},
    ("AuditEntry", "target"): {**MAYBE_STR, "description": "the key concerned, if any"},
    ("AuditEntry", "outcome"): {"type": "string", "enum": ["ok", "denied"]},
    ("AuditEntry", "details"): {"type": "object"},
    ("InstanceSummary", "waiting_reason"): _WAITING,
    ("Instance", "waiting_reason"): _WAITING,
    ("InstanceSummary", "priority"): _PRIORITY,
    ("Instance", "priority"): _PRIORITY,
    ("InstanceSummary", "key"): _KEY,
    ("Instance", "key"): _KEY,
    ("Created", "debounced"): {
        "type": "boolean",
        "const": True,
        "description": "only when the create was merged into the key's queued instance, "
        "whose id this is",
    },
    ("ItemError", "existing_id"): {
        **STR,
        "description": "only for instance.singleton: the live instance of the key",
    },
}
# Fields that the server may leave out of an answer.
OPTIONAL = {
    ("Instance", "steps_next_cursor"),
    ("Step", "error"),
    ("Step", "wake_at"),
    ("Attempt", "error"),
    ("WorkflowVersion", "class_name"),
    ("Created", "debounced"),
    ("ItemError", "existing_id"),
    ("FlowControl", "concurrency_per_key"),
    ("FlowControl", "rate_per_key"),
    ("FlowControl", "debounce"),
    ("FlowControl", "singleton"),
}
