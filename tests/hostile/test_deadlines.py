"""Host calls and step bodies end when the platform says so, whatever tenant code or the server
it calls does.

The attack: ``env.fetch`` to a server that sends its headers and then one byte every 0.2 s
(each read returns in time, so a per-read timeout never fires), and step bodies that loop on
the CPU. Before, the fetch never ended, the instance stayed ``running``, ``terminate`` did not
close the connection and the tenant's sandbox workers and the engine's runner threads stayed
pinned: another tenant's run took 25-54 s.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile.server import (
    Server,
    Victim,
    assert_quiet_log,
    assert_unharmed,
    report,
    serve,
)

FETCH = """
from treadle import WorkflowEntrypoint

class Fetch(WorkflowEntrypoint):
    def run(self, event, step):
        def fetch():
            return self.env.fetch(event.payload["url"]).status
        timeout = event.payload.get("timeout", "1 hour")
        return step.do("fetch", fetch, timeout=timeout, retries={"limit": 0})
"""
LOOP = """
from treadle import WorkflowEntrypoint

class Loop(WorkflowEntrypoint):
    def run(self, event, step):
        def spin():
            while True:
                pass
        return step.do("spin", spin, retries={"limit": 0})
"""
QUICK = """
from treadle import WorkflowEntrypoint

class Quick(WorkflowEntrypoint):
    def run(self, event, step):
        return step.do("quick", lambda: 1)
"""
# Two sandbox workers and four runner threads: without a bound per tenant on each, the
# attacker's stuck instances would hold all of them.
SMALL = {
    "TREADLE_SANDBOX_PER_TENANT": "2",
    "TREADLE_SANDBOX_PROCESSES": "8",
    "TREADLE_WORKERS": "4",
}


class Trickle:
    """Answers each request with its headers, then one body byte every 0.2 s, for a minute;
    ``open`` counts the connections still open from the client's side."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/slow"
        self.open = 0
        self.served = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with self._lock:
            self.open += 1
            self.served += 1
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n")
            for _ in range(300):
                if self._stop.wait(0.2):
                    return
                conn.sendall(b"x")  # fails once the client has closed its end
        except OSError:
            pass
        finally:
            conn.close()
            with self._lock:
                self.open -= 1

    def close(self) -> None:
        self._stop.set()
        self._listener.close()


@pytest.fixture
def trickle() -> Iterator[Trickle]:
    server = Trickle()
    yield server
    server.close()


def _start(server: Server, headers: dict[str, str], workflow: str, ids: list[str],
           params: dict[str, object] | None = None) -> None:  # fmt: skip
    for instance_id in ids:
        body = {"id": instance_id, "params": params or {}}
        reply = server.http.post(f"/v1/workflows/{workflow}/instances", json=body, headers=headers)
        assert reply.status_code == 201, reply.text


def _until(condition: object, timeout: float, what: str) -> float:
    """Poll ``condition`` until true; how long it took."""
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - started < timeout, f"{what} not within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_a_trickling_server_holds_a_fetch_no_longer_than_the_platform_allows(
    database_url: str, tmp_path: Path, trickle: Trickle
) -> None:
    env = {**SMALL, "TREADLE_HOST_CALL_SECONDS": "2"}
    with serve(database_url, tmp_path, env) as server:
        victim = Victim(server)
        before = victim.baseline()
        attacker = server.tenant("attacker", egress_allow=["127.0.0.1"])
        server.deploy(attacker, "fetch", FETCH)
        ids = [f"a{i}" for i in range(8)]
        with victim.watching() as during:
            _start(server, attacker, "fetch", ids, {"url": trickle.url})
            for instance_id in ids:  # four rounds of two: about 8 s in all
                path = f"/v1/workflows/fetch/instances/{instance_id}"
                done = server.wait_status(attacker, path, ("errored",), timeout=30)
                assert done["error"]["name"] == "FetchTimeout", done["error"]
                assert "did not finish within 2 s" in done["error"]["message"]
        _until(lambda: trickle.open == 0, 3, "the attacker's connections closed")
        assert trickle.served == len(ids)  # each fetch ran once: nothing loops
        assert_unharmed(during)
        report("env.fetch trickle (8 instances)", database_url, before, during)
        assert_quiet_log(server)


