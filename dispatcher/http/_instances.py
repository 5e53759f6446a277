"""The instance API (docs/api.md): create instances of a tenant's workflow and follow them.

``create()`` is where the dispatcher routes a request to tenant code: the workflow name is
resolved to its current version here, and the instance is pinned to that version for life.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dispatcher.http._routing import Handlers
from dispatcher.http._schemas import (
    BOTH_STARTS,
    DEFAULT_PRIORITY,
    DELAY,
    KEY,
    MAX_KEY,
    NAME_PATTERN,
    PRIORITIES,
    PRIORITY,
    START_AT,
    TAGS,
)
from engine import (
    MAX_INSTANCE_ID,
    CreatedItem,
    Engine,
    Flow,
    InstanceFilter,
    InstanceView,
    ItemError,
    NewInstance,
    Quota,
    TraceParent,
    iso_seconds,
    not_iso,
    parse_traceparent,
)
from loader import Loader
from tenants import Caller, JsonInt, Policy
from treadle.client import MAX_BATCH
from treadle.errors import (
    AlreadyExists,
    Conflict,
    InvalidDuration,
    InvalidInput,
    TooLarge,
    TreadleError,
)
from treadle.runtime import parse_duration

_PAYLOAD: TypeAdapter[Any] = TypeAdapter(Any)
_INTEGER = re.compile(r"-?[0-9]{1,18}")
SINGLETON = "instance.singleton"


class NewInstanceBody(BaseModel):
    """The body of ``POST .../instances``, and one item of a batch: its flow control
    (``key``, ``priority``) and when it may start (``start_at`` or ``delay``) are checked here,
    for the whole request (a bad one is a 400, in a batch too)."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"not": BOTH_STARTS})

    # Checked by the engine (code instance.invalid_id); described here for the document.
    id: str | None = Field(
        default=None,
        json_schema_extra={"minLength": 1, "maxLength": MAX_INSTANCE_ID, "pattern": NAME_PATTERN},
    )
    params: Any = None
    key: str | None = Field(default=None, json_schema_extra=KEY)
    priority: JsonInt | None = Field(default=None, json_schema_extra=PRIORITY)
    start_at: str | None = Field(default=None, json_schema_extra=START_AT)
    delay: float | str | None = Field(default=None, json_schema_extra=DELAY)
    # Checked by the engine (code instance.invalid_tags); described here for the document.
    tags: Any = Field(default=None, json_schema_extra=TAGS)

    @field_validator("key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None and not 1 <= len(value) <= MAX_KEY:
            raise ValueError(f"must be 1 to {MAX_KEY} characters")
        return value

    @field_validator("priority")
    @classmethod
    def _priority(cls, value: int | None) -> int | None:
        if value is not None and value not in PRIORITIES:
            raise ValueError("must be an integer from 0 to 9")
        return value

    @model_validator(mode="after")
    def _one_start(self) -> Self:
        if self.start_at is not None and self.delay is not None:
            raise ValueError("give start_at or delay, not both")
        return self

    def new_instance(self, index: int | None = None) -> NewInstance:
        """The instance to create; raises ``InvalidDuration`` (400 ``duration.invalid``)
        naming the field for a ``start_at`` or ``delay`` the schema cannot refuse."""
        where = "" if index is None else f"instances.{index}."
        start_at = None if self.start_at is None else instant(self.start_at, where + "start_at")
        delay = None if self.delay is None else parse_duration(self.delay, what=where + "delay")
        priority = DEFAULT_PRIORITY if self.priority is None else self.priority
        return NewInstance(
            self.id, self.params, self.key, priority, start_at, delay, tags=self.tags
        )


class BatchItem(NewInstanceBody):
    """One item of a batch. A bad id is that item's error (in ``errors`` of a 200), not the
    request's, so the document puts no rule on it here."""

    id: str | None = None


class BatchBody(BaseModel):
    """The body of ``POST .../instances/batch``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    instances: list[BatchItem] = Field(max_length=MAX_BATCH)


class InstanceApi:
    def __init__(self, engine: Engine, loader: Loader, policy_of: Callable[[int], Policy]) -> None:
        self._engine = engine
        self._loader = loader
        self._policy_of = policy_of

    def handlers(self) -> Handlers:
        return {
            "create_instance": self.create,
            "list_instances": self.list_instances,
            "list_all_instances": self.list_all_instances,
            "create_batch": self.create_batch,
            "get_instance": self.get_instance,
            "send_event": self.send_event,
            "get_logs": self.logs,
            "get_steps": self.steps,
        }

    async def create(self, request: Request) -> Response:
        raw = await request.body()
        body = NewInstanceBody.model_validate_json(raw) if raw.strip() else NewInstanceBody()
        trace = parse_traceparent(request.headers.get("traceparent"))
        new = [body.new_instance()]
        created, errors = await run_in_threadpool(
            self._create, caller_of(request), request.path_params["name"], new, trace
        )
        if errors:
            raise _item_error(errors[0])
        return JSONResponse(created[0], status_code=201)

    async def create_batch(self, request: Request) -> Response:
        body = BatchBody.model_validate_json(await request.body())
        trace = parse_traceparent(request.headers.get("traceparent"))
        new = [item.new_instance(index) for index, item in enumerate(body.instances)]
        created, errors = await run_in_threadpool(
            self._create, caller_of(request), request.path_params["name"], new, trace
        )
        limited = any(e["code"].startswith("quota.") for e in errors)
        headers = {"Retry-After": "1"} if limited else None
        return JSONResponse({"created": created, "errors": errors}, headers=headers)

    def _create(
        self,
        caller: Caller,
        workflow: str,
        new: list[NewInstance],
        trace: TraceParent | None,
    ) -> tuple[list[CreatedItem], list[ItemError]]:
        """Create what the tenant's quota allows (``creates_per_second`` across every API
        process, ``max_queued_instances``); the rest are per-item errors (a create refused
        whole answers 429), and nothing of them is written."""
        version, flow = self._loader.current_workflow(caller.tenant_id, workflow)
        policy = self._policy_of(caller.tenant_id)
        quota = Quota(policy.creates_per_second, policy.max_queued_instances, storage_bytes(policy))
        return self._engine.create_instances(
            caller.tenant_id, workflow, version, new, quota, caller=trace, flow=Flow.from_json(flow)
        )

    async def list_instances(self, request: Request) -> Response:
        return await self._search(request, request.path_params["name"])

    async def list_all_instances(self, request: Request) -> Response:
        """The instances of every workflow of the tenant, newest first."""
        return await self._search(request, None)

    async def _search(self, request: Request, workflow: str | None) -> Response:
        # Unknown parameters, statuses ("status=" too), tags and times are refused here.
        match = InstanceFilter.from_query(request.query_params, workflow)
        limit = _int_param(request.query_params.get("limit"), "limit", default=50)
        cursor = request.query_params.get("cursor") or None
        instances, after = await run_in_threadpool(
            self._list, caller_of(request), match, limit, cursor
        )
        return JSONResponse({"instances": instances, "next_cursor": after})

    def _list(
        self, caller: Caller, match: InstanceFilter, limit: int, cursor: str | None
    ) -> tuple[list[InstanceView], str | None]:
        if match.workflow is not None:  # 404 for a workflow that is not there
            self._loader.current(caller.tenant_id, match.workflow)
        return self._engine.list_instances(
            caller.tenant_id, match.workflow, limit=limit, cursor=cursor, match=match
        )

    async def get_instance(self, request: Request) -> Response:
        tenant_id, (name, instance_id) = caller_of(request).tenant_id, ids_of(request)
        instance = await run_in_threadpool(self._engine.get_instance, tenant_id, name, instance_id)
        return JSONResponse(instance)

    async def send_event(self, request: Request) -> Response:
        raw = await request.body()
        payload = _PAYLOAD.validate_json(raw) if raw.strip() else None
        tenant_id, (name, instance_id) = caller_of(request).tenant_id, ids_of(request)
        event_type = request.path_params["type"]
        await run_in_threadpool(self._send, tenant_id, name, instance_id, event_type, payload)
        return JSONResponse({}, status_code=202)

    def _send(
        self, tenant_id: int, name: str, instance_id: str, event_type: str, payload: Any
    ) -> None:
        policy = self._policy_of(tenant_id)
        self._engine.send_event(
            tenant_id,
            name,
            instance_id,
            event_type,
            payload,
            max_bytes=policy.max_step_result_bytes,
            max_storage_bytes=storage_bytes(policy),
        )

    async def logs(self, request: Request) -> Response:
        lines, cursor = await self._page(request, self._engine.log_page)
        return JSONResponse({"logs": lines, "next_cursor": cursor})

    async def steps(self, request: Request) -> Response:
        steps, cursor = await self._page(request, self._engine.steps)
        return JSONResponse({"steps": steps, "next_cursor": cursor})

    async def _page(self, request: Request, read: Callable[..., Any]) -> Any:
        """A page of an instance's logs or steps: ``?limit=&cursor=``, both optional."""
        query = query_of(request, "limit", "cursor")
        limit = query.get("limit")
        tenant_id, (name, instance_id) = caller_of(request).tenant_id, ids_of(request)
        return await run_in_threadpool(
            lambda: read(
                tenant_id,
                name,
                instance_id,
                limit=None if limit is None else _int_param(limit, "limit", default=0),
                cursor=query.get("cursor") or None,
            )
        )


