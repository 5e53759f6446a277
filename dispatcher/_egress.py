"""``env.fetch``: tenant egress, performed by the trusted side under the tenant's policy.

A request is allowed when its host is listed in the policy's ``egress_allow`` (an exact host
name, or ``*.example.com`` for its subdomains). ``"*"`` allows every public host, but not
loopback, private, link-local or otherwise reserved addresses: those (the platform itself, its
database, cloud metadata services) are reachable only when listed by name. That includes an
IPv6 address that reaches one of them through the IPv4 address it embeds (mapped, compatible,
translated, 6to4, NAT64) or a tunnel (Teredo), and deprecated site-local addresses. A host name
with an ``xn--`` label that is not valid IDNA is refused as invalid. Redirects are not followed,
so a listed host cannot bounce a request elsewhere; bodies are capped.

A request must be over by its :class:`~sandbox.Deadline` (the platform's, for the whole call:
name lookup, connect and every read): httpx's timeouts are per operation, so a server that
trickles a byte every few seconds would otherwise hold the request for ever. The request's
socket is registered with the deadline, which shuts it down when the time is up or the step
ends, and the read in progress fails at once.

The host name is resolved once per request, and the connection goes to the address that was
checked (DNS rebinding: a second lookup by the HTTP client could answer 127.0.0.1). The URL
sent is the pinned address, with the ``Host`` header and, for TLS, the SNI server name and the
certificate check kept on the host name. Connections are not kept alive: a pooled connection
is keyed by address only and could otherwise carry another host's request.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

import httpx
import idna

from sandbox import Deadline
from treadle.errors import InvalidInput, LimitExceeded, NonRetryableError, TreadleError

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
TIMEOUT_SECONDS = 30.0
MAX_RESPONSE_BYTES = 5 << 20
MAX_REQUEST_BYTES = 5 << 20
# The well-known NAT64 prefix (RFC 6052): 64:ff9b::a.b.c.d reaches the IPv4 address a.b.c.d.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# IPv6 blocks that are never a public destination, whatever ``is_global`` says of them on this
# Python: some embed an IPv4 address a host may still route to, the others are not global.
_NEVER_PUBLIC = tuple(
    ipaddress.ip_network(block)
    for block in (
        "::/96",  # IPv4-compatible, ::a.b.c.d (RFC 4291, deprecated): ::127.0.0.1
        "::ffff:0:0:0/96",  # IPv4-translated, ::ffff:0:a.b.c.d (RFC 2765): ::ffff:0:7f00:1
        "fec0::/10",  # site-local (RFC 3879, deprecated)
        "2001::/32",  # Teredo: a tunnel to whatever address it embeds
        "64:ff9b:1::/48",  # NAT64 for local use (RFC 8215)
    )
)

Resolver = Callable[[str, int], list[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class FetchResult(TypedDict):
    """What an ``env.fetch`` call returns to the step body."""

    status: int
    headers: dict[str, str]
    text: str


class EgressDenied(NonRetryableError):
    """The tenant's egress policy does not allow this request (retrying cannot help)."""

    code = "egress.denied"


class FetchTimeout(TreadleError):
    """The request did not finish within the platform's time for one host call."""

    code = "egress.timeout"


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, as the operating system resolves them."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class Destination:
    """Where a request may go: ``host`` (lower case), ``port``, and whether only public
    addresses are acceptable (the host is allowed by ``"*"``, not by name)."""

    url: httpx.URL
    host: str
    port: int
    public_only: bool


