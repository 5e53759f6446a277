"""The playground page, served from ``playground/static``."""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route


def page_html() -> str:
    return (resources.files("playground") / "static" / "index.html").read_text("utf-8")


def routes() -> list[Route]:
    """``GET /playground``: a page saying the playground is coming (it is a later feature)."""
    html = page_html()

    async def page(request: Request) -> Response:
        return HTMLResponse(html)

    return [Route("/playground", page, methods=["GET"])]
