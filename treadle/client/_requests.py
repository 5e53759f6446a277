"""The requests of the HTTP API and how their answers are read, shared by both clients.

Each function here describes one request as a :class:`Call`: what to send and how to turn the
response into a model. ``Client`` and ``AsyncClient`` only send calls, so the sync and the
async client cannot drift apart. Errors are mapped here too: the API's
``{"error": {"code", "message"}}`` becomes the matching :mod:`treadle.errors` class.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from treadle.client._models import (
    ApiKey,
    ApiKeyInfo,
    AuditPage,
    BatchResult,
    Created,
    Instance,
    InstanceList,
    LogPage,
    Policy,
    RotatedKey,
    Step,
    StepPage,
    StoredCode,
    Tenant,
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
    NotFound,
    QuotaExceeded,
    RequestTimeout,
    ServerError,
    TooLarge,
    TreadleError,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
Sandbox = Literal["restricted", "wasm"]
Auth = Literal["tenant", "admin", "none"]
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
    413: TooLarge,
    422: CodeInvalid,
    415: UnsupportedMediaType,
    429: QuotaExceeded,
    503: Unavailable,
}
_SUBCLASSES: tuple[type[TreadleError], ...] = (InvalidDuration, LimitExceeded, AlreadyExists)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request: method, path (below the server URL), body, query, whose credentials."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    body: Any = _NO_BODY
    params: Mapping[str, str | int] | None = None
    auth: Auth = "tenant"

    def content(self) -> bytes | None:
        return None if self.body is _NO_BODY else json.dumps(self.body).encode()


def segment(value: str) -> str:
    """``value`` as one path segment: a ``/`` in an id must not change the route."""
    return quote(value, safe="")


def instance_path(workflow: str, instance_id: str) -> str:
    return f"/v1/workflows/{segment(workflow)}/instances/{segment(instance_id)}"


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
        error = dict(response.json()["error"])
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
        problems = error.pop("problems", None) or []
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


def _with_code(exc: TreadleError, code: str, details: dict[str, Any]) -> TreadleError:
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


# -- the tenant API -----------------------------------------------------------------------------


def deploy(
    name: str,
    source: str | None,
    sandbox: Sandbox,
    class_name: str | None,
    wasm: bytes | None,
) -> Call[StoredCode]:
    if (source is None) == (wasm is None):
        raise InvalidInput("give exactly one of source and wasm")
    body: dict[str, Any] = {"sandbox": "wasm" if wasm is not None else sandbox}
    if wasm is not None:
        body["wasm_base64"] = base64.b64encode(wasm).decode("ascii")
    else:
        body["source"] = source
    if class_name is not None:
        body["class_name"] = class_name
    return Call("PUT", f"/v1/workflows/{segment(name)}", model(StoredCode), body)


def workflows() -> Call[list[WorkflowSummary]]:
    return Call("GET", "/v1/workflows", field("workflows", list[WorkflowSummary]))


def workflow(name: str) -> Call[Workflow]:
    return Call("GET", f"/v1/workflows/{segment(name)}", model(Workflow))


def delete_workflow(name: str) -> Call[None]:
    return Call("DELETE", f"/v1/workflows/{segment(name)}", nothing)


def create(workflow: str, params: Any, instance_id: str | None) -> Call[Created]:
    path = f"/v1/workflows/{segment(workflow)}/instances"
    return Call("POST", path, model(Created), _new_instance(params, instance_id))


def create_batch(workflow: str, instances: Iterable[Mapping[str, Any]]) -> Call[BatchResult]:
    items = [_new_instance(item.get("params"), item.get("id")) for item in instances]
    path = f"/v1/workflows/{segment(workflow)}/instances/batch"
    return Call("POST", path, _batch_result, {"instances": items})


def _batch_result(response: httpx.Response) -> BatchResult:
    result = model(BatchResult)(response)
    if (header := response.headers.get("retry-after")) is None:
        return result
    return result.model_copy(update={"retry_after": _retry_after(header)})


def _new_instance(params: Any, instance_id: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"params": params}
    if instance_id is not None:
        body["id"] = instance_id
    return body


def get(workflow: str, instance_id: str) -> Call[Instance]:
    return Call("GET", instance_path(workflow, instance_id), model(Instance))


def instances(
    workflow: str, status: str | None, limit: int | None, cursor: str | None
) -> Call[InstanceList]:
    params = _query(status=status, limit=limit, cursor=cursor)
    path = f"/v1/workflows/{segment(workflow)}/instances"
    return Call("GET", path, model(InstanceList), params=params)


def _query(**given: str | int | None) -> dict[str, str | int]:
    """The query parameters that were given (None leaves one out)."""
    return {name: value for name, value in given.items() if value is not None}


def change_status(workflow: str, instance_id: str, body: dict[str, Any]) -> Call[Instance]:
    path = instance_path(workflow, instance_id) + "/status"
    return Call("PATCH", path, model(Instance), body)


def restart_body(from_step: str | None, count: int | None, upgrade: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"status": "restart"}
    if from_step is not None:
        body["from"] = {"name": from_step, **({"count": count} if count is not None else {})}
    elif count is not None:
        raise InvalidInput("count goes with from_step")
    if upgrade:
        body["upgrade"] = True
    return body


def send_event(workflow: str, instance_id: str, type_: str, payload: Any) -> Call[None]:
    path = instance_path(workflow, instance_id) + f"/events/{segment(type_)}"
    return Call("POST", path, nothing, payload)


def logs(workflow: str, instance_id: str, cursor: str | None) -> Call[LogPage]:
    """A page of the instance's log lines (the server's default size)."""
    path = instance_path(workflow, instance_id) + "/logs"
    return Call("GET", path, model(LogPage), params=_query(cursor=cursor))


def steps(workflow: str, instance_id: str, cursor: str) -> Call[StepPage]:
    """The page of the instance's steps that ``cursor`` (``steps_next_cursor``) starts."""
    path = instance_path(workflow, instance_id) + "/steps"
    return Call("GET", path, model(StepPage), params={"cursor": cursor})


