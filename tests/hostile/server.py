"""A real ``treadle serve`` for the hostile scenarios, and the victim they must not harm.

Each scenario starts the server (on SQLite or PostgreSQL), measures the victim before the
attack, attacks, measures the victim while the attack runs, and asserts what the issue
promises: another tenant's one-step run completes within :data:`RUN_LIMIT` seconds and its
``GET /v1/workflows`` within :data:`LIST_LIMIT`. With ``TREADLE_HOSTILE_REPORT`` set, the
figures are appended to that file as JSON lines (``bench/hostile.py`` makes the table of
bench/RESULTS.md from them).
"""

from __future__ import annotations

import contextlib
import json
import os
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench._processes import TreadleProcess
from tests.integration.app import ADMIN, ADMIN_TOKEN, bearer

RUN_LIMIT = 2.0
LIST_LIMIT = 1.0
ONE_STEP = """
from treadle import WorkflowEntrypoint

class One(WorkflowEntrypoint):
    def run(self, event, step):
        return step.do("one", lambda: event.payload["x"] + 1)
"""


class Server:
    """``treadle serve`` on ``database_url`` (its log in ``tmp``), and an admin client of it."""

    def __init__(self, database_url: str, tmp: Path, env: dict[str, str] | None = None) -> None:
        env = {"TREADLE_ADMIN_TOKEN": ADMIN_TOKEN, **(env or {})}
        self.process = TreadleProcess(database_url, tmp, env=env)
        self.process.start()
        self.base = self.process.base
        self.http = httpx.Client(base_url=self.base, timeout=30)
        self.clients: list[httpx.Client] = [self.http]  # closed with the server

    @property
    def log(self) -> str:
        return self.process.log_path.read_text(errors="replace")

    def tenant(self, name: str, **policy: Any) -> dict[str, str]:
        """A new tenant with an API key: the headers that authenticate as it."""
        reply = self.http.post(
            "/v1/admin/tenants", json={"name": name, "policy": policy}, headers=ADMIN
        )
        assert reply.status_code == 201, reply.text
        key = self.http.post(f"/v1/admin/tenants/{name}/keys", headers=ADMIN)
        assert key.status_code == 201, key.text
        return bearer(key.json()["key"])

    def deploy(self, headers: dict[str, str], name: str, source: str) -> None:
        body = {"source": textwrap.dedent(source), "sandbox": "restricted"}
        reply = self.http.put(f"/v1/workflows/{name}", json=body, headers=headers)
        assert reply.status_code == 201, reply.text

    def wait_status(
        self, headers: dict[str, str], path: str, statuses: tuple[str, ...], timeout: float = 30
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            instance = self.http.get(path, headers=headers).json()
            if instance.get("status") in statuses:
                return instance
            assert time.monotonic() < deadline, f"still {instance.get('status')}: {instance}"
            time.sleep(0.05)

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.process.stop()


@contextlib.contextmanager
def serve(database_url: str, tmp: Path, env: dict[str, str] | None = None) -> Iterator[Server]:
    server = Server(database_url, tmp, env)
    try:
        yield server
    finally:
        server.close()


@dataclass
class Latency:
    """The victim's worst figures over a number of probes, and any failure seen."""

    runs: list[float] = field(default_factory=list)
    lists: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def run(self) -> float:
        return max(self.runs, default=float("nan"))

    @property
    def list(self) -> float:
        return max(self.lists, default=float("nan"))


class Victim:
    """A tenant that minds its own business: one one-step workflow, run and listed."""

    def __init__(self, server: Server, name: str = "victim") -> None:
        self.server = server
        self.headers = server.tenant(name)
        server.deploy(self.headers, "one", ONE_STEP)
        # Its own connection: the attack may hold the server's others.
        self._http = httpx.Client(base_url=server.base, timeout=60)
        server.clients.append(self._http)
        self._count = 0
        self.probe(Latency())  # warm: the first run loads the code into a worker

    def probe(self, into: Latency) -> None:
        """One run to completion and one list, timed, into ``into``."""
        self._count += 1
        instance_id = f"v{self._count}"
        started = time.monotonic()
        try:
            reply = self._http.post(
                "/v1/workflows/one/instances",
                json={"id": instance_id, "params": {"x": 1}},
                headers=self.headers,
            )
            if reply.status_code != 201:
                into.failures.append(f"create answered {reply.status_code}: {reply.text[:300]}")
                return
            path = f"/v1/workflows/one/instances/{instance_id}"
            while True:
                instance = self._http.get(path, headers=self.headers).json()
                if instance.get("status") == "complete":
                    break
                if instance.get("status") in ("errored", "terminated"):
                    into.failures.append(f"the victim's run ended {instance.get('status')}")
                    return
                if time.monotonic() - started > 60:
                    into.failures.append("the victim's run did not complete in 60 s")
                    return
                time.sleep(0.02)
            into.runs.append(time.monotonic() - started)
            started = time.monotonic()
            listed = self._http.get("/v1/workflows", headers=self.headers)
            if listed.status_code != 200:
                into.failures.append(f"GET /v1/workflows answered {listed.status_code}")
                return
            into.lists.append(time.monotonic() - started)
        except httpx.HTTPError as exc:
            into.failures.append(f"{type(exc).__name__}: {exc}")

    def baseline(self, probes: int = 3) -> Latency:
        latency = Latency()
        for _ in range(probes):
            self.probe(latency)
        return latency

    @contextlib.contextmanager
    def watching(self, interval: float = 0.2) -> Iterator[Latency]:
        """Probe again and again, on a thread of its own, for as long as the block runs."""
        latency, stop = Latency(), threading.Event()

        def loop() -> None:
            while not stop.is_set():
                self.probe(latency)
                stop.wait(interval)

        thread = threading.Thread(target=loop, name="victim", daemon=True)
        thread.start()
        try:
            yield latency
        finally:
            stop.set()
            thread.join(90)


def assert_unharmed(latency: Latency, *, probes: int = 1) -> None:
    """What the victim must see while an attack runs."""
    assert not latency.failures, latency.failures
    assert len(latency.runs) >= probes, f"only {len(latency.runs)} victim runs: {latency}"
    assert latency.run <= RUN_LIMIT, f"the victim's run took {latency.run:.2f} s: {latency.runs}"
    assert latency.list <= LIST_LIMIT, f"its list took {latency.list:.2f} s: {latency.lists}"


def report(scenario: str, database_url: str, before: Latency, during: Latency) -> None:
    """Append the scenario's figures to ``TREADLE_HOSTILE_REPORT``, if it is set."""
    path = os.environ.get("TREADLE_HOSTILE_REPORT")
    if not path:
        return
    line = {
        "scenario": scenario,
        "database": "postgresql" if database_url.startswith("postgresql") else "sqlite",
        "before": {"run": before.run, "list": before.list},
        "during": {"run": during.run, "list": during.list, "probes": len(during.runs)},
    }
    with open(path, "a") as out:
        out.write(json.dumps(line) + "\n")


def assert_quiet_log(server: Server, *, max_bytes: int = 200_000) -> None:
    """The server did not answer 500 or log a traceback in a loop."""
    log = server.log
    assert len(log) <= max_bytes, f"the server logged {len(log)} bytes"
    at = log.find("Traceback")
    assert at < 0, log[max(0, at - 1000) : at + 4000]