def instant(value: str, what: str) -> float:
    """An ISO 8601 time with a time zone (``2026-05-01T09:00:00Z``, ``...+02:00``) as epoch
    seconds; raises ``InvalidDuration`` naming ``what``. A leap second is the second after."""
    try:
        return iso_seconds(value)
    except ValueError:
        raise InvalidDuration(not_iso(what, value)) from None


def storage_bytes(policy: Policy) -> int:
    return policy.max_storage_mb * 1024 * 1024


def caller_of(request: Request) -> Caller:
    caller = request.state.caller
    assert isinstance(caller, Caller)
    return caller


def ids_of(request: Request) -> tuple[str, str]:
    return request.path_params["name"], request.path_params["id"]


def query_of(request: Request, *known: str) -> QueryParams:
    """The query parameters, refusing any the route does not know (a misspelt ``limit`` doing
    nothing is worse than an error)."""
    for name in request.query_params:
        if name not in known:
            raise InvalidInput(
                f"unknown query parameter {name!r}; this route takes {', '.join(known)}",
                code="request.unknown_parameter",
            )
    return request.query_params


def _int_param(value: str | None, name: str, *, default: int) -> int:
    if value is None:
        return default
    if not _INTEGER.fullmatch(value):  # int() would take " 5", "5_0" and other digits
        raise InvalidInput(f"{name} must be an integer, not {value[:40]!r}")
    return int(value)


def _item_error(error: ItemError) -> TreadleError:
    """A per-item error of ``create_instances`` as the exception a single create raises."""
    code, message = str(error["code"]), str(error["message"])
    if code == SINGLETON:
        return Conflict(message, code=code, existing_id=error.get("existing_id"))
    if code.endswith("already_exists"):
        return AlreadyExists(message, code=code)
    if code == TooLarge.code:
        return TooLarge(message)
    return InvalidInput(message, code=code)
