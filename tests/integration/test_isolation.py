"""Two tenants through the HTTP API: neither reaches the other's objects, and one's code cannot
read the other's vars, code or data, nor the platform's secrets or files (issue 5, item 3).

Tenant A ("acme") keeps a secret in its vars, in its source and in a step result, and has a
live instance waiting for an event. Tenant B ("mallory") calls every tenant endpoint on A's
objects (404, nothing changed), then runs workflows on both Python backends that try every
path they can reach. Sandbox worker processes are watched through the pool meanwhile: no
process ever serves both tenants.
"""

from __future__ import annotations

import contextlib
import json
import os
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from httpx import Client

from dispatcher import Platform
from tests.integration.app import ADMIN_TOKEN, new_tenant, wait_status
from tests.wasm_guests import python_runtime

VAR_SECRET = "acme-var-7f3a"
SOURCE_SECRET = "acme-source-91c2"
STEP_SECRET = "acme-step-44d0"
ENV_SECRETS = {
    "TREADLE_ADMIN_TOKEN": "env-admin-token-5b1e",
    "TREADLE_DATABASE_URL": "postgresql://env-secret-url-0c7d@db/treadle",
}
LEDGER = f"""
from treadle import WorkflowEntrypoint

# {SOURCE_SECRET}
class Ledger(WorkflowEntrypoint):
    def run(self, event, step):
        kept = step.do("keep", lambda: "{STEP_SECRET}")
        got = step.wait_for_event("approval", type="approved", timeout="1 hour")
        return {{"kept": kept, "by": got["payload"]["by"]}}
"""
W = "/v1/workflows"
A_INSTANCE = f"{W}/ledger/instances/a1"


@pytest.fixture
def platform_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The secrets a server keeps in its environment; set before the platform starts."""
    for name, value in ENV_SECRETS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def acme(platform_secrets: None, client: Client) -> Iterator[dict[str, str]]:
    headers = new_tenant(client, "acme", vars={"api_key": VAR_SECRET})
    body = {"source": textwrap.dedent(LEDGER), "sandbox": "restricted"}
    assert client.put(f"{W}/ledger", json=body, headers=headers).status_code == 201
    reply = client.post(f"{W}/ledger/instances", json={"id": "a1"}, headers=headers)
    assert reply.status_code == 201
    wait_status(client, headers, A_INSTANCE, "waiting")
    yield headers


@pytest.fixture
def mallory(client: Client, acme: dict[str, str]) -> dict[str, str]:
    return new_tenant(client, "mallory", egress_allow=["*"])


def _snapshot(client: Client, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "workflows": client.get(W, headers=headers).json(),
        "workflow": client.get(f"{W}/ledger", headers=headers).json(),
        "instances": client.get(f"{W}/ledger/instances", headers=headers).json(),
        "instance": client.get(A_INSTANCE, headers=headers).json(),
        "logs": client.get(f"{A_INSTANCE}/logs", headers=headers).json(),
    }


def _not_found(reply: Any) -> None:
    assert reply.status_code == 404, (reply.request.method, reply.request.url, reply.text)
    assert reply.json()["error"]["code"].endswith("not_found"), reply.text


def test_every_tenant_endpoint_answers_404_for_the_other_tenants_objects(
    client: Client, acme: dict[str, str], mallory: dict[str, str]
) -> None:
    before = _snapshot(client, acme)
    calls = [
        ("GET", f"{W}/ledger", None),
        ("DELETE", f"{W}/ledger", None),
        ("GET", f"{W}/ledger/instances", None),
        ("POST", f"{W}/ledger/instances", {"id": "m1"}),
        ("POST", f"{W}/ledger/instances/batch", {"instances": [{"id": "m2"}]}),
        ("GET", A_INSTANCE, None),
        ("GET", f"{A_INSTANCE}/logs", None),
        ("GET", f"{A_INSTANCE}/stream", None),
        ("POST", f"{A_INSTANCE}/events/approved", {"by": "mallory"}),
        ("PATCH", f"{A_INSTANCE}/status", {"status": "terminate"}),
        ("PATCH", f"{A_INSTANCE}/status", {"status": "pause"}),
        ("PATCH", f"{A_INSTANCE}/status", {"status": "restart"}),
        ("DELETE", A_INSTANCE, None),
    ]
    for method, path, body in calls:
        _not_found(client.request(method, path, json=body, headers=mallory))
    assert client.get(W, headers=mallory).json() == {"workflows": []}
    assert _snapshot(client, acme) == before  # nothing changed, nothing created
    # A's instance still takes A's event, and only A's.
    assert client.post(f"{A_INSTANCE}/events/approved", json={"by": "acme"}, headers=acme)
    done = wait_status(client, acme, A_INSTANCE, "complete")
    assert done["output"] == {"kept": STEP_SECRET, "by": "acme"}


def test_the_same_names_are_separate_per_tenant(
    client: Client, acme: dict[str, str], mallory: dict[str, str]
) -> None:
    """B may use A's workflow name and instance ids: B's own, with no hint of A's."""
    version = client.get(f"{W}/ledger", headers=acme).json()["version"]
    own = 'from treadle import WorkflowEntrypoint\n\nclass Own(WorkflowEntrypoint):\n' \
          '    def run(self, event, step):\n        return "mallory"\n'  # fmt: skip
    reply = client.put(
        f"{W}/ledger", json={"source": own, "sandbox": "restricted"}, headers=mallory
    )
    assert reply.status_code == 201 and reply.json()["version"] != version
    assert (
        client.post(f"{W}/ledger/instances", json={"id": "a1"}, headers=mallory).status_code == 201
    )
    batch = client.post(f"{W}/ledger/instances/batch", json={"instances": [{"id": "a2"}]},
                        headers=mallory).json()  # fmt: skip
    assert [c["id"] for c in batch["created"]] == ["a2"] and batch["errors"] == []
    assert wait_status(client, mallory, A_INSTANCE, "complete")["output"] == "mallory"
    ids = [
        i["id"] for i in client.get(f"{W}/ledger/instances", headers=mallory).json()["instances"]
    ]
    assert sorted(ids) == ["a1", "a2"]
    mine = client.get(A_INSTANCE, headers=acme).json()
    assert mine["status"] == "waiting" and mine["version"] == version
    assert client.get(f"{W}/ledger", headers=acme).json()["version"] == version
    listed = client.get(f"{W}/ledger/instances", headers=acme).json()["instances"]
    assert [i["id"] for i in listed] == ["a1"]
    assert client.delete(f"{W}/ledger", headers=mallory).status_code == 204
    assert client.get(A_INSTANCE, headers=acme).json()["status"] == "waiting"


