"""The admin API (DESIGN §6): tenants, their policies and their API keys.

The dispatcher checks the admin token before any of these run and turns the exceptions raised
here (treadle errors, pydantic validation errors) into HTTP error responses.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tenants._policy import Policy
from tenants._store import MAX_NAME, NAME_PATTERN, TenantStore

_PATCH = TypeAdapter(dict[str, Any])


class NewTenant(BaseModel):
    """The body of ``POST /v1/admin/tenants``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    # Checked by the store (code tenant.invalid_name); described here for the OpenAPI document.
    name: str = Field(
        json_schema_extra={"minLength": 1, "maxLength": MAX_NAME, "pattern": NAME_PATTERN}
    )
    policy: Policy | None = None


class AdminApi:
    def __init__(self, store: TenantStore) -> None:
        self._store = store

    def routes(self) -> list[Route]:
        base = "/v1/admin/tenants"
        return [
            Route(base, self.create_tenant, methods=["POST"]),
            Route(base, self.list_tenants, methods=["GET"]),
            Route(base + "/{tenant}", self.get_tenant, methods=["GET"]),
            Route(base + "/{tenant}/policy", self.update_policy, methods=["PATCH"]),
            Route(base + "/{tenant}/keys", self.create_key, methods=["POST"]),
            Route(base + "/{tenant}/keys/{key_id}", self.delete_key, methods=["DELETE"]),
        ]

    async def create_tenant(self, request: Request) -> Response:
        body = NewTenant.model_validate_json(await request.body())
        tenant = await run_in_threadpool(self._store.create_tenant, body.name, body.policy)
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
        policy = await run_in_threadpool(self._store.update_policy, name, patch)
        return JSONResponse(policy.model_dump())

    async def create_key(self, request: Request) -> Response:
        key = await run_in_threadpool(self._store.create_key, request.path_params["tenant"])
        return JSONResponse(key, status_code=201)

    async def delete_key(self, request: Request) -> Response:
        tenant, key_id = request.path_params["tenant"], request.path_params["key_id"]
        await run_in_threadpool(self._store.delete_key, tenant, key_id)
        return Response(status_code=204)
