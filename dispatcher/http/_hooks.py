"""Webhooks over HTTP (docs/webhooks.md): a tenant puts, lists, gets and deletes a
workflow's hooks with its API key; anyone holding a hook's secret creates an instance by
``POST /v1/hooks/{hook_id}`` signed with it (``engine._hooks``).

A delivery carries no API key (``_auth``), and its body is not checked before its
signature verifies (``_guard``): the body limit (``_limits``) has capped it before anything
is read from the database; then the signature, then the ``Idempotency-Key``, then the JSON.
The instance is created as ``POST .../instances`` creates one: the workflow's current
version, under the tenant's quota and flow control.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dispatcher._settings import Settings
from dispatcher.http._guard import check_json, check_media_type
from dispatcher.http._instances import SINGLETON, caller_of, storage_bytes
from dispatcher.http._routing import Handlers
from engine import (
    Delivered,
    Engine,
    Flow,
    HookStore,
    NewInstance,
    Quota,
    check_idempotency_key,
    parse_traceparent,
)
from loader import Loader
from storage import Clock
from tenants import Policy
from treadle.errors import Conflict, InvalidInput, NotFound, TooLarge, TreadleError
from treadle.runtime import JSONObject


class HookApi:
    def __init__(
        self,
        engine: Engine,
        loader: Loader,
        policy_of: Callable[[int], Policy],
        clock: Clock,
        settings: Settings,
    ) -> None:
        self._engine = engine
        self._hooks = HookStore(engine.db)
        self._loader = loader
        self._policy_of = policy_of
        self._clock = clock
        self._public_url = settings.public_url

    def handlers(self) -> Handlers:
        return {
            "put_hook": self.put,
            "list_hooks": self.listing,
            "get_hook": self.get,
            "delete_hook": self.delete,
            "send_hook": self.send,
        }

    def _url_of(self, request: Request) -> Callable[[str], str]:
        base = (self._public_url or str(request.base_url)).rstrip("/")
        return lambda hook_id: f"{base}/v1/hooks/{hook_id}"

    async def put(self, request: Request) -> Response:
        tenant_id, (name, hook) = caller_of(request).tenant_id, _ids(request)
        view, secret, created = await run_in_threadpool(
            self._hooks.put, tenant_id, name, hook, self._clock.now(), self._url_of(request)
        )
        answer = {"hook": view["hook"], "url": view["url"], "secret": secret}
        return JSONResponse(answer, status_code=201 if created else 200)

    async def listing(self, request: Request) -> Response:
        tenant_id, name = caller_of(request).tenant_id, request.path_params["name"]
        hooks = await run_in_threadpool(self._list, tenant_id, name, self._url_of(request))
        return JSONResponse({"hooks": hooks})

    def _list(self, tenant_id: int, name: str, url: Callable[[str], str]) -> Any:
        self._loader.current(tenant_id, name)  # 404 for a workflow that is not there
        return self._hooks.listing(tenant_id, name, self._clock.now(), url)

    async def get(self, request: Request) -> Response:
        tenant_id, (name, hook) = caller_of(request).tenant_id, _ids(request)
        view = await run_in_threadpool(
            self._hooks.get, tenant_id, name, hook, self._clock.now(), self._url_of(request)
        )
        return JSONResponse(view)

    async def delete(self, request: Request) -> Response:
        tenant_id, (name, hook) = caller_of(request).tenant_id, _ids(request)
        await run_in_threadpool(self._hooks.delete, tenant_id, name, hook)
        return Response(status_code=204)

    async def send(self, request: Request) -> Response:
        body = await request.body()  # at most max_body_bytes (413), before any database read
        answer, status = await run_in_threadpool(
            self._deliver,
            request.path_params["hook_id"],
            body,
            request.headers.get("treadle-signature"),
            request.headers.get("idempotency-key"),
            request,
        )
        return JSONResponse(answer, status_code=status)

    def _deliver(
        self, hook_id: str, body: bytes, signature: str | None, key: str | None, request: Request
    ) -> tuple[JSONObject, int]:
        now = self._clock.now()
        hook = self._hooks.verify(hook_id, signature, body, now)
        check_idempotency_key(key)
        params = _params(body, request.headers.get("content-type"))
        if key is not None:
            made = self._hooks.delivered(hook.id, key, now)
            if made is not None:
                return self._repeat(hook.tenant_id, hook.workflow, made), 200
        version, flow = self._loader.current_workflow(hook.tenant_id, hook.workflow)
        policy = self._policy_of(hook.tenant_id)
        quota = Quota(policy.creates_per_second, policy.max_queued_instances, storage_bytes(policy))
        wrap = None if key is None else self._hooks.recording(hook.id, key, now)
        try:
            created, errors = self._engine.create_instances(
                hook.tenant_id,
                hook.workflow,
                version,
                [NewInstance(params=params)],
                quota,
                caller=parse_traceparent(request.headers.get("traceparent")),
                flow=Flow.from_json(flow),
                wrap=wrap,
            )
        except Delivered as repeat:  # the same key, delivered by another request meanwhile
            return self._repeat(hook.tenant_id, hook.workflow, repeat.instance_id), 200
        if errors:
            raise _refused(errors[0])
        if key is not None:
            self._hooks.prune(now)
        item = created[0]
        answer: JSONObject = {
            "id": item["id"],
            "status": item["status"],
            "version": item["version"],
        }
        if item.get("debounced"):
            answer["debounced"] = True
        return answer, 201

    def _repeat(self, tenant_id: int, workflow: str, instance_id: str) -> JSONObject:
        """The answer to a repeated key: the instance it created (as it is now, if still
        there)."""
        try:
            view = self._engine.get_instance(tenant_id, workflow, instance_id)
        except NotFound:
            return {"id": instance_id}
        return {"id": instance_id, "status": view["status"], "version": view["version"]}


def _params(body: bytes, content_type: str | None) -> Any:
    """The body as the instance's params (an empty body: null)."""
    if not body.strip():
        return None
    check_media_type(content_type)
    check_json(body)
    return json.loads(body)


def _refused(error: Any) -> TreadleError:
    code, message = str(error["code"]), str(error["message"])
    if code == SINGLETON:
        return Conflict(message, code=code, existing_id=error.get("existing_id"))
    if code == TooLarge.code:
        return TooLarge(message)
    return InvalidInput(message, code=code)


def _ids(request: Request) -> tuple[str, str]:
    return request.path_params["name"], request.path_params["hook"]
