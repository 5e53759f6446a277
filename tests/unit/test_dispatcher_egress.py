from __future__ import annotations

import contextlib
import http.server
import socket
import ssl
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from dispatcher._egress import EgressDenied, check_allowed, fetch, new_client
from sandbox import Deadline
from sandbox._deadline import Watchdog
from treadle.errors import InvalidInput, TreadleError


def test_listed_hosts_and_subdomain_wildcards_are_allowed() -> None:
    allow = ["api.example.com", "*.inventory.test", "127.0.0.1"]
    assert check_allowed("https://api.example.com/v1", allow) == "api.example.com"
    assert check_allowed("http://eu.inventory.test/x", allow) == "eu.inventory.test"
    assert check_allowed("http://127.0.0.1:8080/", allow) == "127.0.0.1"


@pytest.mark.parametrize(
    "url",
    ["https://evil.example.com/", "https://inventory.test.evil/", "http://localhost:8787/"],
)
def test_everything_else_is_denied(url: str) -> None:
    with pytest.raises(EgressDenied):
        check_allowed(url, ["api.example.com", "*.inventory.test"])


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:5432/", "http://10.0.0.1/", "http://169.254.169.254/", "http://[::1]/"],
)
def test_a_star_policy_still_keeps_internal_addresses_out(url: str) -> None:
    with pytest.raises(EgressDenied):
        check_allowed(url, ["*"])


def test_only_http_urls() -> None:
    for url in ("file:///etc/passwd", "ftp://example.com/", "not a url"):
        with pytest.raises(InvalidInput):
            check_allowed(url, ["*"])


# -- resolving once, and connecting to the address that was checked ----------------------------

PUBLIC = "93.184.216.34"


class Server:
    """A loopback HTTP(S) server that records the requests it gets and the SNI names it saw."""

    def __init__(self, status: int = 200, location: str = "", tls: ssl.SSLContext | None = None):
        self.requests: list[dict[str, str]] = []
        self.server_names: list[str | None] = []
        seen = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append({"path": self.path, "host": self.headers.get("Host", "")})
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self._http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            tls.sni_callback = lambda sock, name, context: self.server_names.append(name)
            self._http.socket = tls.wrap_socket(self._http.socket, server_side=True)
        self.port = self._http.server_address[1]
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()


