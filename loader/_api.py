"""The workflow code API (``docs/api.md``, Workflows): upload, list, inspect and delete workflows.

The dispatcher authenticates the tenant before any of these run and leaves who it is in
``request.state.caller`` (with ``tenant_id`` and ``tenant_name``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from loader._loader import Loader
from loader._upload import Upload


class WorkflowApi:
    def __init__(self, loader: Loader) -> None:
        self._loader = loader

    def handlers(self) -> dict[str, Callable[[Request], Awaitable[Response]]]:
        """The handlers by operation (``treadle.client.OPERATIONS``: path and method)."""
        return {
            "list_workflows": self.list_workflows,
            "deploy": self.upload,
            "get_workflow": self.get_workflow,
            "delete_workflow": self.delete_workflow,
        }

    async def list_workflows(self, request: Request) -> Response:
        workflows = await run_in_threadpool(self._loader.workflows, _caller(request).tenant_id)
        return JSONResponse({"workflows": workflows})

    async def upload(self, request: Request) -> Response:
        upload = Upload.model_validate_json(await request.body())
        caller = _caller(request)
        # Not on the thread pool: the loader checks the code on threads of its own, and an
        # upload waiting for its turn holds none.
        name = request.path_params["name"]
        stored = await self._loader.upload(caller.tenant_id, caller.tenant_name, name, upload)
        return JSONResponse(stored, status_code=201)

    async def get_workflow(self, request: Request) -> Response:
        tenant_id, name = _caller(request).tenant_id, request.path_params["name"]
        return JSONResponse(await run_in_threadpool(self._loader.workflow, tenant_id, name))

    async def delete_workflow(self, request: Request) -> Response:
        tenant_id, name = _caller(request).tenant_id, request.path_params["name"]
        await run_in_threadpool(self._loader.delete, tenant_id, name)
        return Response(status_code=204)


def _caller(request: Request) -> Any:
    return request.state.caller
