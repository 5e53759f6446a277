"""Instance lifecycle over HTTP: change status and delete (the live stream: ``_streams``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dispatcher.http._instances import caller_of, ids_of
from dispatcher.http._routing import Handlers
from engine import Engine
from loader import Loader
from tenants import MAX_STEPS, Caller, JsonInt
from treadle.errors import InvalidInput
from treadle.runtime import JSONObject

_NO_TERMINATE_OPTIONS: JSONObject = {"rollback": {"const": False}}
_NO_RESTART_OPTIONS: JSONObject = {"from": {"type": "null"}, "upgrade": {"const": False}}


class StepRef(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=256)
    count: JsonInt = Field(default=1, ge=1, le=MAX_STEPS)


class StatusBody(BaseModel):
    """The body of ``PATCH .../status``."""

    # The document says what ``LifecycleApi._change`` checks: which options go with which action.
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        populate_by_name=True,
        json_schema_extra={
            "oneOf": [
                {
                    "properties": {
                        "status": {"enum": ["pause", "resume"]},
                        **_NO_TERMINATE_OPTIONS,
                        **_NO_RESTART_OPTIONS,
                    }
                },
                {"properties": {"status": {"const": "terminate"}, **_NO_RESTART_OPTIONS}},
                {"properties": {"status": {"const": "restart"}, **_NO_TERMINATE_OPTIONS}},
            ]
        },
    )

    status: Literal["pause", "resume", "terminate", "restart"]
    from_: StepRef | None = Field(default=None, alias="from")
    rollback: bool = False
    upgrade: bool = False


class LifecycleApi:
    def __init__(self, engine: Engine, loader: Loader) -> None:
        self._engine = engine
        self._loader = loader

    def handlers(self) -> Handlers:
        return {"change_status": self.change_status, "delete_instance": self.delete}

    async def change_status(self, request: Request) -> Response:
        body = StatusBody.model_validate_json(await request.body())
        caller, (name, instance_id) = caller_of(request), ids_of(request)
        instance = await run_in_threadpool(self._change, caller, name, instance_id, body)
        return JSONResponse(instance)

    def _change(self, caller: Caller, name: str, instance_id: str, body: StatusBody) -> Any:
        if body.rollback and body.status != "terminate":
            raise InvalidInput('"rollback" goes with "terminate" only')
        if (body.from_ is not None or body.upgrade) and body.status != "restart":
            raise InvalidInput('"from" and "upgrade" go with "restart" only')
        version = self._loader.current(caller.tenant_id, name) if body.upgrade else None
        from_step = body.from_.model_dump() if body.from_ is not None else None
        return self._engine.change_status(
            caller.tenant_id,
            name,
            instance_id,
            body.status,
            from_step=from_step,
            version=version,
            rollback=body.rollback,
        )

    async def delete(self, request: Request) -> Response:
        caller, (name, instance_id) = caller_of(request), ids_of(request)
        await run_in_threadpool(self._engine.delete_instance, caller.tenant_id, name, instance_id)
        return Response(status_code=204)
