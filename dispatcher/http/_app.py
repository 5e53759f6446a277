"""The Starlette application: every route of the API (docs/api.md) on one platform."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

import playground
from dispatcher import _metrics
from dispatcher._platform import Platform
from dispatcher.http._auth import Authenticate
from dispatcher.http._bulk import BulkApi
from dispatcher.http._errors import HANDLERS, DatabaseOutage
from dispatcher.http._guard import RequestGuard
from dispatcher.http._hooks import HookApi
from dispatcher.http._instances import InstanceApi
from dispatcher.http._lifecycle import LifecycleApi
from dispatcher.http._limits import BodyLimit
from dispatcher.http._links import LinkApi
from dispatcher.http._measure import MeasureRequests
from dispatcher.http._openapi import openapi_document
from dispatcher.http._routing import every_route
from dispatcher.http._schedules import ScheduleApi
from dispatcher.http._streams import StreamApi
from dispatcher.http._usage import UsageApi
from loader import WorkflowApi
from storage import reason
from tenants import AdminApi

_log = logging.getLogger("treadle")
_RETRY = {"Retry-After": "2"}


def create_app(platform: Platform) -> Starlette:
    """The HTTP API of ``platform``; its lifespan starts and stops the platform's engine.

    Call :func:`going_away` with it when the server begins to stop.
    """
    streams = StreamApi(platform.engine, platform.tenants, platform.settings)
    routes = api_routes(platform, streams)
    document = openapi_document()

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    routes.append(Route("/openapi.json", openapi, methods=["GET"]))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(platform.start)
        try:
            yield
        finally:
            await run_in_threadpool(platform.stop)

    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(MeasureRequests, metrics=platform.metrics, routes=routes),
            Middleware(DatabaseOutage),
            Middleware(BodyLimit, max_bytes=platform.settings.max_body_bytes),
            Middleware(Authenticate, tenants=platform.tenants),
            Middleware(RequestGuard),
        ],
        exception_handlers=HANDLERS,
        lifespan=lifespan,
    )
    app.state.streams = streams
    return app


def going_away(app: Starlette) -> None:
    """The server made by :func:`create_app` begins to stop: its live streams end now, each
    telling its client to connect again, rather than hold the process until they finish."""
    streams: StreamApi = app.state.streams
    streams.close_all()


def api_routes(platform: Platform, streams: StreamApi) -> list[BaseRoute]:
    """Every route but ``/openapi.json`` (which describes these): the platform's own, then
    every operation of the API's table, each served by its handler."""
    handlers = {
        **AdminApi(platform.tenants).handlers(),
        **WorkflowApi(platform.loader).handlers(),
        **InstanceApi(platform.engine, platform.loader, platform.tenants.policy).handlers(),
        **LifecycleApi(platform.engine, platform.loader).handlers(),
        **ScheduleApi(platform.engine, platform.loader).handlers(),
        **LinkApi(platform.engine, platform.tenants.policy, platform.settings).handlers(),
        **HookApi(
            platform.engine,
            platform.loader,
            platform.tenants.policy,
            platform.clock,
            platform.settings,
        ).handlers(),
        **BulkApi(platform.engine).handlers(),
        **streams.handlers(),
        **UsageApi(platform.engine, platform.tenants, platform.clock).handlers(),
    }
    return [
        Route("/healthz", _health(platform), methods=["GET"]),
        Route("/metrics", _metrics_route(platform), methods=["GET"]),
        *playground.routes(),
        *every_route(handlers),
    ]


def _health(platform: Platform) -> Any:
    def database_answers() -> bool:
        try:
            with platform.db.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as exc:
            # One line: a load balancer asks every few seconds for as long as an outage lasts.
            _log.warning("health check: the database does not answer (%s)", reason(exc))
            return False
        return True

    async def health(request: Request) -> Response:
        if platform.running and await run_in_threadpool(database_answers):
            # Which layers of the sandbox's second wall are up (docs/sandbox.md), as found at
            # start-up or at the zygote's latest restart: asking starts nothing.
            wall = platform.pool.wall_layers(start=False)
            return JSONResponse({"status": "ok", "sandbox_wall": wall})
        # As the API's own 503s: the same hint of when to ask again.
        return JSONResponse({"status": "unavailable"}, status_code=503, headers=_RETRY)

    return health


def _metrics_route(platform: Platform) -> Any:
    async def metrics(request: Request) -> Response:
        text = await run_in_threadpool(platform.metrics.render)
        return Response(text, media_type=_metrics.CONTENT_TYPE)

    return metrics
