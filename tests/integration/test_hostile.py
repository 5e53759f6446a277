"""Hostile input, case by case: each gets a clear 4xx that says what is wrong, and nothing is
written. The fuzzer (test_fuzz.py) covers the space at random; these pin the cases a client or
an attacker is most likely to send, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from httpx import Client

from tests.integration.app import ADMIN, SUM, deploy, new_tenant

BASE = "/v1/workflows/sum/instances"
JSON = {"Content-Type": "application/json"}
# (method, path, a valid body) of every route that takes a JSON object
OBJECT_ROUTES = [
    ("POST", "/v1/admin/tenants", {"name": "newcomer"}),
    ("PATCH", "/v1/admin/tenants/acme/policy", {"memory_mb": 128}),
    ("PUT", "/v1/workflows/other", {"source": SUM, "sandbox": "restricted"}),
    ("POST", BASE, {"id": "n1"}),
    ("POST", f"{BASE}/batch", {"instances": [{"id": "n1"}]}),
    ("PATCH", f"{BASE}/i1/status", {"status": "pause"}),
]


@pytest.fixture
def acme(client: Client) -> dict[str, str]:
    headers = new_tenant(client, "acme")
    deploy(client, headers, "sum", SUM)
    assert client.post(BASE, json={"id": "i1", "params": {"x": 1}}, headers=headers).is_success
    return headers


def _auth(path: str, acme: dict[str, str]) -> dict[str, str]:
    return ADMIN if path.startswith("/v1/admin/") else acme


def _send(
    client: Client, acme: dict[str, str], method: str, path: str, body: bytes, **headers: str
) -> Any:
    return client.request(
        method, path, content=body, headers={**_auth(path, acme), **JSON, **headers}
    )


def _error(reply: Any, status: int, code: str, *words: str) -> None:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) >= {"code", "message"}, error
    assert error["code"] == code, error
    for word in words:
        assert word in error["message"], error


def _snapshot(client: Client, acme: dict[str, str]) -> Any:
    """What a client can see of everything these requests could write."""
    return (
        client.get("/v1/admin/tenants", headers=ADMIN).json(),
        client.get("/v1/workflows", headers=acme).json(),
        sorted(i["id"] for i in client.get(BASE, headers=acme).json()["instances"]),
        client.get(f"{BASE}/i1", headers=acme).json()["status"] != "paused",
    )


@pytest.fixture
def nothing_written(client: Client, acme: dict[str, str]) -> Iterator[None]:
    before = _snapshot(client, acme)
    yield
    assert _snapshot(client, acme) == before


BAD_BODIES = [
    (b"{nope", "request.json", "not valid JSON"),
    (b'{"id": "a"', "request.json", "not valid JSON"),
    (b"\xef\xbb\xbf{}", "request.json", "not valid JSON"),  # a byte order mark
    (b'{"id": "\xff\xfe"}', "request.encoding", "not UTF-8"),
    (b'{"id": "a", "id": "b"}', "request.json", "'id' appears twice"),
    (b'{"params": {"k": 1, "k": 2}}', "request.json", "'k' appears twice"),
    (b'{"params": NaN}', "request.json", "NaN"),
    (b'{"params": -Infinity}', "request.json", "-Infinity"),
    (b'{"params": 1e400}', "request.json", "too large"),
    (b'{"params": ' + b"9" * 5000 + b"}", "request.json", "too large"),
    (b'{"params": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "request.json", "nested"),
    (b'{"params": ' + b"[" * 300 + b"]" * 300 + b"}", "request.json", "recursion"),
    (b'{"params": "a\\u0000b"}', "request.json", "U+0000"),
    (b'{"params": {"\\u0000": 1}}', "request.json", "U+0000"),
    (b'{"params": "\\ud800"}', "request.json", "surrogate"),
    (b"[]", "request.invalid", "should be an object"),
    (b'"text"', "request.invalid", "should be an object"),
    (b"null", "request.invalid", "should be an object"),
]


@pytest.mark.usefixtures("nothing_written")
def test_bodies_that_are_not_clean_json_objects_are_a_400(
    client: Client, acme: dict[str, str]
) -> None:
    for method, path, _ in OBJECT_ROUTES:
        for body, code, words in BAD_BODIES:
            reply = _send(client, acme, method, path, body)
            try:
                _error(reply, 400, code, words)
            except AssertionError as exc:
                raise AssertionError(f"{method} {path} {body[:40]!r}: {exc}") from None


@pytest.mark.usefixtures("nothing_written")
def test_an_event_payload_is_any_clean_json(client: Client, acme: dict[str, str]) -> None:
    path = f"{BASE}/i1/events/ok"
    for body, code, words in BAD_BODIES[:15]:  # the rest are fine payloads
        _error(_send(client, acme, "POST", path, body), 400, code, words)


@pytest.mark.usefixtures("nothing_written")
def test_bodies_not_declared_as_json_are_a_415(client: Client, acme: dict[str, str]) -> None:
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/json; charset=latin-1",
        "json",
    ]:
        for method, path, body in OBJECT_ROUTES:
            raw = json.dumps(body).encode()
            reply = _send(client, acme, method, path, raw, **{"Content-Type": content_type})
            _error(reply, 415, "request.unsupported_media_type", "application/json")


def test_json_media_types_and_undeclared_bodies_are_taken(
    client: Client, acme: dict[str, str]
) -> None:
    for number, content_type in enumerate(
        ["application/json", "Application/JSON; charset=UTF-8", "application/merge-patch+json"]
    ):
        body = json.dumps({"id": f"ok{number}"}).encode()
        reply = _send(client, acme, "POST", BASE, body, **{"Content-Type": content_type})
        assert reply.status_code == 201, (content_type, reply.text)
    undeclared = client.post(BASE, content=b'{"id": "bare"}', headers=acme)
    assert undeclared.status_code == 201, undeclared.text


@pytest.mark.usefixtures("nothing_written")
def test_unknown_fields_are_a_400_that_names_them(client: Client, acme: dict[str, str]) -> None:
    for method, path, body in OBJECT_ROUTES:
        reply = _send(client, acme, method, path, json.dumps({**body, "colour": 1}).encode())
        _error(reply, 400, "request.invalid", "colour", "unknown field")
    nested = {"instances": [{"id": "n1", "prio": 9}]}
    reply = _send(client, acme, "POST", f"{BASE}/batch", json.dumps(nested).encode())
    _error(reply, 400, "request.invalid", "instances.0.prio: unknown field")


WRONG_TYPES = [
    ("POST", "/v1/admin/tenants", {"name": 7}, "name"),
    ("POST", "/v1/admin/tenants", {"name": "t", "policy": {"memory_mb": "256"}}, "memory_mb"),
    ("PATCH", "/v1/admin/tenants/acme/policy", {"memory_mb": 256.5}, "memory_mb"),
    ("PATCH", "/v1/admin/tenants/acme/policy", {"retention_days": True}, "retention_days"),
    ("PATCH", "/v1/admin/tenants/acme/policy", {"memory_mb": 10**30}, "memory_mb"),
    ("PATCH", "/v1/admin/tenants/acme/policy", {"vars": []}, "vars"),
    ("PUT", "/v1/workflows/other", {"source": ["x"], "sandbox": "restricted"}, "source"),
    ("PUT", "/v1/workflows/other", {"source": SUM, "sandbox": "docker"}, "sandbox"),
    ("POST", BASE, {"id": 5}, "id"),
    ("POST", f"{BASE}/batch", {"instances": {"id": "x"}}, "instances"),
    ("POST", f"{BASE}/batch", {"instances": [{"id": "x"}] * 101}, "instances"),
    ("PATCH", f"{BASE}/i1/status", {"status": "explode"}, "status"),
    (
        "PATCH",
        f"{BASE}/i1/status",
        {"status": "restart", "from": {"name": "a", "count": 0}},
        "count",
    ),
    (
        "PATCH",
        f"{BASE}/i1/status",
        {"status": "restart", "from": {"name": "a", "count": 10**30}},
        "count",
    ),
]


@pytest.mark.usefixtures("nothing_written")
def test_wrong_types_and_out_of_range_values_are_a_400_that_names_the_field(
    client: Client, acme: dict[str, str]
) -> None:
    for method, path, body, field in WRONG_TYPES:
        reply = _send(client, acme, method, path, json.dumps(body).encode())
        _error(reply, 400, "request.invalid", field)


@pytest.mark.usefixtures("nothing_written")
def test_huge_values_are_a_413(client: Client, acme: dict[str, str]) -> None:
    big = "x" * (1024 * 1024 + 1)
    _error(client.post(BASE, json={"params": big}, headers=acme), 413, "request.too_large")
    event = client.post(f"{BASE}/i1/events/ok", json=big, headers=acme)
    _error(event, 413, "request.too_large")


@pytest.mark.usefixtures("nothing_written")
def test_bad_path_parameters_are_a_4xx(client: Client, acme: dict[str, str]) -> None:
    source = {"source": SUM, "sandbox": "restricted"}
    for name in ["x" * 65, "bad name", "-dash", "caf%C3%A9", "%F0%9F%98%80", "a.b"]:
        put = client.put(f"/v1/workflows/{name}", json=source, headers=acme)
        _error(put, 400, "workflow.invalid_name")
        get = client.get(f"/v1/workflows/{name}", headers=acme)
        _error(get, 404, "workflow.not_found")
    for path in [
        "/v1/workflows/a%00b",
        f"{BASE}/i%0A1",
        "/v1/admin/tenants/acme%1B",
        f"{BASE}/i1/events/ok%7F",
    ]:
        reply = client.request(
            "POST" if "events" in path else "GET", path, headers=_auth(path, acme)
        )
        _error(reply, 400, "request.invalid_path", "control character")
    long_id = client.get(f"{BASE}/{'i' * 5000}", headers=acme)
    _error(long_id, 404, "instance.not_found")
    event = client.post(f"{BASE}/i1/events/{'t' * 101}", json={}, headers=acme)
    _error(event, 400, "event.invalid_type")


def test_bad_query_parameters_are_a_400(client: Client, acme: dict[str, str]) -> None:
    for query, code, words in [
        ("limit=-1", "request.invalid", "limit"),
        ("limit=0", "request.invalid", "limit"),
        ("limit=1001", "request.invalid", "limit"),
        ("limit=abc", "request.invalid", "limit"),
        ("limit=", "request.invalid", "limit"),
        ("limit=%205", "request.invalid", "limit"),
        ("limit=1_0", "request.invalid", "limit"),
        ("status=", "instance.invalid_status", "unknown status"),
        ("limit=99999999999999999999999", "request.invalid", "limit"),
        ("status=exploded", "instance.invalid_status", "exploded"),
        ("cursor=garbage", "request.invalid_cursor", "cursor"),
        ("cursor=OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk", "request.invalid_cursor", "cursor"),
        ("cursor=%00", "request.invalid_cursor", "cursor"),
        ("limt=5", "request.unknown_parameter", "'limt'"),
    ]:
        _error(client.get(f"{BASE}?{query}", headers=acme), 400, code, words)
    for query in ["after=-1", "after=abc", "after=1.5", "after=", "after=" + "9" * 5000]:
        reply = client.get(f"{BASE}/i1/stream?{query}", headers=acme)
        _error(reply, 400, "request.invalid", "after")
    unknown = client.get(f"{BASE}/i1/stream?since=3", headers=acme)
    _error(unknown, 400, "request.unknown_parameter", "'since'")


def test_bad_last_event_ids_are_a_400(client: Client, acme: dict[str, str]) -> None:
    for value in ["abc", "-1", "", "1.5", "+1", "99999999999999999999", "1,2", "9" * 5000]:
        reply = client.get(f"{BASE}/i1/stream", headers={**acme, "Last-Event-ID": value})
        _error(reply, 400, "request.invalid", "Last-Event-ID")


def _raw_request(client: Client, request: bytes, then: bytes = b"") -> bytes:
    """Send ``request`` (and ``then``) on a socket of its own; the whole reply."""
    host, port = client.base_url.host, client.base_url.port
    assert port is not None
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(request)
        if then:
            try:
                sock.sendall(then)
            except OSError:
                pass  # the server may close the connection once it has answered
        reply = b""
        while not _complete(reply):
            data = sock.recv(65536)
            if not data:
                break
            reply += data
        return reply


def _complete(reply: bytes) -> bool:
    head, sep, body = reply.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


@pytest.mark.usefixtures("nothing_written")
def test_bad_authorization_headers_are_a_401(client: Client, acme: dict[str, str]) -> None:
    key = acme["Authorization"].removeprefix("Bearer ")
    for value in [
        "",
        "Bearer",
        "Basic dXNlcjpwYXNz",
        f"Token {key}",
        f"{key}",
        f"Bearer {key}x",
        f"Bearer {key[:-1]}",
        "Bearer tdl_abc_def",
        "Bearer tdl__x",
        "Bearer tdl_" + "a" * 40 + "_x",
        "Bearer tdl_" + "a" * 10_000,
    ]:
        reply = client.post(BASE, json={"id": "n1"}, headers={"Authorization": value})
        _error(reply, 401, "auth.unauthorized")
        assert reply.headers["www-authenticate"] == "Bearer"
    # Bytes no HTTP client library would send: a NUL-free but non-ASCII key id.
    port = client.base_url.port
    raw = (
        b"GET /v1/workflows HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
        b"Authorization: Bearer tdl_\xff\xfe_secret\r\nConnection: close\r\n\r\n" % port
    )
    assert _raw_request(client, raw).startswith(b"HTTP/1.1 401 ")


def test_a_body_over_the_limit_is_refused_before_it_is_sent(
    client: Client, acme: dict[str, str]
) -> None:
    """A declared Content-Length over the limit is a 413 at once: the server does not wait
    for (let alone read) the 100 MB announced."""
    port = client.base_url.port
    head = (
        b"PUT /v1/workflows/big HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
        b"Authorization: %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000000\r\n\r\n" % (port, acme["Authorization"].encode())
    )
    reply = _raw_request(client, head)
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]
    assert b"request.too_large" in reply


def test_a_chunked_body_over_the_limit_is_cut_off(client: Client, acme: dict[str, str]) -> None:
    """Without a Content-Length, the server stops at the limit: 413 while the client is still
    sending (the body here never even ends)."""
    port = client.base_url.port
    head = (
        b"PUT /v1/workflows/big HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
        b"Authorization: %s\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" % (port, acme["Authorization"].encode())
    )
    chunk = b"%x\r\n%s\r\n" % (1 << 20, b" " * (1 << 20))
    reply = _raw_request(client, head, chunk * 11)  # 11 MiB of a 10 MiB limit, no last chunk
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]
    assert client.get("/v1/workflows/big", headers=acme).status_code == 404


def test_a_chunked_body_under_the_limit_is_taken(client: Client, acme: dict[str, str]) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"id": "ch'
        yield b'unked"}'

    reply = client.post(BASE, content=chunks(), headers={**acme, **JSON})
    assert reply.status_code == 201, reply.text
    assert reply.json()["id"] == "chunked"
