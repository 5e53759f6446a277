"""Every HTTP request counted and timed, by the template of its route and its status code.

The outermost middleware, so that refusals (401, 413, 429) are counted as well. The route is
the template the router matched (``/v1/workflows/{name}/instances/{id}``), never the raw path,
so that the series stay bounded; a path no route matched is counted as ``unmatched``.
"""

from __future__ import annotations

import time

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dispatcher._metrics import PlatformMetrics


class MeasureRequests:
    def __init__(self, app: ASGIApp, metrics: PlatformMetrics, routes: list[BaseRoute]) -> None:
        self._app = app
        self._metrics = metrics
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500  # an exception that escapes everything is answered 500 by the server

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, sending)
        finally:
            route = self._template(scope)
            self._metrics.http_requests.labels(route, str(status)).inc()
            self._metrics.http_seconds.labels(route).observe(time.perf_counter() - began)

    def _template(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            # Refused before the router ran (authentication, limits): match it here.
            route = next((r for r in self._routes if r.matches(scope)[0] != Match.NONE), None)
        path = getattr(route, "path", None)  # a Route's or a Mount's template
        return path if isinstance(path, str) and path else "unmatched"
