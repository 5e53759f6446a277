"""The routes of the API, built from the table of its operations (``treadle.client.OPERATIONS``).

Each API class names its handlers by operation (``handlers()``); the path and the method come
from the table only. An operation without a handler, or a handler of no operation, stops the
server at start-up: the document would describe a route that is not there, or miss one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from treadle.client import OPERATIONS

Endpoint = Callable[[Request], Awaitable[Response]]
Handlers = Mapping[str, Endpoint]


def routes(handlers: Handlers) -> list[Route]:
    """The routes of the operations that ``handlers`` serve, in the table's order."""
    unknown = set(handlers) - {operation.name for operation in OPERATIONS}
    if unknown:
        raise LookupError(f"handlers of no operation: {', '.join(sorted(unknown))}")
    return [
        Route(operation.path, handlers[operation.name], methods=[operation.method])
        for operation in OPERATIONS
        if operation.name in handlers
    ]


def every_route(handlers: Handlers) -> list[Route]:
    """The routes of every operation of the table; each must have its handler."""
    missing = [operation.name for operation in OPERATIONS if operation.name not in handlers]
    if missing:
        raise LookupError(f"operations without a handler: {', '.join(missing)}")
    return routes(handlers)
