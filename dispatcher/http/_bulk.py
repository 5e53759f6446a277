"""Bulk actions over HTTP (docs/bulk.md): start one over the instances a filter matches, follow
it, list and cancel them. The engine counts, stores and works through them (``engine._bulk``).
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dispatcher.http import _schemas as s
from dispatcher.http._instances import caller_of
from dispatcher.http._routing import Handlers
from dispatcher.http._schemas import Schema
from engine import Engine

_TEXT: Schema = {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[^\\x00]*$"}
_NULL: Schema = {"type": "null"}
_TIME: Schema = {"anyOf": [s.TIME, {"type": "number"}, _NULL]}
# What ``InstanceFilter.from_json`` takes (``engine._search``), for the document: the model
# takes any object and the engine checks it, naming what is wrong.
FILTER: Schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "workflow": {"anyOf": [s.TEXT, _NULL]},
        "status": {"anyOf": [s.STATUS, s.array(s.STATUS), _NULL]},
        "tags": s.TAGS,
        "key": {"anyOf": [_TEXT, _NULL]},
        "created_after": _TIME,
        "created_before": _TIME,
        "id_prefix": {"anyOf": [_TEXT, _NULL]},
        "error_name": {"anyOf": [_TEXT, _NULL]},
    },
    "description": "which instances: every field given must match, as in an instance search "
    "(times: ISO 8601 with a time zone, or epoch seconds); {} takes every instance",
}


def _filter_schema(schema: dict[str, Any]) -> None:
    schema.clear()
    schema.update(FILTER)


class BulkBody(BaseModel):
    """The body of ``POST /v1/instances/bulk``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    filter: dict[str, Any] = Field(default_factory=dict, json_schema_extra=_filter_schema)
    action: Literal["pause", "resume", "terminate", "restart", "delete"]


class BulkApi:
    def __init__(self, engine: Engine) -> None:
        self._bulk = engine.bulk

    def handlers(self) -> Handlers:
        return {
            "start_bulk": self.start,
            "list_bulk": self.listing,
            "get_bulk": self.get,
            "cancel_bulk": self.cancel,
        }

    async def start(self, request: Request) -> Response:
        body = BulkBody.model_validate_json(await request.body())
        tenant_id = caller_of(request).tenant_id
        view = await run_in_threadpool(self._bulk.create, tenant_id, body.filter, body.action)
        location = "/v1/instances/bulk/" + quote(view["job"], safe="")
        return JSONResponse(
            {"job": view["job"], "matched": view["matched"]},
            status_code=202,
            headers={"Location": location},
        )

    async def listing(self, request: Request) -> Response:
        jobs = await run_in_threadpool(self._bulk.listing, caller_of(request).tenant_id)
        return JSONResponse({"jobs": jobs})

    async def get(self, request: Request) -> Response:
        tenant_id, job_id = caller_of(request).tenant_id, request.path_params["job"]
        return JSONResponse(await run_in_threadpool(self._bulk.get, tenant_id, job_id))

    async def cancel(self, request: Request) -> Response:
        tenant_id, job_id = caller_of(request).tenant_id, request.path_params["job"]
        return JSONResponse(await run_in_threadpool(self._bulk.cancel, tenant_id, job_id))
