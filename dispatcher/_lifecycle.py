"""Instance lifecycle over HTTP: change status, delete, and the live event stream (SSE)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from dispatcher._instances import caller_of, ids_of, query_of
from engine import FINISHED, MAX_ROW_ID, Engine
from loader import Loader
from storage import iso
from tenants import MAX_STEPS, Caller, JsonInt
from treadle.errors import InvalidInput, NotFound

_BASE = "/v1/workflows/{name}/instances/{id}"
_POLL_SECONDS = 0.25
_KEEPALIVE_SECONDS = 15.0
_BATCH = 500


_NO_TERMINATE_OPTIONS: dict[str, Any] = {"rollback": {"const": False}}
_NO_RESTART_OPTIONS: dict[str, Any] = {"from": {"type": "null"}, "upgrade": {"const": False}}


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

    def routes(self) -> list[Route]:
        return [
            Route(_BASE + "/status", self.change_status, methods=["PATCH"]),
            Route(_BASE, self.delete, methods=["DELETE"]),
            Route(_BASE + "/stream", self.stream, methods=["GET"]),
        ]

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

    async def stream(self, request: Request) -> Response:
        """History first, then live events, until the instance has finished."""
        caller, (name, instance_id) = caller_of(request), ids_of(request)
        after = _last_event_id(request)
        first = await run_in_threadpool(
            self._engine.history, caller.tenant_id, name, instance_id, after, _BATCH
        )  # a 404 here, before the stream starts, for an unknown instance
        events = self._events(request, caller.tenant_id, name, instance_id, after, first)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)

    async def _events(
        self,
        request: Request,
        tenant_id: int,
        name: str,
        instance_id: str,
        after: int,
        first: tuple[list[dict[str, Any]], str],
    ) -> AsyncIterator[str]:
        rows, status = first
        quiet_since = time.monotonic()
        while True:
            for row in rows:
                after = row["pk"]
                yield _sse(row)
            if rows:
                quiet_since = time.monotonic()
            elif status in FINISHED or await request.is_disconnected():
                return
            elif time.monotonic() - quiet_since > _KEEPALIVE_SECONDS:
                quiet_since = time.monotonic()
                yield ": keep-alive\n\n"
            if len(rows) < _BATCH:
                await asyncio.sleep(_POLL_SECONDS)
            try:
                rows, status = await run_in_threadpool(
                    self._engine.history, tenant_id, name, instance_id, after, _BATCH
                )
            except NotFound:
                return  # deleted while streaming


def _sse(row: dict[str, Any]) -> str:
    event = {
        "id": row["pk"],
        "type": row["type"],
        "ts": iso(row["ts"]),
        "step": row["step"],
        "data": row["data"],
    }
    return f"id: {row['pk']}\nevent: {row['type']}\ndata: {json.dumps(event)}\n\n"


def _last_event_id(request: Request) -> int:
    """The Last-Event-ID header, else the ``after`` query parameter; both are checked."""
    header = _event_id(request.headers.get("last-event-id"), "Last-Event-ID")
    after = _event_id(query_of(request, "after").get("after"), "after")
    return header if header is not None else after or 0


def _event_id(value: str | None, what: str) -> int | None:
    if value is None:
        return None
    # (the length first: int() refuses more than 4300 digits)
    if not (value.isascii() and value.isdigit()) or len(value) > 19 or int(value) > MAX_ROW_ID:
        raise InvalidInput(f"{what} must be an event id from 0 to {MAX_ROW_ID}, not {value[:40]!r}")
    return int(value)
