"""The playground page, the operator console and their static assets, from ``playground/static``.

Asset URLs carry a build id, a hash of every static file, so browsers may keep them for good:
changed files mean a new id, and the page, which names the id, is revalidated on every visit.
The page is a client of the public HTTP API like any other; it gets the tenant's API key from
the user (or from the ``#key=`` fragment printed by ``treadle serve``), never from the server.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import PurePosixPath

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from treadle.errors import NotFound

PAGE = "index.html"
CONSOLE = "console.html"  # the operator console, /console
_ASSETS_PATH = "/playground/assets"
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
_FOREVER = "public, max-age=31536000, immutable"
# Scripts and styles only from here; CodeMirror writes <style> elements, hence 'unsafe-inline'
# for styles (never for scripts). No frames, no other origins: the key stays on this page.
_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": _POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


@dataclass(frozen=True)
class Asset:
    """A static file as served: its bytes, gzipped once, and its content type."""

    body: bytes
    gzipped: bytes
    media_type: str


def assets() -> dict[str, Asset]:
    """Every static file but the page, by name."""
    found = {}
    for item in (resources.files("playground") / "static").iterdir():
        media_type = _TYPES.get(PurePosixPath(item.name).suffix)
        if item.is_file() and item.name not in (PAGE, CONSOLE) and media_type is not None:
            body = item.read_bytes()
            found[item.name] = Asset(body, gzip.compress(body, mtime=0), media_type)
    return found


def build_id(files: dict[str, Asset]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{len(files[name].body)}\0".encode())
        digest.update(files[name].body)
    return digest.hexdigest()[:16]


def page_html(assets_url: str = _ASSETS_PATH, name: str = PAGE) -> str:
    """The page ``name``, naming its assets under ``assets_url``."""
    text = (resources.files("playground") / "static" / name).read_text("utf-8")
    return text.replace("{{assets}}", assets_url)


def routes() -> list[BaseRoute]:
    """``GET /playground``, the operator console ``GET /console``, and their assets,
    ``GET /playground/assets/<build id>/<name>``; ``GET /`` redirects to the playground."""
    files = assets()
    build = build_id(files)
    html = page_html(f"{_ASSETS_PATH}/{build}")
    console_html = page_html(f"{_ASSETS_PATH}/{build}", CONSOLE)

    async def page(request: Request) -> Response:
        return HTMLResponse(html, headers=_PAGE_HEADERS)

    async def console(request: Request) -> Response:
        # The page holds nothing secret: the data comes from the admin API, with the token.
        return HTMLResponse(console_html, headers=_PAGE_HEADERS)

    async def asset(request: Request) -> Response:
        found = files.get(request.path_params["name"])
        if found is None or request.path_params["build"] != build:
            raise NotFound("no such playground file (reload the page)")
        headers = {"Cache-Control": _FOREVER, "X-Content-Type-Options": "nosniff"}
        headers["Vary"] = "Accept-Encoding"
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(found.gzipped, media_type=found.media_type, headers=headers)
        return Response(found.body, media_type=found.media_type, headers=headers)

    async def home(request: Request) -> Response:
        # Temporary (307), not permanent: browsers would keep a 308 for good.
        return RedirectResponse("/playground", status_code=307)

    return [
        Route("/", home, methods=["GET"]),
        Route("/playground", page, methods=["GET"]),
        Route("/console", console, methods=["GET"]),
        Mount(_ASSETS_PATH, routes=[Route("/{build}/{name}", asset, methods=["GET"])]),
    ]
