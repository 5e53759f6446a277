"""The admin API (``docs/api.md``): tenants, their policies, their API keys and the audit log.

The dispatcher checks the admin token before any of these run, leaves the :class:`Actor` in
the request's state, and turns the exceptions raised here (treadle errors, pydantic
validation errors) into HTTP error responses.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter
from pydantic.config import JsonDict
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tenants._audit import MAX_LIMIT, Actor
from tenants._policy import Policy
from tenants._store import (
    DEFAULT_OVERLAP,
    MAX_NAME,
    NAME_PATTERN,
    TenantStore,
    check_tenant_name,
)
from treadle.errors import InvalidInput, Unauthorized
from treadle.runtime import MAX_DURATION_SECONDS, parse_duration, parse_instant

_PATCH = TypeAdapter(dict[str, Any])
_Body = TypeVar("_Body", bound=BaseModel)


class NewTenant(BaseModel):
    """The body of ``POST /v1/admin/tenants``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    # Checked by the store (code tenant.invalid_name); described here for the OpenAPI document.
    name: str = Field(
        json_schema_extra={"minLength": 1, "maxLength": MAX_NAME, "pattern": NAME_PATTERN}
    )
    policy: Policy | None = None


# What the document can say of durations and times; the rest (at most 365 days in any unit, a
# time in the future) depends on the unit or the clock and is a 400 ``duration.invalid``.
_DURATION_FORMS: list[JsonValue] = [
    {"type": "number", "minimum": 0, "maximum": MAX_DURATION_SECONDS},
    {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*[a-zA-Z]+\s*$"},
]
_DURATION: JsonDict = {"anyOf": _DURATION_FORMS}
_MAYBE_DURATION: JsonDict = {"anyOf": [*_DURATION_FORMS, {"type": "null"}]}
_SET: JsonDict = {"not": {"type": "null"}}
_BOTH_LIFETIMES: JsonDict = {
    "required": ["ttl", "expires_at"],
    "properties": {"ttl": _SET, "expires_at": _SET},
}
_INSTANT: JsonDict = {
    "anyOf": [{"type": "number"}, {"type": "string", "format": "date-time"}, {"type": "null"}]
}


class KeyLifetime(BaseModel):
    """The optional body of ``POST .../keys``: when the new key stops working, as a time to
    live (a duration: seconds or ``"<n> <unit>"``) or a time (ISO 8601 or epoch seconds).
    Without either, it works until it is deleted or rotated."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"not": _BOTH_LIFETIMES},  # "give ttl or expires_at, not both"
    )

    ttl: float | str | None = Field(default=None, json_schema_extra=_MAYBE_DURATION)
    expires_at: float | str | None = Field(default=None, json_schema_extra=_INSTANT)

    def expiry(self, now: float) -> float | None:
        if self.ttl is not None and self.expires_at is not None:
            raise InvalidInput("give ttl or expires_at, not both")
        if self.ttl is not None:
            return now + parse_duration(self.ttl, what="ttl")
        if self.expires_at is not None:
            return parse_instant(self.expires_at, what="expires_at")
        return None


class Rotation(KeyLifetime):
    """The optional body of ``POST .../keys/{key_id}/rotate``: how long the old key keeps
    working (a duration; default 24 hours; 0 stops it at once), and the new key's lifetime."""

    overlap: float | str = Field(default=DEFAULT_OVERLAP, json_schema_extra=_DURATION)

    def overlap_seconds(self) -> float:
        return parse_duration(self.overlap, what="overlap")


class AuditQuery(BaseModel):
    """The query of ``GET /v1/admin/tenants/{tenant}/audit``. Unknown parameters are refused:
    a misspelt filter silently showing everything is worse than an error."""

    model_config = ConfigDict(extra="forbid")

    action: str | None = None
    limit: int = Field(default=50, ge=1, le=MAX_LIMIT)
    cursor: str | None = None


class AuditFilter(AuditQuery):
    """The query of ``GET /v1/admin/audit``."""

    tenant: str | None = None


class AdminApi:
    def __init__(self, store: TenantStore) -> None:
        self._store = store

    def handlers(self) -> dict[str, Callable[[Request], Awaitable[Response]]]:
        """The handlers by operation (``treadle.client.OPERATIONS``: path and method)."""
        return {
            "create_tenant": self.create_tenant,
            "list_tenants": self.list_tenants,
            "get_tenant": self.get_tenant,
            "update_policy": self.update_policy,
            "create_key": self.create_key,
            "list_keys": self.list_keys,
            "delete_key": self.delete_key,
            "rotate_key": self.rotate_key,
            "tenant_audit": self.tenant_audit,
            "audit": self.audit,
        }

    async def create_tenant(self, request: Request) -> Response:
        body = NewTenant.model_validate_json(await request.body())
        tenant = await run_in_threadpool(
            self._store.create_tenant, body.name, body.policy, actor=actor_of(request)
        )
        return JSONResponse(tenant.view(), status_code=201)

    async def list_tenants(self, request: Request) -> Response:
        tenants = await run_in_threadpool(self._store.tenants)
        return JSONResponse({"tenants": [t.view() for t in tenants]})

    async def get_tenant(self, request: Request) -> Response:
        tenant = await run_in_threadpool(self._store.tenant, request.path_params["tenant"])
        return JSONResponse(tenant.view())

    async def update_policy(self, request: Request) -> Response:
        patch = _PATCH.validate_json(await request.body())
        name = request.path_params["tenant"]
        policy = await run_in_threadpool(
            self._store.update_policy, name, patch, actor=actor_of(request)
        )
        return JSONResponse(policy.model_dump())

    async def create_key(self, request: Request) -> Response:
        body = await _optional(request, KeyLifetime)
        key = await run_in_threadpool(
            self._store.create_key,
            request.path_params["tenant"],
            expires_at=body.expiry(self._store.now()),
            actor=actor_of(request),
        )
        return JSONResponse(key, status_code=201)

    async def list_keys(self, request: Request) -> Response:
        keys = await run_in_threadpool(self._store.keys, request.path_params["tenant"])
        return JSONResponse({"keys": keys})

    async def rotate_key(self, request: Request) -> Response:
        body = await _optional(request, Rotation)
        tenant, key_id = request.path_params["tenant"], request.path_params["key_id"]
        key = await run_in_threadpool(
            self._store.rotate_key,
            tenant,
            key_id,
            overlap=body.overlap_seconds(),
            expires_at=body.expiry(self._store.now()),
            actor=actor_of(request),
        )
        return JSONResponse(key, status_code=201)

    async def delete_key(self, request: Request) -> Response:
        tenant, key_id = request.path_params["tenant"], request.path_params["key_id"]
        await run_in_threadpool(self._store.delete_key, tenant, key_id, actor=actor_of(request))
        return Response(status_code=204)

    async def audit(self, request: Request) -> Response:
        query = AuditFilter.model_validate(_query(request))
        if query.tenant is not None:
            check_tenant_name(query.tenant)
        return await self._entries(query, query.tenant)

    async def tenant_audit(self, request: Request) -> Response:
        query = AuditQuery.model_validate(_query(request))
        tenant = request.path_params["tenant"]
        await run_in_threadpool(self._store.tenant, tenant)  # 404 for a tenant that is not there
        return await self._entries(query, tenant)

    async def _entries(self, query: AuditQuery, tenant: str | None) -> Response:
        entries, cursor = await run_in_threadpool(
            self._store.audit.entries,
            tenant=tenant,
            action=query.action,
            limit=query.limit,
            cursor=query.cursor,
        )
        return JSONResponse({"entries": entries, "next_cursor": cursor})


def actor_of(request: Request) -> Actor:
    """Who is calling: left in the request's state by the dispatcher's authentication."""
    actor = request.scope.get("state", {}).get("admin")
    if not isinstance(actor, Actor):  # a route mounted without the authentication in front
        raise Unauthorized("no admin credentials were checked for this request")
    return actor


async def _optional(request: Request, model: type[_Body]) -> _Body:
    raw = await request.body()
    return model.model_validate_json(raw) if raw.strip() else model()


def _query(request: Request) -> dict[str, str]:
    """The query parameters, as given: an empty one (``?limit=``) is checked like any other
    value, as the OpenAPI document describes it, not taken for an absent one."""
    return dict(request.query_params.items())