class Answers:
    """A resolver that gives its answers in turn (the last one from then on)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def _fetch(url: str, allow: list[str], resolve: Answers, client: httpx.Client,
           headers: dict[str, str] | None = None) -> dict[str, object]:  # fmt: skip
    deadline = Deadline(time.monotonic() + 30)
    return fetch({"url": url, "headers": headers}, allow, client, resolve, deadline=deadline)


def test_a_rebinding_name_does_not_reach_a_loopback_server() -> None:
    with Server() as loopback, new_client(timeout=1.0) as client:
        rebinding = Answers([PUBLIC], ["127.0.0.1"])
        url = f"http://rebind.example:{loopback.port}/admin"
        with pytest.raises(TreadleError) as caught:  # the public address does not answer here
            _fetch(url, ["*"], rebinding, client)
        assert caught.value.code == "egress.failed"
        assert rebinding.asked == [("rebind.example", loopback.port)]  # resolved once
        assert loopback.requests == []


def test_the_request_goes_to_the_checked_address_with_the_host_kept() -> None:
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, text="hi")

    with httpx.Client(transport=httpx.MockTransport(record)) as client:
        rebinding = Answers([PUBLIC], ["127.0.0.1"])
        reply = _fetch("https://Rebind.Example/x?y=1", ["*"], rebinding, client, {"HOST": "evil"})
    assert reply["status"] == 200 and reply["text"] == "hi"
    (request,) = sent
    assert str(request.url) == f"https://{PUBLIC}/x?y=1"
    assert request.headers.get_list("host") == ["rebind.example"]
    assert request.extensions["sni_hostname"] == "rebind.example"


def test_a_host_listed_by_name_is_reached_at_its_resolved_address() -> None:
    with Server() as server, new_client() as client:
        resolve = Answers(["127.0.0.1"])
        reply = _fetch(f"http://svc.internal:{server.port}/p", ["svc.internal"], resolve, client,
                       {"Host": "admin.internal"})  # fmt: skip
    assert reply["status"] == 200
    assert server.requests == [{"path": "/p", "host": f"svc.internal:{server.port}"}]


def test_tls_keeps_the_server_name_and_checks_the_certificate_for_it() -> None:
    import trustme

    authority = trustme.CA()
    trusted = ssl.create_default_context()
    authority.configure_trust(trusted)
    for name, works in (("pinned.test", True), ("other.test", False)):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        authority.issue_cert(name).configure_cert(context)
        with Server(tls=context) as server, new_client(verify=trusted) as client:
            url = f"https://pinned.test:{server.port}/"
            if works:
                reply = _fetch(url, ["pinned.test"], Answers(["127.0.0.1"]), client)
                assert reply["status"] == 200
                assert server.requests == [{"path": "/", "host": f"pinned.test:{server.port}"}]
            else:  # a certificate for another name: refused, the request never sent
                with pytest.raises(TreadleError, match="CERTIFICATE_VERIFY_FAILED"):
                    _fetch(url, ["pinned.test"], Answers(["127.0.0.1"]), client)
                assert server.requests == []
            assert server.server_names == ["pinned.test"]


def test_redirects_are_not_followed() -> None:
    with Server() as inside:
        with Server(302, f"http://127.0.0.1:{inside.port}/secret") as bouncer:
            with new_client() as client:
                url = f"http://bouncer.test:{bouncer.port}/"
                reply = _fetch(url, ["bouncer.test"], Answers(["127.0.0.1"]), client)
        assert reply["status"] == 302
        assert inside.requests == []


@pytest.mark.parametrize(
    "answer",
    [[PUBLIC, "127.0.0.1"], ["10.1.2.3"], ["::ffff:127.0.0.1"], ["fe80::1%eth0"], []],
    ids=["one private address among public ones", "private", "mapped", "scoped", "none"],
)
def test_under_star_any_internal_address_in_the_answer_denies(answer: list[str]) -> None:
    with new_client() as client, pytest.raises(TreadleError) as caught:
        _fetch("http://name.example/", ["*"], Answers(answer), client)
    assert caught.value.code == ("egress.failed" if not answer else "egress.denied")


def test_an_unresolvable_host_is_an_error_not_a_pass() -> None:
    def fails(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(TreadleError) as caught:
        check_allowed("http://nowhere.example/", ["*"], fails)
    assert caught.value.code == "egress.failed"


@pytest.mark.parametrize(
    "host",
    [
        "0x7f000001", "2130706433", "0177.0.0.1", "127.1", "0", "0.0.0.0", "localhost",
        "LOCALHOST.", "[::1]", "[0:0:0:0:0:0:0:1]", "[::]", "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]", "[64:ff9b::7f00:1]", "[2002:7f00:1::]", "169.254.169.254",
        "0xa9fea9fe", "2852039166", "0251.0376.0251.0376", "[::ffff:169.254.169.254]",
        "[fd00:ec2::254]", "100.100.100.200", "[fe80::1]", "192.168.0.1", "172.16.0.1",
        "100.64.0.1", "224.0.0.1",
    ],
)  # fmt: skip
def test_loopback_and_metadata_addresses_are_denied_however_spelled(host: str) -> None:
    # httpx refuses some spellings (dotted octal) as URLs outright: refused all the same.
    with pytest.raises((EgressDenied, InvalidInput)):
        check_allowed(f"http://{host}:8787/", ["*"])


@pytest.mark.parametrize(
    "address",
    [
        "::127.0.0.1",  # IPv4-compatible (deprecated) loopback
        "::a9fe:a9fe",  # IPv4-compatible metadata address
        "::ffff:0:7f00:1",  # IPv4-translated (RFC 2765) loopback
        "::ffff:0:a00:1",  # IPv4-translated 10.0.0.1
        "fec0::1",  # site-local (deprecated)
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "2002:a9fe:a9fe::",  # 6to4 of the metadata address
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "2001:0:5db8:d822::1",  # Teredo with a public server address
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of the metadata address
        "64:ff9b:1::5db8:d822",  # NAT64 for local use (RFC 8215)
    ],
)
def test_ipv6_forms_of_internal_addresses_are_not_public(address: str) -> None:
    with pytest.raises(EgressDenied):
        check_allowed(f"http://[{address}]:8787/", ["*"])
    with pytest.raises(EgressDenied):  # and as a name's answer
        check_allowed("http://name.example/", ["*"], Answers([address]))


@pytest.mark.parametrize(
    "address", ["2606:4700::1111", "2002:5db8:d822::1", "64:ff9b::5db8:d822", PUBLIC]
)
def test_public_addresses_still_pass_under_star(address: str) -> None:
    assert check_allowed("http://name.example/", ["*"], Answers([address])) == "name.example"


@pytest.mark.parametrize(
    "host", ["xn--a", "xn--zz-.com", "xn--ls8h.la", "xn--", "xn--55555555.com", "a.xn--abc-.x"]
)
def test_an_invalid_international_name_is_a_clear_refusal(host: str) -> None:
    for allow in (["*"], [host]):
        with pytest.raises(InvalidInput) as caught:
            check_allowed(f"https://{host}/", allow, Answers([PUBLIC]))
        assert caught.value.message == f"env.fetch: invalid host name {host!r}"


def test_international_names_are_matched_and_resolved_in_their_ascii_form() -> None:
    resolve = Answers([PUBLIC])
    assert check_allowed("https://bücher.example/", ["xn--bcher-kva.example"]) == (
        "xn--bcher-kva.example"
    )
    assert check_allowed("https://Bücher.example./", ["*"], resolve) == "xn--bcher-kva.example"
    assert resolve.asked == [("xn--bcher-kva.example", 443)]


# -- the platform's deadline, whatever the server does ------------------------------------------


class Trickle:
    """A server that answers every connection one byte at a time, ``every`` seconds apart:
    the head (``head_too``) or only the body; each read of the client returns in time."""

    def __init__(
        self, *, head_too: bool = False, every: float = 0.2, tls: ssl.SSLContext | None = None
    ) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        if tls is not None:
            self._listener = tls.wrap_socket(self._listener, server_side=True)
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._head_too, self._every = head_too, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
                conn.settimeout(5)
            except OSError:  # no one yet, a TLS handshake that failed, or closed
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
        with conn:
            try:
                conn.recv(65536)
                if not self._head_too:
                    conn.sendall(head)
                for byte in (head if self._head_too else b"") + b"x" * 100000:
                    if self._stop.wait(self._every):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                return

    def __enter__(self) -> Trickle:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._listener.close()  # after the thread: it must not accept on a closed socket


@contextlib.contextmanager
def _watched(seconds: float) -> Iterator[Deadline]:
    """A deadline ``seconds`` from now, enforced as the sandbox's host calls are."""
    watchdog, deadline = Watchdog(), Deadline(time.monotonic() + seconds)
    watchdog.watch(deadline)
    try:
        yield deadline
    finally:
        watchdog.close()


