"""Approval links over HTTP (docs/approval-links.md).

``POST .../instances/{id}/events/{type}/links`` mints one for the calling tenant's instance.
The link itself, ``/v1/links/{token}``, needs no API key (``dispatcher.http._auth``): its
token is the credential. A ``POST`` of JSON sends the event with that payload; a ``GET``
shows a browser what it approves, with buttons that ``POST`` ``{"approved": true}`` or
``{"approved": false}``. Once used up, out of time, or its instance ended: 410 ``link.expired``
(for a browser, a page that says so).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dispatcher._platform import link_answer
from dispatcher._settings import Settings
from dispatcher.http._instances import caller_of, ids_of, storage_bytes
from dispatcher.http._linkpage import expired_page, link_page
from dispatcher.http._routing import Handlers
from engine import MAX_LINK_TTL, MAX_LINK_USES, Engine
from tenants import JsonInt, Policy
from treadle.errors import LinkExpired
from treadle.runtime import parse_duration

_PAYLOAD: TypeAdapter[Any] = TypeAdapter(Any)
_LINK = "/v1/links/"
_TOKEN = re.compile(re.escape(_LINK) + r"[^/?#\s]*")


class LinkBody(BaseModel):
    """The body of ``POST .../events/{type}/links``: how long the link works (``ttl``, a
    duration: seconds or text like ``"2 days"``) and how many sends it takes (``uses``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    ttl: float | str = Field(
        default="7 days",
        description=f"at most {MAX_LINK_TTL / 86400:g} days; default 7 days",
        json_schema_extra={
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_LINK_TTL},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*[a-zA-Z]+\s*$"},
            ]
        },
    )
    uses: JsonInt = Field(default=1, ge=1, le=MAX_LINK_USES)

    def seconds(self) -> float:
        return parse_duration(self.ttl, what="ttl")


class HideTokens(logging.Filter):
    """Keeps a link's token out of the access log: its path is logged as ``/v1/links/…``."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(a, str) and _LINK in a for a in args):
            record.args = tuple(_hidden(a) if isinstance(a, str) else a for a in args)
        return True


def _hidden(text: str) -> str:
    return _TOKEN.sub(_LINK + "\u2026", text)


class LinkApi:
    def __init__(
        self, engine: Engine, policy_of: Callable[[int], Policy], settings: Settings
    ) -> None:
        self._links = engine.links
        self._policy_of = policy_of
        self._settings = settings
        access = logging.getLogger("uvicorn.access")
        if not any(isinstance(f, HideTokens) for f in access.filters):
            access.addFilter(HideTokens())

    def handlers(self) -> Handlers:
        return {"create_link": self.create, "link_page": self.page, "use_link": self.use}

    async def create(self, request: Request) -> Response:
        raw = await request.body()
        body = LinkBody.model_validate_json(raw) if raw.strip() else LinkBody()
        tenant_id, (name, instance_id) = caller_of(request).tenant_id, ids_of(request)
        event_type, ttl = request.path_params["type"], body.seconds()
        minted = await run_in_threadpool(
            self._links.mint, tenant_id, name, instance_id, event_type, ttl, body.uses
        )
        return JSONResponse(link_answer(self._base(request), minted), status_code=201)

    async def page(self, request: Request) -> Response:
        try:
            target = await run_in_threadpool(self._links.target, request.path_params["token"])
        except LinkExpired:
            return _html(expired_page(), 410)
        nonce = secrets.token_urlsafe(16)
        return _html(link_page(target, nonce), 200, nonce)

    async def use(self, request: Request) -> Response:
        raw = await request.body()
        payload = _PAYLOAD.validate_json(raw) if raw.strip() else None
        await run_in_threadpool(self._use, request.path_params["token"], payload)
        return JSONResponse({}, status_code=202)

    def _use(self, token: str, payload: Any) -> None:
        target = self._links.target(token)
        policy = self._policy_of(target.tenant_id)
        self._links.use(
            token,
            target,
            payload,
            max_bytes=policy.max_step_result_bytes,
            max_storage_bytes=storage_bytes(policy),
        )

    def _base(self, request: Request) -> str:
        if self._settings.public_url:
            return self._settings.link_base()
        return str(request.base_url).rstrip("/")


def _html(text: str, status: int, nonce: str = "") -> Response:
    # The token is in the page's own URL: no referrer, no caching, no framing, and nothing
    # runs but the page's own script.
    headers = {
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; "
            "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
        ),
    }
    return Response(text, status_code=status, media_type="text/html", headers=headers)
