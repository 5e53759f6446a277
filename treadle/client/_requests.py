"""The requests of the HTTP API and how their answers are read, shared by both clients.

Each function here describes one request as a :class:`Call`: what to send and how to turn the
response into a model; its method, path and credentials come from the operation's row of the
table (:mod:`treadle.client._operations`). ``Client`` and ``AsyncClient`` only send calls, so
the sync and the async client cannot drift apart. Errors are mapped here too: the API's
``{"error": {"code", "message"}}`` becomes the matching :mod:`treadle.errors` class.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, NotRequired, TypedDict, TypeVar, cast

import httpx
from pydantic import BaseModel, JsonValue, TypeAdapter, ValidationError

from treadle.client import _operations as op
from treadle.client._models import (
    ApiKey,
    ApiKeyInfo,
    ApprovalLink,
    AuditPage,
    BatchResult,
    Building,
    Created,
    FlowControl,
    Instance,
    InstanceList,
    LogPage,
    Overview,
    Policy,
    RotatedKey,
    Schedule,
    Step,
    StepPage,
    StoredCode,
    Tenant,
    UsageReport,
    Workflow,
    WorkflowSummary,
)
from treadle.errors import (
    AlreadyExists,
    CodeInvalid,
    Conflict,
    ConnectionFailed,
    InstanceFailed,
    InvalidDuration,
    InvalidInput,
    LimitExceeded,
    LinkExpired,
    NotFound,
    QuotaExceeded,
    RequestTimeout,
    ServerError,
    TooLarge,
    TreadleError,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    WasmBuilding,
    WasmUnavailable,
)
from treadle.runtime.errors import Problem

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
Sandbox = Literal["restricted", "wasm"]
Auth = op.Auth
Duration = float | str | _dt.timedelta
"""Seconds, a ``"<n> <unit>"`` string (e.g. ``"24 hours"``) or a timedelta."""
Instant = float | str | _dt.datetime
"""Epoch seconds, an ISO 8601 string or a datetime (a naive one is UTC)."""
_NO_BODY: Any = object()

# The reverse of the dispatcher's status table: a status means this class, unless the error's
# code is (or ends in) the code of one of these subclasses.
_BY_STATUS: dict[int, type[TreadleError]] = {
    400: InvalidInput,
    401: Unauthorized,
    404: NotFound,
    408: RequestTimeout,
    409: Conflict,
    410: LinkExpired,
    413: TooLarge,
    422: CodeInvalid,
    415: UnsupportedMediaType,
    429: QuotaExceeded,
    503: Unavailable,
}
_SUBCLASSES: tuple[type[TreadleError], ...] = (
    InvalidDuration,
    LimitExceeded,
    AlreadyExists,
    WasmUnavailable,
)
# A deploy sent again while the server builds the Python-in-Wasm runtime: at least this often,
# so that it is deployed within seconds of the build's end (the server's estimate is rough).
_BUILD_POLL_SECONDS = 5.0


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request: method, path (below the server URL), body, query, whose credentials."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    body: Any = _NO_BODY
    params: Mapping[str, str | int | list[str]] | None = None
    auth: Auth = "tenant"

    def content(self) -> bytes | None:
        return None if self.body is _NO_BODY else json.dumps(self.body).encode()


def call(
    operation: op.Operation,
    read: Callable[[httpx.Response], T],
    body: Any = _NO_BODY,
    params: Mapping[str, str | int | list[str]] | None = None,
    **path: str,
) -> Call[T]:
    """The request of ``operation`` (a row of the table) with ``path`` filled in."""
    return Call(operation.method, operation.url(**path), read, body, params, operation.auth)


# -- reading answers ----------------------------------------------------------------------------


def model(cls: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: _validated(TypeAdapter(cls), _json(response))


def field(name: str, type_: Any) -> Callable[[httpx.Response], Any]:
    """The answer's member ``name`` (e.g. the list in ``{"logs": [...]}``) as ``type_``."""
    adapter: TypeAdapter[Any] = TypeAdapter(type_)
    return lambda response: _validated(adapter, _json(response).get(name))


def nothing(response: httpx.Response) -> None:
    return None


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise ServerError(f"the server answered {response.status_code} with no JSON") from exc


def _validated(adapter: TypeAdapter[T], value: Any) -> T:
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise ServerError(f"the server's answer is not what the API promises: {exc}") from exc


def check(response: httpx.Response) -> None:
    """Raise the :mod:`treadle.errors` exception of an error answer (read in full first)."""
    try:
        response.raise_for_status()
    except httpx.HTTPStatusError as exc:
        raise error_of(response) from exc