def _timed_fetch(url: str, seconds: float) -> tuple[float, TreadleError]:
    started = time.monotonic()
    with _watched(seconds) as deadline, new_client() as client:
        with pytest.raises(TreadleError) as caught:
            fetch({"url": url}, ["slow.test"], client, Answers(["127.0.0.1"]), deadline=deadline)
    return time.monotonic() - started, caught.value


@pytest.mark.parametrize("head_too", [False, True], ids=["body", "head"])
def test_a_trickling_server_cannot_outlast_the_deadline(head_too: bool) -> None:
    with Trickle(head_too=head_too) as server:
        took, error = _timed_fetch(f"http://slow.test:{server.port}/", 1.0)
    assert error.code == "egress.timeout" and type(error).__name__ == "FetchTimeout"
    assert "did not finish within 1 s" in error.message
    assert 0.9 < took < 2.0


def test_a_request_is_cut_short_at_once_when_its_step_ends() -> None:
    with Trickle() as server, _watched(30) as deadline, new_client() as client:
        threading.Timer(0.5, deadline.expire, args=("stopped",)).start()
        started = time.monotonic()
        with pytest.raises(TreadleError) as caught:
            fetch({"url": f"http://slow.test:{server.port}/"}, ["slow.test"], client,
                  Answers(["127.0.0.1"]), deadline=deadline)  # fmt: skip
        took, error = time.monotonic() - started, caught.value
    assert error.code == "egress.failed" and "cut short" in error.message
    assert took < 1.5


def test_tls_reads_are_cut_too() -> None:
    import trustme

    authority = trustme.CA()
    trusted = ssl.create_default_context()
    authority.configure_trust(trusted)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    authority.issue_cert("slow.test").configure_cert(context)
    with Trickle(tls=context) as server:
        started = time.monotonic()
        with _watched(1.0) as deadline, new_client(verify=trusted) as client:
            with pytest.raises(TreadleError) as caught:
                fetch({"url": f"https://slow.test:{server.port}/"}, ["slow.test"], client,
                      Answers(["127.0.0.1"]), deadline=deadline)  # fmt: skip
        took = time.monotonic() - started
    assert caught.value.code == "egress.timeout"
    assert took < 2.0


def test_a_stalled_name_lookup_costs_no_more_than_the_deadline() -> None:
    def stalls(host: str, port: int) -> list[str]:
        time.sleep(3)
        return ["127.0.0.1"]

    started = time.monotonic()
    with _watched(0.5) as deadline, new_client() as client, pytest.raises(TreadleError) as caught:
        fetch({"url": "http://slow.test/"}, ["slow.test"], client, stalls, deadline=deadline)
    assert caught.value.code == "egress.timeout"
    assert time.monotonic() - started < 1.5
