"""Start a real `treadle serve` on a fresh database for a benchmark, and talk to it."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families

PG_ADMIN_URL = os.environ.get(
    "TREADLE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
ADMIN_TOKEN = "bench-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def fresh_database(backend: str) -> Iterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/bench.db"
        return
    name = f"treadle_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def serve(database_url: str, *extra: str) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "TREADLE_ADMIN_TOKEN": ADMIN_TOKEN}
    command = [sys.executable, "-m", "dispatcher", "serve", "--port", str(port)]
    command += ["--database-url", database_url, *extra]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("treadle serve did not become healthy")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def tenant_client(base: str, name: str = "bench", **policy: Any) -> httpx.Client:
    """A client of a new tenant ``name`` with ``policy``, made through the admin API."""
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
        admin.post("/v1/admin/tenants", json={"name": name, "policy": policy}).raise_for_status()
        key = admin.post(f"/v1/admin/tenants/{name}/keys").json()["key"]
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def post_all(
    base: str,
    headers: dict[str, str],
    requests: list[tuple[str, Any]],
    clients: int,
    rate: float | None = None,
) -> list[tuple[float, httpx.Response]]:
    """Send the POSTs ``requests`` ((path, JSON body) each) from ``clients`` threads, each
    sending its next as soon as the previous is answered (and, with ``rate``, no sooner than
    its turn at that many a second); each one's time and response."""
    pending = list(reversed(requests))
    began = time.perf_counter()
    turn = [0]
    done: list[tuple[float, httpx.Response]] = []
    lock = threading.Lock()

    def send() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
            while True:
                with lock:
                    if not pending:
                        return
                    path, body = pending.pop()
                    due = began + turn[0] / rate if rate else 0.0
                    turn[0] += 1
                time.sleep(max(0.0, due - time.perf_counter()))
                sent = time.perf_counter()
                reply = http.post(path, json=body)
                with lock:
                    done.append((time.perf_counter() - sent, reply))

    threads = [threading.Thread(target=send) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done


def metric(base: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
    reply = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    total = 0.0
    for family in text_string_to_metric_families(reply.raise_for_status().text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total
