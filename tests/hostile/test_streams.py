"""Live streams under attack, against a real ``treadle serve``: a tenant that opens streams by
the hundred, or past its cap, costs another tenant nothing, and a stream ends once the key it
was opened with stops working.

Streams used to poll the database each, four times a second, on the API's thread pool (1,500
of one tenant made another tenant's run take 14 s), without a cap, and a stream opened before
its key was deleted went on delivering events. Now one reader per process feeds them all.

The streams are raw sockets: hundreds of them cost the test a file descriptor each, and a
closed stream shows as the end of the socket.
"""

from __future__ import annotations

import json
import re
import select
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hostile.server import (
    Latency,
    Server,
    Victim,
    assert_quiet_log,
    assert_unharmed,
    report,
    serve,
)
from tests.integration.app import ADMIN, APPROVAL, bearer

WAITS = "/v1/workflows/approval/instances"
NAPS = "/v1/workflows/naps/instances"
NAPPER = """
from treadle import WorkflowEntrypoint

class Naps(WorkflowEntrypoint):
    def run(self, event, step):
        for i in range(event.payload["n"]):
            step.sleep(f"nap {i}", "1 second")
        return "rested"
"""
# Above item 3's cap of connections per client address: the attack stands for many clients.
MANY_CLIENTS = {"TREADLE_HTTP_MAX_CONNECTIONS_PER_CLIENT": "2000"}
_DATA = re.compile(rb"^data: (.*)$", re.MULTILINE)


class RawStream:
    """``GET <path>`` on a socket of its own: the status and headers at once, then the SSE
    events as they come, and whether the server closed the stream."""

    def __init__(self, server: Server, path: str, headers: dict[str, str]) -> None:
        host, port = server.base.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        # Connection: close, so that the end of the stream is the end of the socket.
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.data = b""
        self.closed = False
        while b"\r\n\r\n" not in self.data:
            self._recv()
            assert not self.closed, f"closed before the response head: {self.data!r}"
        head, _, self.data = self.data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {
            k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)
        }

    def _recv(self) -> None:
        chunk = self.sock.recv(65536)
        self.data += chunk
        self.closed = self.closed or not chunk

    def poll(self, timeout: float = 0.0) -> None:
        """Take in whatever has arrived, waiting up to ``timeout`` for the first byte."""
        while not self.closed and select.select([self.sock], [], [], timeout)[0]:
            self._recv()
            timeout = 0.0

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in _DATA.findall(self.data)]

    def error(self) -> dict[str, Any]:
        """The JSON error of a refused stream."""
        length = int(self.headers["content-length"])
        while len(self.data) < length and not self.closed:
            self._recv()
        error: dict[str, Any] = json.loads(self.data[:length])["error"]
        return error

    def wait_for(self, done: Callable[[RawStream], bool], timeout: float) -> float:
        """Seconds until ``done(self)``; fails after ``timeout``."""
        started = time.monotonic()
        while not done(self):
            left = timeout - (time.monotonic() - started)
            assert left > 0, f"not within {timeout} s; got {self.events()[-3:]}, {self.closed=}"
            self.poll(min(left, 0.05))
        return time.monotonic() - started

    def close(self) -> None:
        self.sock.close()


class Sockets(list[RawStream]):
    """The streams a test opened, all closed at its end."""

    def open(self, server: Server, path: str, headers: dict[str, str]) -> RawStream:
        self.append(RawStream(server, path, headers))
        return self[-1]

    def close(self, streams: list[RawStream] | None = None) -> None:
        for stream in self if streams is None else streams:
            stream.close()


@pytest.fixture
def sockets() -> Iterator[Sockets]:
    opened = Sockets()
    yield opened
    opened.close()