def with_steps(instance: Instance, more: list[Step]) -> Instance:
    """``instance`` with the steps of the pages after its embedded list."""
    return instance.model_copy(
        update={"steps": [*instance.steps, *more], "steps_next_cursor": None}
    )


def delete(workflow: str, instance_id: str) -> Call[None]:
    return Call("DELETE", instance_path(workflow, instance_id), nothing)


# -- the admin API ------------------------------------------------------------------------------

_TENANTS = "/v1/admin/tenants"


def create_tenant(name: str, policy: Mapping[str, Any] | None) -> Call[Tenant]:
    body: dict[str, Any] = {"name": name}
    if policy is not None:
        body["policy"] = dict(policy)
    return Call("POST", _TENANTS, model(Tenant), body, auth="admin")


def tenants() -> Call[list[Tenant]]:
    return Call("GET", _TENANTS, field("tenants", list[Tenant]), auth="admin")


def tenant(name: str) -> Call[Tenant]:
    return Call("GET", f"{_TENANTS}/{segment(name)}", model(Tenant), auth="admin")


def update_policy(name: str, changes: Mapping[str, Any]) -> Call[Policy]:
    path = f"{_TENANTS}/{segment(name)}/policy"
    return Call("PATCH", path, model(Policy), dict(changes), auth="admin")


def create_key(name: str, ttl: Duration | None, expires_at: Instant | None) -> Call[ApiKey]:
    path = f"{_TENANTS}/{segment(name)}/keys"
    body = _lifetime(ttl, expires_at)
    return Call("POST", path, model(ApiKey), body or _NO_BODY, auth="admin")


def keys(name: str) -> Call[list[ApiKeyInfo]]:
    path = f"{_TENANTS}/{segment(name)}/keys"
    return Call("GET", path, field("keys", list[ApiKeyInfo]), auth="admin")


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
    path = f"{_TENANTS}/{segment(name)}/keys/{segment(key_id)}/rotate"
    return Call("POST", path, model(RotatedKey), body or _NO_BODY, auth="admin")


def _lifetime(ttl: Duration | None, expires_at: Instant | None) -> dict[str, Any]:
    """The body giving a new key its lifetime (the server refuses both at once)."""
    body: dict[str, Any] = {}
    if ttl is not None:
        body["ttl"] = _seconds(ttl)
    if expires_at is not None:
        instant = expires_at.isoformat() if isinstance(expires_at, _dt.datetime) else expires_at
        body["expires_at"] = instant
    return body


def _seconds(value: Duration) -> float | str:
    return value.total_seconds() if isinstance(value, _dt.timedelta) else value


def delete_key(name: str, key_id: str) -> Call[None]:
    path = f"{_TENANTS}/{segment(name)}/keys/{segment(key_id)}"
    return Call("DELETE", path, nothing, auth="admin")


def audit(
    tenant: str | None, action: str | None, limit: int | None, cursor: str | None
) -> Call[AuditPage]:
    """A page of the audit log; of one tenant on its own route (404 for an unknown tenant)."""
    params = _query(action=action, limit=limit, cursor=cursor)
    path = "/v1/admin/audit" if tenant is None else f"{_TENANTS}/{segment(tenant)}/audit"
    return Call("GET", path, model(AuditPage), params=params, auth="admin")