def destination(url: str, allow: list[str]) -> Destination:
    """Apply the policy to the URL's host name; raise :class:`EgressDenied` if not allowed."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise InvalidInput(f"env.fetch needs an http:// or https:// URL, not {url!r}") from exc
    host = parsed.raw_host.decode("ascii").lower().rstrip(".")  # IDNA-encoded, as policies are
    _check_labels(host)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidInput(f"env.fetch needs an http:// or https:// URL, not {url!r}")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    if host in allow or any(a.startswith("*.") and host.endswith(a[1:]) for a in allow):
        return Destination(parsed, host, port, public_only=False)
    if "*" in allow:
        return Destination(parsed, host, port, public_only=True)
    raise EgressDenied(f"egress to {host} is not allowed by the tenant's egress_allow policy")


def _check_labels(host: str) -> None:
    """Refuse a host with an ``xn--`` label that is not valid IDNA: nothing could resolve it,
    and httpx and the resolver would each fail on it in a way of their own."""
    try:
        for label in host.split("."):
            if label.startswith("xn--"):
                idna.decode(label)
    except (idna.IDNAError, UnicodeError):
        raise InvalidInput(f"env.fetch: invalid host name {host!r}") from None


def pin(target: Destination, resolve: Resolver = system_resolver) -> str:
    """Resolve the host once and return the address to connect to.

    Under ``"*"`` every address of the answer must be public: one private address in it
    means the name points inside.
    """
    try:
        answer = [ipaddress.ip_address(a.split("%")[0]) for a in resolve(target.host, target.port)]
    except (OSError, UnicodeError, ValueError) as exc:
        raise TreadleError(
            f"env.fetch: cannot resolve {target.host}: {exc}", code="egress.failed"
        ) from None
    if not answer:
        raise TreadleError(f"env.fetch: {target.host} has no address", code="egress.failed")
    if target.public_only and not all(_public(address) for address in answer):
        raise EgressDenied(f"egress to {target.host} is not allowed: it is not a public address")
    return str(answer[0])


def _public(address: IPAddress) -> bool:
    """Globally reachable, also through the IPv4 address an IPv6 one embeds."""
    if isinstance(address, ipaddress.IPv6Address):
        if any(address in block for block in _NEVER_PUBLIC):
            return False
        embedded = address.ipv4_mapped or address.sixtofour
        if address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            # Reachable as what it embeds. Python 3.13 (and 3.11's and 3.12's security releases
            # since 2024) calls all of 6to4's 2002::/16 not global, older ones all of it global.
            return _public(embedded)
    return address.is_global and not address.is_multicast


def check_allowed(url: str, allow: list[str], resolve: Resolver = system_resolver) -> str:
    """Return the URL's host if the policy allows it, else raise :class:`EgressDenied`."""
    target = destination(url, allow)
    if target.public_only:
        pin(target, resolve)
    return target.host