def _probed(latency: Latency, probes: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(latency.runs) + len(latency.failures) < probes:
        assert time.monotonic() < deadline, f"the victim probed only {latency}"
        time.sleep(0.05)


def _types(stream: RawStream) -> list[str]:
    return [str(e["type"]) for e in stream.events()]


def _waiting(server: Server, headers: dict[str, str], ids: list[str]) -> None:
    for instance_id in ids:
        reply = server.http.post(WAITS, json={"id": instance_id}, headers=headers)
        assert reply.status_code == 201, reply.text
    for instance_id in ids:
        server.wait_status(headers, f"{WAITS}/{instance_id}", ("waiting",))


def _key_ids(server: Server, tenant: str) -> list[str]:
    reply = server.http.get(f"/v1/admin/tenants/{tenant}/keys", headers=ADMIN)
    assert reply.status_code == 200, reply.text
    return [str(key["id"]) for key in reply.json()["keys"]]


def _new_key(server: Server, tenant: str) -> dict[str, str]:
    reply = server.http.post(f"/v1/admin/tenants/{tenant}/keys", headers=ADMIN)
    assert reply.status_code == 201, reply.text
    return bearer(reply.json()["key"])


def test_streams_past_the_tenants_cap_are_refused_and_cost_the_victim_nothing(
    database_url: str, tmp_path: Path, sockets: Sockets
) -> None:
    env = {"TREADLE_MAX_STREAMS_PER_TENANT": "20", **MANY_CLIENTS}
    with serve(database_url, tmp_path, env=env) as server:
        victim = Victim(server)
        mallory = server.tenant("mallory")
        server.deploy(mallory, "approval", APPROVAL)
        _waiting(server, mallory, ["w1", "w2"])
        before = victim.baseline()
        paths = [f"{WAITS}/w{1 + n % 2}/stream" for n in range(20)]
        with victim.watching() as during:
            held = [sockets.open(server, path, mallory) for path in paths]
            assert [s.status for s in held] == [200] * 20
            for stream in held:  # each is live: it has sent the history so far
                stream.wait_for(lambda s: "wait.started" in _types(s), timeout=5)
            refused = []
            for _ in range(5):
                extra = sockets.open(server, f"{WAITS}/w1/stream", mallory)
                refused.append((extra.status, extra.headers.get("retry-after"), extra.error()))
                extra.close()
            # The victim's own stream (of its first run) opens and tells the whole story.
            own = sockets.open(server, "/v1/workflows/one/instances/v1/stream", victim.headers)
            own.wait_for(lambda s: s.closed, timeout=5)
            _probed(during, 3)  # while the attacker's streams stay open
            sockets.close(held)
        for status, retry_after, error in refused:
            assert status == 429
            assert retry_after is not None and int(retry_after) >= 1
            assert error["code"] == "streams.too_many", error
            assert "20 live streams" in error["message"], error
        assert own.status == 200 and _types(own)[-1] == "workflow.complete"
        assert_unharmed(during)
        # Closed streams no longer count: the tenant may open one again.
        again = sockets.open(server, f"{WAITS}/w1/stream", mallory)
        deadline = time.monotonic() + 5
        while again.status == 429 and time.monotonic() < deadline:
            again.close()
            time.sleep(0.1)
            again = sockets.open(server, f"{WAITS}/w1/stream", mallory)
        assert again.status == 200
        again.close()
        report("streams past the cap", database_url, before, during)
        assert_quiet_log(server)


@pytest.mark.slow
def test_hundreds_of_live_streams_do_not_slow_another_tenant(
    database_url: str, tmp_path: Path, sockets: Sockets
) -> None:
    env = {"TREADLE_MAX_STREAMS_PER_TENANT": "300", **MANY_CLIENTS}
    with serve(database_url, tmp_path, env=env) as server:
        victim = Victim(server)
        mallory = server.tenant("mallory")
        server.deploy(mallory, "naps", NAPPER)
        ids = [f"n{i}" for i in range(8)]
        before = victim.baseline()
        for instance_id in ids:
            body = {"id": instance_id, "params": {"n": 40}}
            assert server.http.post(NAPS, json=body, headers=mallory).status_code == 201
        paths = [f"{NAPS}/{ids[n % len(ids)]}/stream" for n in range(240)]
        held = [sockets.open(server, path, mallory) for path in paths]
        with victim.watching() as during:
            assert all(s.status == 200 for s in held), {s.status for s in held}
            until = time.monotonic() + 6
            while time.monotonic() < until:
                for stream in held:
                    stream.poll()
                time.sleep(0.2)
            for stream in held:
                stream.poll()
        assert_unharmed(during, probes=3)
        # Every stream was fed live: naps that ended while it was open.
        for stream in held:
            assert _types(stream).count("sleep.completed") >= 2, _types(stream)
            assert not stream.closed
        report("240 live streams", database_url, before, during)
        assert_quiet_log(server)


def test_a_stream_ends_when_its_key_is_revoked_or_rotated_away(
    database_url: str, tmp_path: Path, sockets: Sockets
) -> None:
    with serve(database_url, tmp_path) as server:
        victim = Victim(server)
        first = server.tenant("acme")
        server.deploy(first, "approval", APPROVAL)
        second = _new_key(server, "acme")
        revoked_id, rotated_id = _key_ids(server, "acme")
        _waiting(server, first, ["r1"])
        before = victim.baseline()
        path = f"{WAITS}/r1/stream"
        with victim.watching() as during:
            doomed, kept = sockets.open(server, path, first), sockets.open(server, path, second)
            # Until the instance has suspended (its last event before the send), so nothing
            # of it reaches the stream after ``seen`` but what follows the revocation.
            for stream in (doomed, kept):
                stream.wait_for(lambda s: "workflow.waiting" in _types(s), timeout=5)
            seen = max(int(e["id"]) for e in doomed.events())
            revoked = server.http.delete(f"/v1/admin/tenants/acme/keys/{revoked_id}", headers=ADMIN)
            assert revoked.status_code == 204, revoked.text
            # What happens to the instance from now on is not for the revoked key's stream.
            sent = server.http.post(f"{WAITS}/r1/events/approved", json={"by": "x"}, headers=second)
            assert sent.status_code == 202, sent.text
            took = doomed.wait_for(lambda s: s.closed, timeout=3)
            kept.wait_for(lambda s: s.closed, timeout=5)  # the instance finished
        assert took < 2.5, took
        assert max(int(e["id"]) for e in doomed.events()) == seen, doomed.events()
        assert _types(kept)[-1] == "workflow.complete"
        assert sockets.open(server, path, first).status == 401

        # A rotation with no overlap: the old key's streams end, the new key streams on.
        _waiting(server, second, ["r2"])
        old = sockets.open(server, f"{WAITS}/r2/stream", second)
        old.wait_for(lambda s: "wait.started" in _types(s), timeout=5)
        rotate = f"/v1/admin/tenants/acme/keys/{rotated_id}/rotate"
        rotated = server.http.post(rotate, json={"overlap": 0}, headers=ADMIN)
        assert rotated.status_code == 201, rotated.text
        assert old.wait_for(lambda s: s.closed, timeout=3) < 2.5
        assert sockets.open(server, f"{WAITS}/r2/stream", second).status == 401
        new = sockets.open(server, f"{WAITS}/r2/stream", bearer(rotated.json()["key"]))
        assert new.status == 200
        new.wait_for(lambda s: "wait.started" in _types(s), timeout=5)
        new.close()
        assert_unharmed(during)
        report("stream of a revoked key", database_url, before, during)
        assert_quiet_log(server)


def test_a_key_revoked_through_another_process_ends_the_stream(
    postgresql_url: str, tmp_path: Path, sockets: Sockets
) -> None:
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    with serve(postgresql_url, tmp_path / "a") as server:
        headers = server.tenant("acme")
        server.deploy(headers, "approval", APPROVAL)
        (key_id,) = _key_ids(server, "acme")
        _waiting(server, headers, ["p1"])
        stream = sockets.open(server, f"{WAITS}/p1/stream", headers)
        stream.wait_for(lambda s: "wait.started" in _types(s), timeout=5)
        with serve(postgresql_url, tmp_path / "b") as other:
            revoked = other.http.delete(f"/v1/admin/tenants/acme/keys/{key_id}", headers=ADMIN)
            assert revoked.status_code == 204, revoked.text
            assert stream.wait_for(lambda s: s.closed, timeout=3) < 2.5
        assert_quiet_log(server)


def test_live_events_reach_the_stream_promptly(
    database_url: str, tmp_path: Path, sockets: Sockets
) -> None:
    with serve(database_url, tmp_path) as server:
        headers = server.tenant("acme")
        server.deploy(headers, "approval", APPROVAL)
        ids = [f"e{i}" for i in range(3)]
        _waiting(server, headers, ids)
        delays = []
        for instance_id in ids:
            stream = sockets.open(server, f"{WAITS}/{instance_id}/stream", headers)
            stream.wait_for(lambda s: "wait.started" in _types(s), timeout=5)
            path = f"{WAITS}/{instance_id}/events/approved"
            assert server.http.post(path, json={"by": "b"}, headers=headers).status_code == 202
            delays.append(stream.wait_for(lambda s: "wait.completed" in _types(s), timeout=5))
            stream.wait_for(lambda s: s.closed, timeout=5)
            assert _types(stream)[-1] == "workflow.complete"
            stream.close()
        assert max(delays) < 1.0, delays
        assert_quiet_log(server)
