"""``env.fetch``: tenant egress, performed by the trusted side under the tenant's policy.

A request is allowed when its host is listed in the policy's ``egress_allow`` (an exact host
name, or ``*.example.com`` for its subdomains). ``"*"`` allows every public host, but not
loopback, private, link-local or otherwise reserved addresses: those (the platform itself, its
database, cloud metadata services) are reachable only when listed by name. Redirects are not
followed, so a listed host cannot bounce a request elsewhere; bodies are capped and every
request has a timeout.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import httpx

from treadle.errors import InvalidInput, LimitExceeded, NonRetryableError, TreadleError

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
TIMEOUT_SECONDS = 30.0
MAX_RESPONSE_BYTES = 5 << 20
MAX_REQUEST_BYTES = 5 << 20


class EgressDenied(NonRetryableError):
    """The tenant's egress policy does not allow this request (retrying cannot help)."""

    code = "egress.denied"


def check_allowed(url: str, allow: list[str]) -> str:
    """Return the URL's host if the policy allows it, else raise :class:`EgressDenied`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"env.fetch needs an http:// or https:// URL, not {url!r}")
    host = parts.hostname.lower()
    if host in allow or any(a.startswith("*.") and host.endswith(a[1:]) for a in allow):
        return host
    if "*" in allow:
        if _public(host):
            return host
        raise EgressDenied(f"egress to {host} is not allowed: it is not a public address")
    raise EgressDenied(f"egress to {host} is not allowed by the tenant's egress_allow policy")


def _public(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return True  # let the request fail with its own clear error
    return all(ipaddress.ip_address(info[4][0]).is_global for info in infos)


def fetch(args: dict[str, Any], allow: list[str], client: httpx.Client) -> dict[str, Any]:
    """Perform one ``env.fetch`` call; the result is what the step body sees."""
    url, method = args.get("url"), str(args.get("method") or "GET").upper()
    if not isinstance(url, str):
        raise InvalidInput("env.fetch: url must be a string")
    if method not in METHODS:
        raise InvalidInput(f"env.fetch: method must be one of {', '.join(METHODS)}")
    check_allowed(url, allow)
    headers = args.get("headers") or {}
    body = args.get("body")
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise InvalidInput("env.fetch: headers must map strings to strings")
    content = body.encode() if isinstance(body, str) else None
    if body is not None and content is None:
        raise InvalidInput("env.fetch: body must be a string (use json.dumps for JSON)")
    if content is not None and len(content) > MAX_REQUEST_BYTES:
        raise LimitExceeded(f"env.fetch: the request body is over {MAX_REQUEST_BYTES} bytes")
    try:
        with client.stream(method, url, headers=headers, content=content) as reply:
            data = _read_capped(reply)
            return {
                "status": reply.status_code,
                "headers": dict(reply.headers),
                "text": data.decode(reply.encoding or "utf-8", errors="replace"),
            }
    except httpx.HTTPError as exc:
        raise TreadleError(
            f"env.fetch {method} {url} failed: {exc}", code="egress.failed"
        ) from None


def _read_capped(reply: httpx.Response) -> bytes:
    chunks, size = [], 0
    for chunk in reply.iter_bytes():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise LimitExceeded(f"env.fetch: the response is over {MAX_RESPONSE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def new_client() -> httpx.Client:
    return httpx.Client(timeout=TIMEOUT_SECONDS, follow_redirects=False, trust_env=False)