RESTRICTED_PROBER = """
from treadle import WorkflowEntrypoint, StepError

class Prober(WorkflowEntrypoint):
    def run(self, event, step):
        found = {}

        def attempt(name, fn):
            try:
                found[name] = fn()
            except Exception as exc:
                found[name] = "refused"

        attempt("vars", lambda: dict(self.env.vars))
        attempt("format globals", lambda: "{0.__init__.__globals__}".format(step))
        attempt("step internals", lambda: getattr(step, "_replay"))
        attempt("env internals", lambda: getattr(self.env, "_replay"))
        attempt("open", lambda: open(event.payload["paths"][0]).read())
        try:
            found["A's workflow as a child"] = self.env.workflows.create("ledger").id
        except StepError as exc:
            found["A's workflow as a child"] = [exc.name, str(exc)]
        for url in event.payload["urls"]:
            try:
                found[url] = step.do(url, lambda: self.env.fetch(url).text, retries={"limit": 0})
            except StepError as exc:
                found[url] = exc.name
        return found
"""

WASM_PROBER = """
import gc, json, os, sys
from treadle import WorkflowEntrypoint, StepError

class Prober(WorkflowEntrypoint):
    def run(self, event, step):
        found = {}

        def attempt(name, fn):
            try:
                found[name] = repr(fn())[:4000]
            except BaseException as exc:
                found[name] = type(exc).__name__

        for path in event.payload["paths"]:
            attempt("open " + path, lambda: open(path, "rb").read(4096))
        attempt("environ", lambda: dict(os.environ))
        attempt("listdir /", lambda: os.listdir("/"))
        attempt("cwd", lambda: os.getcwd())
        attempt("vars", lambda: dict(self.env.vars))
        attempt("argv", lambda: sys.argv)
        # A's secrets come reversed, so that the search does not find its own needles.
        needles = [text[::-1] for text in event.payload["reversed"]]
        attempt("heap", lambda: [v for o in gc.get_objects() if isinstance(o, dict)
                for v in o.values() if isinstance(v, str) and any(n in v for n in needles)])
        try:
            found["A's workflow as a child"] = self.env.workflows.create("ledger").id
        except StepError as exc:
            found["A's workflow as a child"] = [exc.name, str(exc)]
        for url in event.payload["urls"]:
            try:
                found[url] = step.do(url, lambda: self.env.fetch(url).text, retries={"limit": 0})
            except StepError as exc:
                found[url] = exc.name
        return found
"""


