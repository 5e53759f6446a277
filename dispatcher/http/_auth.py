"""Who is calling: the admin (``/v1/admin/...`` and ``/metrics``, whose counts are the whole
platform's) or a tenant (the rest of ``/v1/...``).

Checked before routing, so an unauthenticated caller learns nothing about which paths exist.
A webhook's delivery (``POST /v1/hooks/{hook_id}``) carries no credential: its route checks
the signature of its body instead (``dispatcher.http._hooks``).
An approval link (``/v1/links/{token}``, ``GET`` and ``POST``) carries none either: its token
is the credential (``dispatcher.http._links``).
A tenant caller is left in ``request.state.caller`` for the routes, an admin one (an
:class:`~tenants.Actor`: which admin token, from which address) in ``request.state.admin``
for the audit log. Failed admin sign-ins are counted in the audit log too (aggregated).
"""

from __future__ import annotations

import re

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from dispatcher.http._errors import error_response
from dispatcher.http._fairness import ReadShares, counted
from engine import logging_for
from tenants import Actor, TenantStore
from treadle.errors import TreadleError, Unauthorized

_ADMIN = "/v1/admin"
_API = "/v1/"
_ADMIN_ONLY = (_ADMIN, "/metrics")  # these paths exactly, and those under /v1/admin/
_SIGNED = re.compile(r"/v1/hooks/[^/]+")  # a webhook's delivery: signed, not authenticated
# An approval link (``dispatcher.http._links``): its token is the credential, checked by its route.
_LINK = re.compile(r"/v1/links/[A-Za-z0-9_-]{1,64}")


class Authenticate:
    def __init__(self, app: ASGIApp, tenants: TenantStore) -> None:
        self._app = app
        self._tenants = tenants
        self._reads = ReadShares()  # see dispatcher.http._fairness

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        admin = path in _ADMIN_ONLY or path.startswith(_ADMIN + "/")
        public = scope.get("method") == "POST" and _SIGNED.fullmatch(path) is not None
        public = public or _LINK.fullmatch(path) is not None
        if scope["type"] != "http" or not (admin or path.startswith(_API)):
            await self._app(scope, receive, send)
            return
        client = scope["client"][0] if scope.get("client") else None
        if public:
            # No tenant is known before the route reads the hook or the link: the turns are
            # the calling address's, so one anonymous client never holds the whole pool.
            async with self._reads.turn(("anonymous", client)):
                await self._app(scope, receive, send)
            return
        try:
            token = bearer_token(Headers(scope=scope))
            if admin:
                actor = await run_in_threadpool(self._tenants.verify_admin, token)
                scope.setdefault("state", {})["admin"] = Actor(actor, client)
            else:
                caller = await run_in_threadpool(self._tenants.authenticate, token)
                scope.setdefault("state", {})["caller"] = caller
        except TreadleError as exc:
            if admin and isinstance(exc, Unauthorized):
                await run_in_threadpool(self._tenants.admin_refused, client)
            await error_response(exc)(scope, receive, send)
            return
        if admin:
            await self._app(scope, receive, send)
            return
        with logging_for(tenant=caller.tenant_name):  # the request's log lines name it
            if not counted(scope["method"], path):
                await self._app(scope, receive, send)
                return
            async with self._reads.turn(caller.tenant_id):
                await self._app(scope, receive, send)


def bearer_token(headers: Headers) -> str:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send the credential as 'Authorization: Bearer <token>'")
    return token.strip()
