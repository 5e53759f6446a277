"""Schedules over HTTP (docs/api.md, Schedules): put, list, get and delete a workflow's
schedules. The engine checks the spec (``engine._cron``) and fires them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.json_schema import SkipJsonSchema
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dispatcher.http._instances import caller_of
from dispatcher.http._routing import Handlers
from engine import Engine
from loader import Loader

_NO_NUL = "^[^\\x00]*$"  # as every string the server takes (``_schemas.TEXT``)


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # absent, not null
    schema["pattern"] = _NO_NUL  # of the string, if it is one


class ScheduleBody(BaseModel):
    """The body of ``PUT .../schedules/{schedule}``: exactly one of ``cron`` and ``every``."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"oneOf": [{"required": ["cron"]}, {"required": ["every"]}]},
    )

    # Null is refused (by the engine, naming the field): the document says so.
    cron: Annotated[str, StringConstraints(min_length=9, max_length=200)] | SkipJsonSchema[None] = (
        Field(
            default=None,
            description='5 fields: "minute hour day-of-month month weekday"',
            json_schema_extra=_no_default,
        )
    )
    every: float | str | SkipJsonSchema[None] = Field(
        default=None,
        description='seconds (at least 1), or "<n> <unit>" such as "2 seconds"',
        json_schema_extra=_no_default,
    )
    timezone: str = Field(
        default="UTC",
        max_length=64,
        description="an IANA time zone name",
        json_schema_extra={"pattern": _NO_NUL},
    )
    params: Any = None
    overlap: Literal["skip", "buffer_one", "allow"] = "skip"
    catch_up: Literal["none", "latest", "all"] = "latest"
    paused: bool = False


class ScheduleApi:
    def __init__(self, engine: Engine, loader: Loader) -> None:
        self._schedules = engine.schedules
        self._loader = loader

    def handlers(self) -> Handlers:
        return {
            "put_schedule": self.put,
            "list_schedules": self.listing,
            "get_schedule": self.get,
            "delete_schedule": self.delete,
        }

    async def put(self, request: Request) -> Response:
        body = ScheduleBody.model_validate_json(await request.body())
        given = body.model_dump(exclude_unset=True)
        tenant_id, (name, schedule_id) = caller_of(request).tenant_id, _ids(request)
        view, created = await run_in_threadpool(
            self._schedules.put, tenant_id, name, schedule_id, given
        )
        return JSONResponse(view, status_code=201 if created else 200)

    async def listing(self, request: Request) -> Response:
        tenant_id, name = caller_of(request).tenant_id, request.path_params["name"]
        schedules = await run_in_threadpool(self._list, tenant_id, name)
        return JSONResponse({"schedules": schedules})

    def _list(self, tenant_id: int, name: str) -> Any:
        self._loader.current(tenant_id, name)  # 404 for a workflow that is not there
        return self._schedules.listing(tenant_id, name)

    async def get(self, request: Request) -> Response:
        tenant_id, (name, schedule_id) = caller_of(request).tenant_id, _ids(request)
        view = await run_in_threadpool(self._schedules.get, tenant_id, name, schedule_id)
        return JSONResponse(view)

    async def delete(self, request: Request) -> Response:
        tenant_id, (name, schedule_id) = caller_of(request).tenant_id, _ids(request)
        await run_in_threadpool(self._schedules.delete, tenant_id, name, schedule_id)
        return Response(status_code=204)


def _ids(request: Request) -> tuple[str, str]:
    return request.path_params["name"], request.path_params["schedule"]
