"""Hostile clients of the HTTP listener, unauthenticated or not: slowloris, a flood of
connections from one address, bodies sent a byte at a time, descriptors run out.

Each holds no more than its deadline or its cap allows: a connection that does not finish its
request head within the header deadline, or its body within the body deadline, is answered 408
and closed; one past the cap per address is answered 429 at once, unread; when accept fails for
want of descriptors, the server says so once per interval and serves again once they are back.
Meanwhile another tenant's runs and lists go on as before, and the log stays small.

Every attacker connects from an address of its own in 127.0.0.0/8 (all of it is loopback on
Linux), so that the cap per address that it meets is not the victim's, on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
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
from tests.integration.app import APPROVAL

HEADER_SECONDS = 2.0
BODY_SECONDS = 2.0
SLACK = 1.5  # how much later than its deadline a close may be seen, on a busy machine
DEADLINES = {
    "TREADLE_HTTP_HEADER_TIMEOUT": str(HEADER_SECONDS),
    "TREADLE_HTTP_BODY_TIMEOUT": str(BODY_SECONDS),
}
HEAD = b"GET /v1/workflows HTTP/1.1\r\nHost: treadle\r\nX-Slow: "


@dataclass
class _Conn:
    sock: socket.socket
    opened: float
    answer: bytes = b""


@dataclass
class Trickle:
    """Connections that each send ``first`` at once, then ``drip`` every ``every`` seconds,
    ``per_source`` of them from each address of ``sources``. As the server closes one, its
    lifetime and whatever it answered are recorded, and (``reopen``) another takes its place."""

    port: int
    sources: list[str]
    per_source: int
    first: bytes = HEAD
    drip: bytes = b"a"
    every: float = 0.5
    reopen: bool = True
    lifetimes: list[float] = field(default_factory=list)
    answers: list[bytes] = field(default_factory=list)
    refused: int = 0  # connections the server would not take at all

    def __post_init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._open: dict[socket.socket, tuple[str, _Conn]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trickle", daemon=True)

    @property
    def open(self) -> int:
        return len(self._open)

    def __enter__(self) -> Trickle:
        for source in self.sources:
            for _ in range(self.per_source):
                self._connect(source)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        for sock in list(self._open):
            self._selector.unregister(sock)
            sock.close()
        self._open.clear()
        self._selector.close()

    def _connect(self, source: str) -> None:
        sock = socket.socket()
        sock.bind((source, 0))
        try:
            sock.connect(("127.0.0.1", self.port))
            sock.sendall(self.first)
        except OSError:
            sock.close()
            self.refused += 1
            return
        sock.setblocking(False)
        self._open[sock] = (source, _Conn(sock, time.monotonic()))
        self._selector.register(sock, selectors.EVENT_READ)

    def _run(self) -> None:
        next_drip = time.monotonic() + self.every
        while not self._stop.is_set():
            for key, _ in self._selector.select(0.05):
                self._read(key.fileobj)  # type: ignore[arg-type]
            if time.monotonic() >= next_drip:
                next_drip += self.every
                for sock in list(self._open):
                    try:
                        sock.send(self.drip)
                    except BlockingIOError:
                        pass
                    except OSError:
                        self._closed(sock)

    def _read(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self._open[sock][1].answer += data
        else:
            self._closed(sock)

    def _closed(self, sock: socket.socket) -> None:
        if sock not in self._open:
            return
        source, conn = self._open.pop(sock)
        self._selector.unregister(sock)
        sock.close()
        self.lifetimes.append(time.monotonic() - conn.opened)
        self.answers.append(conn.answer)
        if self.reopen and not self._stop.is_set():
            self._connect(source)


def _sources(count: int) -> list[str]:
    return [f"127.0.0.{n}" for n in range(2, 2 + count)]


def _timed_health(server: Server, into: list[float]) -> None:
    """``GET /healthz`` on a new connection, as a load balancer would; timed into ``into``."""
    started = time.monotonic()
    reply = httpx.get(f"{server.base}/healthz", timeout=10)
    assert reply.status_code == 200, reply.text
    into.append(time.monotonic() - started)


def _error_of(answer: bytes) -> tuple[int, dict[str, str]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["error"]


def _notices(server: Server, words: str) -> int:
    return sum(words in line for line in server.log.splitlines())


@contextmanager
def _stream(server: Server, headers: dict[str, str], path: str) -> Iterator[list[str]]:
    """A live event stream of ``path``, read on a thread of its own into the list yielded."""
    lines: list[str] = []
    client = httpx.Client(base_url=server.base, timeout=httpx.Timeout(10, read=60))

    def read() -> None:
        with client.stream("GET", path, headers=headers) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                lines.append(line)

    reader = threading.Thread(target=read, name="stream", daemon=True)
    reader.start()
    try:
        yield lines
    finally:
        reader.join(30)
        client.close()


@pytest.mark.slow
def test_slowloris_is_cut_off_at_the_header_deadline(database_url: str, tmp_path: Path) -> None:
    with serve(database_url, tmp_path, env=DEADLINES) as server:
        victim = Victim(server)
        before = victim.baseline()
        acme = server.tenant("acme")
        server.deploy(acme, "approval", APPROVAL)
        created = server.http.post(
            "/v1/workflows/approval/instances", json={"id": "a1"}, headers=acme
        )
        assert created.status_code == 201, created.text
        path = "/v1/workflows/approval/instances/a1"
        health: list[float] = []
        with _stream(server, acme, path + "/stream") as events:
            # 400 connections, 40 per address, each sending a header byte every half second.
            with Trickle(server.process.port, _sources(10), 40) as attack:
                with victim.watching() as during:
                    until = time.monotonic() + 3 * HEADER_SECONDS
                    while time.monotonic() < until:
                        _timed_health(server, health)
                        time.sleep(0.2)
            # The stream began long before: it is a response, not a request, and no deadline
            # cut it. It carries on to the end.
            sent = server.http.post(path + "/events/approved", json={"by": "ops"}, headers=acme)
            assert sent.status_code == 202, sent.text
        assert server.wait_status(acme, path, ("complete",))["output"] == {"by": "ops"}
    assert any("complete" in line for line in events), events[-5:]
    report("slowloris", database_url, before, during)
    assert_unharmed(during, probes=3)
    assert max(health) < 1.0, health
    # Every attacking connection was closed at its deadline, however it trickled; those
    # that had sent part of a head were told why.
    assert len(attack.lifetimes) >= 400, len(attack.lifetimes)
    assert max(attack.lifetimes) <= HEADER_SECONDS + SLACK, max(attack.lifetimes)
    status, error = _error_of(attack.answers[0])
    assert (status, error["code"]) == (408, "request.timeout"), attack.answers[0]
    assert _notices(server, "with no request head within") <= 3
    assert_quiet_log(server)


def test_connections_past_the_cap_per_address_are_refused_at_once(
    database_url: str, tmp_path: Path
) -> None:
    env = {**DEADLINES, "TREADLE_HTTP_MAX_CONNECTIONS_PER_CLIENT": "32"}
    with serve(database_url, tmp_path, env=env) as server:
        victim = Victim(server)
        before = victim.baseline()
        with victim.watching() as during:
            # 300 connections from one address, as fast as it can open them, none sending.
            with Trickle(server.process.port, _sources(1), 300, first=b"", reopen=False) as flood:
                refused_by = time.monotonic() + 5.0
                while len(flood.lifetimes) < 300 - 32 and time.monotonic() < refused_by:
                    time.sleep(0.02)
                refused = list(zip(flood.lifetimes, flood.answers, strict=True))
                held = flood.open
                health: list[float] = []
                _timed_health(server, health)
                # The cap's worth stay open until their header deadline, not longer.
                closed_by = time.monotonic() + HEADER_SECONDS + SLACK
                while flood.open and time.monotonic() < closed_by:
                    time.sleep(0.05)
                left = flood.open
    report("connections from one address", database_url, before, during)
    assert_unharmed(during, probes=3)
    assert held == 32, held
    assert left == 0, left
    assert len(refused) == 300 - 32, len(refused)
    assert max(lifetime for lifetime, _ in refused) < HEADER_SECONDS  # at once, not held
    status, error = _error_of(refused[-1][1])
    assert (status, error["code"]) == (429, "connections.too_many"), error
    assert "32 connections" in error["message"]
    assert _notices(server, "past 32 from one address") <= 2
    assert health[0] < 1.0
    assert_quiet_log(server)


def test_connections_past_the_cap_of_the_server_are_refused_until_some_close(
    database_url: str, tmp_path: Path
) -> None:
    env = {**DEADLINES, "TREADLE_HTTP_MAX_CONNECTIONS": "120"}
    with serve(database_url, tmp_path, env=env) as server:
        victim = Victim(server)  # its connection is open before the flood, and kept alive
        before = victim.baseline()
        with victim.watching() as during:
            flood = Trickle(server.process.port, _sources(5), 40, first=b"", reopen=False)
            with flood:
                refused_by = time.monotonic() + 5.0
                while not flood.lifetimes and time.monotonic() < refused_by:
                    time.sleep(0.02)
                answer = flood.answers[0] if flood.answers else b""
                # None is kept past its header deadline; then others are let in.
                closed_by = time.monotonic() + HEADER_SECONDS + SLACK
                while flood.open and time.monotonic() < closed_by:
                    time.sleep(0.05)
                left = flood.open
            health: list[float] = []
            _timed_health(server, health)
    report("connections past the server's cap", database_url, before, during)
    assert_unharmed(during)
    status, error = _error_of(answer)
    assert (status, error["code"]) == (503, "server.busy"), error
    assert left == 0
    assert health[0] < 1.0
    assert _notices(server, "were open") <= 2
    assert_quiet_log(server)


def test_a_body_sent_a_byte_at_a_time_is_cut_off_at_the_body_deadline(
    database_url: str, tmp_path: Path
) -> None:
    with serve(database_url, tmp_path, env=DEADLINES) as server:
        victim = Victim(server)
        before = victim.baseline()
        key = server.tenant("mallory")["Authorization"]
        head = (
            "PUT /v1/workflows/slow HTTP/1.1\r\nHost: treadle\r\n"
            f"Authorization: {key}\r\nContent-Type: application/json\r\n"
            "Content-Length: 100000\r\n\r\n{"
        ).encode()
        # 120 uploads, 30 per address, each sending a byte of its body every 0.2 s.
        attack = Trickle(server.process.port, _sources(4), 30, first=head, drip=b" ", every=0.2)
        with victim.watching() as during, attack:
            until = time.monotonic() + 2 * BODY_SECONDS + SLACK
            while time.monotonic() < until:
                time.sleep(0.1)
        listed = server.http.get("/v1/workflows", headers={"Authorization": key})
    report("slow request bodies", database_url, before, during)
    assert_unharmed(during, probes=3)
    assert len(attack.lifetimes) >= 120, len(attack.lifetimes)
    assert max(attack.lifetimes) <= BODY_SECONDS + SLACK, max(attack.lifetimes)
    assert min(attack.lifetimes) >= BODY_SECONDS - 0.1, min(attack.lifetimes)
    for answer in attack.answers:
        status, error = _error_of(answer)
        assert (status, error["code"]) == (408, "request.timeout"), answer
        assert "body" in error["message"]
    assert listed.json()["workflows"] == []  # none of them was taken for an upload
    assert _notices(server, "with no complete request body within") <= 3
    assert_quiet_log(server)


def _open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@contextmanager
def _open_files_limit(pid: int, limit: int) -> Iterator[None]:
    """``pid`` may open at most ``limit`` files while the block runs (its soft limit: the
    hard one stays, so that the soft one can be put back without privileges)."""
    previous = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, previous[1]))
    try:
        yield
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, previous)


@pytest.mark.slow
def test_out_of_descriptors_accept_is_logged_once_and_serving_resumes(
    database_url: str, tmp_path: Path
) -> None:
    # Caps above what the descriptors allow, as an operator might set them by mistake: the
    # accept loop then meets EMFILE.
    env = {
        **DEADLINES,
        "TREADLE_HTTP_MAX_CONNECTIONS": "100000",
        "TREADLE_HTTP_MAX_CONNECTIONS_PER_CLIENT": "100000",
    }
    with serve(database_url, tmp_path, env=env) as server:
        victim = Victim(server)
        before = victim.baseline()
        pid = server.process.pid
        after = Latency()
        with _open_files_limit(pid, _open_descriptors(pid) + 60):
            with victim.watching() as during:
                flood = Trickle(server.process.port, _sources(3), 100, first=b"", reopen=True)
                with flood:
                    until = time.monotonic() + 3 * HEADER_SECONDS
                    while time.monotonic() < until:
                        time.sleep(0.1)
            # The attacker gone, new connections are accepted again, within the limit.
            deadline = time.monotonic() + HEADER_SECONDS + 2 * SLACK
            while True:
                try:
                    if httpx.get(f"{server.base}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the server did not serve again"
                time.sleep(0.1)
            victim.probe(after)
    report("out of file descriptors", database_url, before, during)
    # Past the descriptors, work that needs a new one waits (on PostgreSQL, a new pooled
    # connection: the victim's run may take seconds), but nothing fails.
    assert not during.failures, during.failures
    assert_unharmed(after)
    accept_lines = _notices(server, "accept failed")
    assert 1 <= accept_lines <= 3, server.log[-3000:]
    assert "Too many open files" in server.log
    assert_quiet_log(server)
