"""The whole platform behind its HTTP API, driven through Starlette's test client."""

from __future__ import annotations

import contextlib
import socket
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import uvicorn
from starlette.types import ASGIApp

from dispatcher import Settings

FINISHED = ("complete", "errored", "terminated")
ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

SUM = """
from treadle import WorkflowEntrypoint

class Sum(WorkflowEntrypoint):
    def run(self, event, step):
        a = step.do("a", lambda: event.payload["x"] + 1)
        print("a is", a)
        return {"a": a, "vars": dict(self.env.vars)}
"""

APPROVAL = """
from treadle import WorkflowEntrypoint

class Approval(WorkflowEntrypoint):
    def run(self, event, step):
        got = step.wait_for_event("approval", type="approved", timeout="1 hour")
        return {"by": got["payload"]["by"]}
"""


def settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "admin_token": ADMIN_TOKEN,
        "workers": 4,
        "sandbox_processes": 4,
        "sandbox_per_tenant": 2,
    }
    return Settings(**{**values, **overrides})


@contextlib.contextmanager
def served(app: ASGIApp) -> Iterator[httpx.Client]:
    """``app`` behind a real uvicorn server on a free port, and a client of it.

    A real server rather than Starlette's in-process test client: requests go through the
    same HTTP parsing, lifespan and thread pool as in production.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(30)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def new_tenant(client: httpx.Client, name: str, **policy: Any) -> dict[str, str]:
    """Create a tenant with an API key; returns the headers that authenticate as it."""
    reply = client.post("/v1/admin/tenants", json={"name": name, "policy": policy}, headers=ADMIN)
    assert reply.status_code == 201, reply.text
    key = client.post(f"/v1/admin/tenants/{name}/keys", headers=ADMIN)
    assert key.status_code == 201, key.text
    return bearer(key.json()["key"])


def deploy(client: httpx.Client, headers: dict[str, str], name: str, source: str) -> str:
    body = {"source": textwrap.dedent(source), "sandbox": "restricted"}
    reply = client.put(f"/v1/workflows/{name}", json=body, headers=headers)
    assert reply.status_code == 201, reply.text
    return str(reply.json()["version"])


def wait_for(
    fetch: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool], timeout: float = 30
) -> dict[str, Any]:
    """Poll ``fetch`` until ``done`` holds for what it returns, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still not done after {timeout} s: {value}")
        time.sleep(0.02)


def wait_status(
    client: httpx.Client, headers: dict[str, str], path: str, *statuses: str
) -> dict[str, Any]:
    def reached(instance: dict[str, Any]) -> bool:
        status = instance.get("status")
        if status in FINISHED and status not in statuses:
            raise AssertionError(f"instance ended {status}, not {statuses}: {instance}")
        return status in statuses

    return wait_for(lambda: client.get(path, headers=headers).json(), reached)