def fetch(
    args: Mapping[str, object],
    allow: list[str],
    client: httpx.Client,
    resolve: Resolver = system_resolver,
    *,
    deadline: Deadline,
    metered: Callable[[int], None] | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> FetchResult:
    """Perform one ``env.fetch`` call, over by ``deadline``; the result is what the step
    body sees. A request that went out is passed to ``metered`` with its bytes (the request
    body and what was read of the response's), whether it succeeded or not. ``extra_headers``
    (the platform's, e.g. ``traceparent``) replace the tenant's of the same names."""
    url, method = args.get("url"), str(args.get("method") or "GET").upper()
    if not isinstance(url, str):
        raise InvalidInput("env.fetch: url must be a string")
    if method not in METHODS:
        raise InvalidInput(f"env.fetch: method must be one of {', '.join(METHODS)}")
    target = destination(url, allow)
    headers, content = _headers(args.get("headers")), _content(args.get("body"))
    for name, value in (extra_headers or {}).items():
        headers = {k: v for k, v in headers.items() if k.lower() != name.lower()}
        headers[name] = value
    address = _before(deadline, lambda: pin(target, resolve), f"env.fetch {method} {url}")
    headers["Host"] = target.url.netloc.decode("ascii")
    connection = _Connection()
    deadline.on_expiry(connection.close)
    extensions: dict[str, object] = {"trace": connection.trace}
    if target.url.scheme == "https":
        extensions["sni_hostname"] = target.host
    pinned = target.url.copy_with(host=address)
    sent = len(content or b"")
    received = 0
    try:
        with client.stream(
            method,
            pinned,
            headers=headers,
            content=content,
            extensions=extensions,
            timeout=_timeout(client, deadline),
        ) as reply:
            data = _read_capped(reply)
            received = len(data)
            return {
                "status": reply.status_code,
                "headers": dict(reply.headers),
                "text": data.decode(reply.encoding or "utf-8", errors="replace"),
            }
    except httpx.HTTPError as exc:
        if deadline.expired or deadline.remaining() <= 0.01:
            raise _too_slow(deadline, f"env.fetch {method} {url}") from None
        raise TreadleError(
            f"env.fetch {method} {url} failed: {exc}", code="egress.failed"
        ) from None
    finally:
        if metered is not None:
            metered(sent + received)


def _timeout(client: httpx.Client, deadline: Deadline) -> httpx.Timeout:
    """The client's timeout for connecting; for the rest, what is left of the deadline (a
    backstop: the deadline itself shuts the socket down when it passes)."""
    left = max(deadline.remaining(), 0.001)
    return httpx.Timeout(left, connect=min(client.timeout.connect or left, left))


class _Connection:
    """The socket of a request in flight, as httpcore's trace hands it over; :meth:`close`
    shuts it down from another thread, which ends the read in progress."""

    def __init__(self) -> None:
        self._stream: Any = None
        self._closed = False

    def trace(self, event: str, info: Mapping[str, object]) -> None:
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            self._stream = info["return_value"]
            if self._closed:
                self.close()

    def close(self) -> None:
        self._closed = True
        stream = self._stream
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except (OSError, ValueError):
                pass  # closed already


def _before(deadline: Deadline, work: Callable[[], str], what: str) -> str:
    """``work()`` (a name lookup, which cannot be interrupted) on a thread of its own, waited
    for until the deadline: a stalled resolver then costs a thread, not the step."""
    done = threading.Event()
    value: list[str] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            value.append(work())
        except BaseException as exc:
            error.append(exc)
        finally:
            done.set()

    deadline.on_expiry(done.set)
    threading.Thread(target=run, name="treadle-egress-resolve", daemon=True).start()
    done.wait(deadline.remaining())
    if error:
        raise error[0]
    if not value:
        raise _too_slow(deadline, what)
    return value[0]


def _too_slow(deadline: Deadline, what: str) -> TreadleError:
    if deadline.expired == "stopped":
        return TreadleError(f"{what} was cut short: its step ended", code="egress.failed")
    return FetchTimeout(f"{what} did not finish within {deadline.seconds:.0f} s")


def _headers(headers: Any) -> dict[str, str]:
    """The tenant's headers, without a ``Host`` of its own: the URL says where it goes."""
    headers = headers or {}
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise InvalidInput("env.fetch: headers must map strings to strings")
    return {k: v for k, v in headers.items() if k.lower() != "host"}


def _content(body: Any) -> bytes | None:
    content = body.encode() if isinstance(body, str) else None
    if body is not None and content is None:
        raise InvalidInput("env.fetch: body must be a string (use json.dumps for JSON)")
    if content is not None and len(content) > MAX_REQUEST_BYTES:
        raise LimitExceeded(f"env.fetch: the request body is over {MAX_REQUEST_BYTES} bytes")
    return content


def _read_capped(reply: httpx.Response) -> bytes:
    chunks, size = [], 0
    for chunk in reply.iter_bytes():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise LimitExceeded(f"env.fetch: the response is over {MAX_RESPONSE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def new_client(verify: Any = True, timeout: float = TIMEOUT_SECONDS) -> httpx.Client:
    """The HTTP client of egress: no redirects, no proxies from the environment, no keep-alive
    (see the module docstring); ``verify`` as httpx takes it (tests pass their own CA)."""
    return httpx.Client(
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        verify=verify,
        limits=httpx.Limits(max_keepalive_connections=0),
    )