def error_of(response: httpx.Response) -> TreadleError:
    """The :mod:`treadle.errors` exception for an error answer (status 400 or more)."""
    status = response.status_code
    try:
        error: dict[str, JsonValue] = dict(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        error = {}
    code = str(error.pop("code", "internal" if status >= 500 else "http.error"))
    message = str(error.pop("message", "") or f"the server answered {status}")
    if status >= 500 and status not in _BY_STATUS:
        return ServerError(message, code=code)
    cls = _class_of(code, status)
    if cls is None:
        return TreadleError(message, code=code, status=status, **error)
    if cls is CodeInvalid:
        problems = cast("Iterable[Problem]", error.pop("problems", None) or [])
        return _with_code(CodeInvalid(message, problems=list(problems)), code, error)
    if cls is QuotaExceeded or cls is Unavailable:
        retry_after = _retry_after(response.headers.get("retry-after"))
        return _with_code(cls(message, retry_after=retry_after), code, error)
    return cls(message, code=code, **error)


def _class_of(code: str, status: int) -> type[TreadleError] | None:
    for cls in _SUBCLASSES:
        if code == cls.code or code.endswith("." + cls.code):
            return cls
    return _BY_STATUS.get(status)


def _with_code(exc: TreadleError, code: str, details: dict[str, JsonValue]) -> TreadleError:
    exc.code = code
    exc.details.update(details)
    return exc


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value is not None else 1.0
    except ValueError:
        return 1.0


def connection_failed(url: str, exc: httpx.TransportError) -> ConnectionFailed:
    detail = str(exc) or type(exc).__name__
    return ConnectionFailed(f"could not reach the treadle server at {url}: {detail}")


def outcome(instance: Instance) -> Instance:
    """A finished instance if it completed; raises :class:`InstanceFailed` otherwise."""
    if instance.status == "complete":
        return instance
    error = instance.error
    what = f"{error.name}: {error.message}" if error is not None else "no error recorded"
    message = f"instance {instance.id!r} of {instance.workflow!r} is {instance.status} ({what})"
    raise InstanceFailed(message, instance=instance, name=error.name if error else "")


# -- request bodies -----------------------------------------------------------------------------


class UploadBody(TypedDict):
    sandbox: Sandbox
    source: NotRequired[str | None]
    wasm_base64: NotRequired[str]
    class_name: NotRequired[str]
    flow: NotRequired[dict[str, Any]]


class NewInstance(TypedDict):
    params: Any
    id: NotRequired[str]
    key: NotRequired[str]
    priority: NotRequired[int]
    start_at: NotRequired[str]
    delay: NotRequired[float | str]
    tags: NotRequired[dict[str, str]]


class Start(TypedDict, total=False):
    """A create's flow control and when it may start (docs/flow-control.md)."""

    key: str | None
    priority: int | None
    start_at: Instant | None
    delay: Duration | None
    tags: Mapping[str, str] | None  # at most 16 pairs, searched by ``instances(tags=...)``


class Filters(TypedDict, total=False):
    """Which instances a listing shows: those matching every filter given (docs/api.md),
    and its ``status`` (any of those given) if given."""

    tags: Mapping[str, str] | None  # every pair
    key: str | None
    created_after: Instant | None
    created_before: Instant | None
    id_prefix: str | None
    error_name: str | None


class StepRef(TypedDict):
    name: str
    count: NotRequired[int]


StatusChange = TypedDict(
    "StatusChange",
    {
        "status": Literal["pause", "resume", "terminate", "restart"],
        "from": NotRequired[StepRef],
        "rollback": NotRequired[bool],
        "upgrade": NotRequired[bool],
    },
)


class NewTenant(TypedDict):
    name: str
    policy: NotRequired[Mapping[str, object]]


class Lifetime(TypedDict, total=False):
    ttl: float | str
    expires_at: float | str
    overlap: float | str


# -- the tenant API -----------------------------------------------------------------------------


def deploy(
    name: str,
    source: str | None,
    sandbox: Sandbox,
    class_name: str | None,
    wasm: bytes | None,
    flow: Mapping[str, Any] | FlowControl | None = None,
) -> Call[StoredCode]:
    if (source is None) == (wasm is None):
        raise InvalidInput("give exactly one of source and wasm")
    body: UploadBody = {"sandbox": "wasm" if wasm is not None else sandbox}
    if wasm is not None:
        body["wasm_base64"] = base64.b64encode(wasm).decode("ascii")
    else:
        body["source"] = source
    if class_name is not None:
        body["class_name"] = class_name
    if flow is not None:
        body["flow"] = _flow(flow)
    return call(op.DEPLOY, _stored, body, name=name)


def _flow(flow: Mapping[str, Any] | FlowControl) -> dict[str, Any]:
    """A flow as the API takes it, with timedeltas in seconds."""
    given = flow.model_dump(exclude_defaults=True) if isinstance(flow, FlowControl) else dict(flow)
    if given.get("debounce") is not None:
        given["debounce"] = _seconds(given["debounce"])
    rate = given.get("rate_per_key")
    if isinstance(rate, Mapping) and rate.get("period") is not None:
        given["rate_per_key"] = {**rate, "period": _seconds(rate["period"])}
    return given


def _stored(response: httpx.Response) -> StoredCode:
    if response.status_code == 202:
        answer = _validated(TypeAdapter(Building), _json(response))
        retry_after = _retry_after(response.headers.get("retry-after", str(answer.retry_after)))
        raise WasmBuilding(answer.message, retry_after=retry_after)
    return model(StoredCode)(response)


class BuildWait:
    """How a deploy waits for the server's build of the Python-in-Wasm runtime: ``wait``
    seconds in all (0: not at all)."""

    def __init__(self, wait: float) -> None:
        self._wait = wait
        self._deadline = time.monotonic() + wait

    def delay(self, building: WasmBuilding) -> float:
        """Seconds to wait before sending the deploy again; raises ``building`` once the time
        to wait is up (with what was waited, if anything)."""
        left = self._deadline - time.monotonic()
        if left > 0:
            return min(building.retry_after, _BUILD_POLL_SECONDS, left)
        if self._wait <= 0:
            raise building
        message = f"{building.message}; gave up after waiting {self._wait:g} s"
        raise WasmBuilding(message, retry_after=building.retry_after) from building


def workflows() -> Call[list[WorkflowSummary]]:
    return call(op.LIST_WORKFLOWS, field("workflows", list[WorkflowSummary]))


def workflow(name: str) -> Call[Workflow]:
    return call(op.GET_WORKFLOW, model(Workflow), name=name)


def delete_workflow(name: str) -> Call[None]:
    return call(op.DELETE_WORKFLOW, nothing, name=name)


def create(
    workflow: str, params: Any, instance_id: str | None, start: Start | None = None
) -> Call[Created]:
    body = _new_instance(params, instance_id, start or {})
    return call(op.CREATE_INSTANCE, model(Created), body, name=workflow)


def create_batch(workflow: str, instances: Iterable[Mapping[str, Any]]) -> Call[BatchResult]:
    items = [_new_instance(item.get("params"), item.get("id"), _start(item)) for item in instances]
    return call(op.CREATE_BATCH, _batch_result, {"instances": items}, name=workflow)


def _start(item: Mapping[str, Any]) -> Start:
    return cast("Start", {name: item.get(name) for name in Start.__annotations__})


def _batch_result(response: httpx.Response) -> BatchResult:
    result = model(BatchResult)(response)
    if (header := response.headers.get("retry-after")) is None:
        return result
    return result.model_copy(update={"retry_after": _retry_after(header)})


def _new_instance(params: Any, instance_id: str | None, start: Start) -> NewInstance:
    body: NewInstance = {"params": params}
    if instance_id is not None:
        body["id"] = instance_id
    if (key := start.get("key")) is not None:
        body["key"] = key
    if (priority := start.get("priority")) is not None:
        body["priority"] = priority
    if (start_at := _iso(start.get("start_at"))) is not None:
        body["start_at"] = start_at
    if (delay := start.get("delay")) is not None:
        body["delay"] = _seconds(delay)
    if (tags := start.get("tags")) is not None:
        body["tags"] = dict(tags)
    return body


def get(workflow: str, instance_id: str) -> Call[Instance]:
    return call(op.GET_INSTANCE, model(Instance), name=workflow, id=instance_id)


def instances(
    workflow: str | None,
    status: str | Sequence[str] | None,
    limit: int | None,
    cursor: str | None,
    filters: Filters | None = None,
) -> Call[InstanceList]:
    """A page of a workflow's instances (None: of every workflow) matching ``filters``."""
    params = {**_filters(status, filters or {}), **_query(limit=limit, cursor=cursor)}
    if workflow is None:
        return call(op.LIST_ALL_INSTANCES, model(InstanceList), params=params)
    return call(op.LIST_INSTANCES, model(InstanceList), params=params, name=workflow)


def _filters(status: str | Sequence[str] | None, given: Filters) -> dict[str, str | list[str]]:
    params: dict[str, str | list[str]] = {}
    if status is not None:
        params["status"] = [status] if isinstance(status, str) else list(status)
    for key, value in (given.get("tags") or {}).items():
        params[f"tag.{key}"] = value
    for name in ("key", "id_prefix", "error_name"):
        if (text := given.get(name)) is not None:
            params[name] = str(text)
    for name in ("created_after", "created_before"):
        if (time := _iso(given.get(name))) is not None:  # type: ignore[arg-type]
            params[name] = time
    return params


def _query(**given: str | int | None) -> dict[str, str | int]:
    """The query parameters that were given (None leaves one out)."""
    return {name: value for name, value in given.items() if value is not None}


def change_status(workflow: str, instance_id: str, body: StatusChange) -> Call[Instance]:
    return call(op.CHANGE_STATUS, model(Instance), body, name=workflow, id=instance_id)


def pause(workflow: str, instance_id: str) -> Call[Instance]:
    return change_status(workflow, instance_id, {"status": "pause"})


def resume(workflow: str, instance_id: str) -> Call[Instance]:
    return change_status(workflow, instance_id, {"status": "resume"})


def terminate(workflow: str, instance_id: str, rollback: bool) -> Call[Instance]:
    body: StatusChange = {"status": "terminate"}
    if rollback:
        body["rollback"] = True
    return change_status(workflow, instance_id, body)


def restart(
    workflow: str, instance_id: str, from_step: str | None, count: int | None, upgrade: bool
) -> Call[Instance]:
    return change_status(workflow, instance_id, restart_body(from_step, count, upgrade))


def restart_body(from_step: str | None, count: int | None, upgrade: bool) -> StatusChange:
    body: StatusChange = {"status": "restart"}
    if from_step is not None:
        step: StepRef = {"name": from_step}
        if count is not None:
            step["count"] = count
        body["from"] = step
    elif count is not None:
        raise InvalidInput("count goes with from_step")
    if upgrade:
        body["upgrade"] = True
    return body


def send_event(workflow: str, instance_id: str, type_: str, payload: Any) -> Call[None]:
    return call(op.SEND_EVENT, nothing, payload, name=workflow, id=instance_id, type=type_)


def create_link(
    workflow: str, instance_id: str, type_: str, ttl: Duration | None, uses: int | None
) -> Call[ApprovalLink]:
    """Mint an approval link that sends the event ``type_`` to the instance."""
    body: dict[str, Any] = {}
    if ttl is not None:
        body["ttl"] = _seconds(ttl)
    if uses is not None:
        body["uses"] = uses
    return call(
        op.CREATE_LINK,
        model(ApprovalLink),
        body or _NO_BODY,
        name=workflow,
        id=instance_id,
        type=type_,
    )


def logs(workflow: str, instance_id: str, cursor: str | None) -> Call[LogPage]:
    """A page of the instance's log lines (the server's default size)."""
    params = _query(cursor=cursor)
    return call(op.GET_LOGS, model(LogPage), params=params, name=workflow, id=instance_id)


def steps(workflow: str, instance_id: str, cursor: str) -> Call[StepPage]:
    """The page of the instance's steps that ``cursor`` (``steps_next_cursor``) starts."""
    params = {"cursor": cursor}
    return call(op.GET_STEPS, model(StepPage), params=params, name=workflow, id=instance_id)


def with_steps(instance: Instance, more: list[Step]) -> Instance:
    """``instance`` with the steps of the pages after its embedded list."""
    return instance.model_copy(
        update={"steps": [*instance.steps, *more], "steps_next_cursor": None}
    )


def delete(workflow: str, instance_id: str) -> Call[None]:
    return call(op.DELETE_INSTANCE, nothing, name=workflow, id=instance_id)


def stream_path(workflow: str, instance_id: str) -> str:
    """The path of the instance's live stream (followed by :mod:`treadle.client._stream`)."""
    return op.STREAM.url(name=workflow, id=instance_id)


# -- schedules -----------------------------------------------------------------------------------


ScheduleOverlap = Literal["skip", "buffer_one", "allow"]
ScheduleCatchUp = Literal["none", "latest", "all"]


class ScheduleSpec(TypedDict, total=False):
    """The body of a schedule's put: exactly one of ``cron`` and ``every``."""

    cron: str
    every: float | str
    timezone: str
    params: Any
    overlap: ScheduleOverlap
    catch_up: ScheduleCatchUp
    paused: bool


def put_schedule(workflow: str, schedule_id: str, spec: ScheduleSpec) -> Call[Schedule]:
    return call(op.PUT_SCHEDULE, model(Schedule), dict(spec), name=workflow, schedule=schedule_id)


def schedules(workflow: str) -> Call[list[Schedule]]:
    return call(op.LIST_SCHEDULES, field("schedules", list[Schedule]), name=workflow)


def schedule(workflow: str, schedule_id: str) -> Call[Schedule]:
    return call(op.GET_SCHEDULE, model(Schedule), name=workflow, schedule=schedule_id)


def delete_schedule(workflow: str, schedule_id: str) -> Call[None]:
    return call(op.DELETE_SCHEDULE, nothing, name=workflow, schedule=schedule_id)


def spec_of(found: Schedule, paused: bool) -> ScheduleSpec:
    """The spec of a schedule as read, to put it back paused or not."""
    spec: ScheduleSpec = {
        "timezone": found.timezone,
        "params": found.params,
        "overlap": cast(Any, found.overlap),
        "catch_up": cast(Any, found.catch_up),
        "paused": paused,
    }
    if found.cron is not None:
        spec["cron"] = found.cron
    elif found.every is not None:
        spec["every"] = found.every
    return spec


# -- the admin API ------------------------------------------------------------------------------


def create_tenant(name: str, policy: Mapping[str, Any] | None) -> Call[Tenant]:
    body: NewTenant = {"name": name}
    if policy is not None:
        body["policy"] = dict(policy)
    return call(op.CREATE_TENANT, model(Tenant), body)


def tenants() -> Call[list[Tenant]]:
    return call(op.LIST_TENANTS, field("tenants", list[Tenant]))


def tenant(name: str) -> Call[Tenant]:
    return call(op.GET_TENANT, model(Tenant), tenant=name)


def update_policy(name: str, changes: Mapping[str, Any]) -> Call[Policy]:
    return call(op.UPDATE_POLICY, model(Policy), dict(changes), tenant=name)


def create_key(name: str, ttl: Duration | None, expires_at: Instant | None) -> Call[ApiKey]:
    body = _lifetime(ttl, expires_at)
    return call(op.CREATE_KEY, model(ApiKey), body or _NO_BODY, tenant=name)


def keys(name: str) -> Call[list[ApiKeyInfo]]:
    return call(op.LIST_KEYS, field("keys", list[ApiKeyInfo]), tenant=name)


def rotate_key(
    name: str,
    key_id: str,
    overlap: Duration | None,
    ttl: Duration | None,
    expires_at: Instant | None,
) -> Call[RotatedKey]:
    body = _lifetime(ttl, expires_at)
    if overlap is not None:
        body["overlap"] = _seconds(overlap)
    return call(op.ROTATE_KEY, model(RotatedKey), body or _NO_BODY, tenant=name, key_id=key_id)


def _lifetime(ttl: Duration | None, expires_at: Instant | None) -> Lifetime:
    """The body giving a new key its lifetime (the server refuses both at once)."""
    body: Lifetime = {}
    if ttl is not None:
        body["ttl"] = _seconds(ttl)
    if expires_at is not None:
        instant = expires_at.isoformat() if isinstance(expires_at, _dt.datetime) else expires_at
        body["expires_at"] = instant
    return body


def _seconds(value: Duration) -> float | str:
    return value.total_seconds() if isinstance(value, _dt.timedelta) else value


def delete_key(name: str, key_id: str) -> Call[None]:
    return call(op.DELETE_KEY, nothing, tenant=name, key_id=key_id)


def audit(
    tenant: str | None, action: str | None, limit: int | None, cursor: str | None
) -> Call[AuditPage]:
    """A page of the audit log; of one tenant on its own route (404 for an unknown tenant)."""
    params = _query(action=action, limit=limit, cursor=cursor)
    if tenant is None:
        return call(op.AUDIT, model(AuditPage), params=params)
    return call(op.TENANT_AUDIT, model(AuditPage), params=params, tenant=tenant)


def usage(tenant: str | None, start: Instant | None, end: Instant | None) -> Call[UsageReport]:
    """A tenant's usage: the caller's own, or (the admin) one tenant's by name."""
    params = _query(**{"from": _iso(start), "to": _iso(end)})
    if tenant is None:
        return call(op.USAGE, model(UsageReport), params=params)
    return call(op.TENANT_USAGE, model(UsageReport), params=params, tenant=tenant)


def _iso(value: Instant | None) -> str | None:
    """A time as the API takes it: ISO 8601 (a naive datetime is UTC; a number, epoch s)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, _dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=_dt.UTC)).isoformat()
    return _dt.datetime.fromtimestamp(value, _dt.UTC).isoformat()


def overview() -> Call[Overview]:
    return call(op.OVERVIEW, model(Overview))