def test_a_step_timeout_closes_the_fetch_of_its_body(
    database_url: str, tmp_path: Path, trickle: Trickle
) -> None:
    with serve(database_url, tmp_path, SMALL) as server:
        attacker = server.tenant("attacker", egress_allow=["127.0.0.1"])
        server.deploy(attacker, "fetch", FETCH)
        _start(server, attacker, "fetch", ["t"], {"url": trickle.url, "timeout": "1 second"})
        done = server.wait_status(
            attacker, "/v1/workflows/fetch/instances/t", ("errored",), timeout=15
        )
        assert done["error"]["name"] == "StepTimeout", done["error"]
        _until(lambda: trickle.open == 0, 2, "the body's connection closed")


def test_terminate_kills_running_bodies_at_once_and_frees_their_slots(
    database_url: str, tmp_path: Path, trickle: Trickle
) -> None:
    with serve(database_url, tmp_path, SMALL) as server:
        victim = Victim(server)
        before = victim.baseline()
        attacker = server.tenant("attacker", egress_allow=["127.0.0.1"])
        server.deploy(attacker, "loop", LOOP)
        server.deploy(attacker, "fetch", FETCH)
        server.deploy(attacker, "quick", QUICK)
        with victim.watching() as during:
            _start(server, attacker, "loop", ["spin"])
            _start(server, attacker, "fetch", ["hang"], {"url": trickle.url})
            _until(lambda: trickle.open == 1, 10, "the fetch under way")
            time.sleep(0.5)  # the loop is spinning in its step body by now
            # Both of the attacker's sandbox workers are busy: a third instance waits.
            _start(server, attacker, "quick", ["waits"])
            time.sleep(0.5)
            waiting = server.http.get("/v1/workflows/quick/instances/waits", headers=attacker)
            assert waiting.json()["status"] != "complete"
            started = time.monotonic()
            for workflow, instance_id in (("loop", "spin"), ("fetch", "hang")):
                path = f"/v1/workflows/{workflow}/instances/{instance_id}/status"
                reply = server.http.patch(path, json={"status": "terminate"}, headers=attacker)
                assert reply.status_code == 200 and reply.json()["status"] == "terminated"
            _until(lambda: trickle.open == 0, 2, "the terminated body's connection closed")
            server.wait_status(
                attacker, "/v1/workflows/quick/instances/waits", ("complete",), timeout=3
            )
            freed = time.monotonic() - started
        assert freed < 3, f"the tenant's slots were freed {freed:.1f} s after terminate"
        for workflow, instance_id in (("loop", "spin"), ("fetch", "hang")):
            path = f"/v1/workflows/{workflow}/instances/{instance_id}"
            instance = server.http.get(path, headers=attacker).json()
            assert instance["status"] == "terminated", instance
        assert_unharmed(during)
        report("terminate a looping and a hung body", database_url, before, during)
        assert_quiet_log(server)


def test_a_stopping_server_cuts_running_bodies_short_and_gives_them_back(
    database_url: str, tmp_path: Path, trickle: Trickle
) -> None:
    env = {**SMALL, "TREADLE_SHUTDOWN_GRACE_SECONDS": "1"}
    with serve(database_url, tmp_path, env) as server:
        attacker = server.tenant("attacker", egress_allow=["127.0.0.1"])
        server.deploy(attacker, "loop", LOOP)
        server.deploy(attacker, "fetch", FETCH)
        _start(server, attacker, "loop", ["spin"])
        _start(server, attacker, "fetch", ["hang"], {"url": trickle.url})
        _until(lambda: trickle.open == 1, 10, "the fetch under way")
        time.sleep(0.5)
        process = server.process.proc
        assert process is not None
        started = time.monotonic()
        os.kill(process.pid, signal.SIGTERM)
        process.wait(20)
        stopped = time.monotonic() - started
        assert stopped < 8, f"the server took {stopped:.1f} s to stop"
        assert process.returncode == 0, server.log[-3000:]
        _until(lambda: trickle.open == 0, 2, "the fetch's connection closed")
        assert "given back: the process is stopping" in server.log
        # Started again, the instances run again (they were given back, not lost).
        server.process.start()
        _until(lambda: trickle.served == 2, 15, "the fetch run again after the restart")
        spin = server.http.get("/v1/workflows/loop/instances/spin", headers=attacker).json()
        assert spin["status"] == "running", spin