def test_a_tenants_code_reaches_nothing_of_the_other_tenant_nor_of_the_platform(
    client: Client, platform: Platform, database_url: str, mallory: dict[str, str]
) -> None:
    python_runtime()
    base = str(client.base_url).rstrip("/")
    # The SQLite file of this platform (PostgreSQL's files belong to its server).
    database_files = [database_url.removeprefix("sqlite:///")] if "sqlite" in database_url else []
    paths = [
        *database_files, "treadle.db", str(Path.cwd() / "pyproject.toml"),
        f"/proc/{os.getpid()}/environ", "/proc/1/environ", "/proc/self/environ", "/etc/shadow",
    ]  # fmt: skip
    urls = [f"{base}/v1/admin/tenants", f"{base}/v1/workflows/ledger", "http://169.254.169.254/"]
    reversed_secrets = [s[::-1] for s in (VAR_SECRET, SOURCE_SECRET, STEP_SECRET)]
    params = {"paths": paths, "urls": urls, "reversed": reversed_secrets}
    outputs = {}
    for sandbox, source in (("restricted", RESTRICTED_PROBER), ("wasm", WASM_PROBER)):
        body = {"source": textwrap.dedent(source), "sandbox": sandbox}
        assert client.put(f"{W}/probe-{sandbox}", json=body, headers=mallory).status_code == 201
        path = f"{W}/probe-{sandbox}/instances/p1"
        reply = client.post(f"{W}/probe-{sandbox}/instances", json={"id": "p1", "params": params},
                            headers=mallory)  # fmt: skip
        assert reply.status_code == 201, reply.text
        done = wait_status(client, mallory, path, "complete")
        logs = client.get(f"{path}/logs", headers=mallory).json()
        outputs[sandbox] = done["output"]
        shown = json.dumps([done["output"], done["steps"], logs])
        secrets = [VAR_SECRET, SOURCE_SECRET, STEP_SECRET, ADMIN_TOKEN, *ENV_SECRETS.values()]
        if database_url.startswith("postgresql"):
            secrets.append(database_url)
        assert [s for s in secrets if s in shown] == [], shown
    restricted, wasm = outputs["restricted"], outputs["wasm"]
    assert restricted["vars"] == {} and "vars" in wasm and wasm["vars"] == "{}"
    for name in ("format globals", "step internals", "env internals", "open"):
        assert restricted[name] == "refused"
    assert wasm["environ"] == "{}" and wasm["argv"] == "[]" and wasm["heap"] == "[]"
    assert wasm["listdir /"] == "FileNotFoundError"
    assert all(wasm[f"open {p}"] in ("FileNotFoundError", "PermissionError") for p in paths)
    for found in (restricted, wasm):
        name, message = found["A's workflow as a child"]
        assert (name, message) == ("NonRetryableError", "workflow 'ledger' not found"), found
        # "*" allows public hosts only: the platform's own API and the metadata address are not.
        assert [found[url] for url in urls] == ["EgressDenied"] * 3, found
    assert client.get(f"{W}/ledger/instances", headers=mallory).status_code == 404


def test_sandbox_workers_never_serve_two_tenants(
    client: Client,
    platform: Platform,
    acme: dict[str, str],
    mallory: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Five tenants' uploads and instances at once, more than the pool holds (4 processes, 2
    per tenant): workers are evicted and spawned, and no pid ever serves a second tenant."""
    served: dict[int, set[str]] = {}
    lock = threading.Lock()
    hand_out = platform.pool._worker  # white-box: every worker the pool hands out, and to whom

    @contextlib.contextmanager
    def recorded(tenant: str, limits: Any) -> Iterator[Any]:
        with hand_out(tenant, limits) as worker:
            with lock:
                served.setdefault(worker.pid, set()).add(tenant)
            yield worker

    monkeypatch.setattr(platform.pool, "_worker", recorded)
    tenants = {"acme": acme, "mallory": mallory}
    tenants |= {name: new_tenant(client, name) for name in ("t3", "t4", "t5")}
    quick = 'from treadle import WorkflowEntrypoint\n\nclass Quick(WorkflowEntrypoint):\n' \
            '    def run(self, event, step):\n        return step.do("a", lambda: 1)\n'  # fmt: skip
    for headers in tenants.values():
        body = {"source": quick, "sandbox": "restricted"}
        assert client.put(f"{W}/quick", json=body, headers=headers).status_code == 201
    for round_ in range(4):
        for headers in tenants.values():
            batch = {"instances": [{"id": f"q{round_}-{i}"} for i in range(4)]}
            client.post(f"{W}/quick/instances/batch", json=batch, headers=headers)
    for headers in tenants.values():
        for round_ in range(4):
            for i in range(4):
                wait_status(client, headers, f"{W}/quick/instances/q{round_}-{i}", "complete")
    assert {t for ts in served.values() for t in ts} == set(tenants)
    assert len(served) >= len(tenants) > 4  # a worker per tenant at least: some were evicted
    assert {pid: ts for pid, ts in served.items() if len(ts) > 1} == {}
