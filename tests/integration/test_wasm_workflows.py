"""The wasm sandbox through the HTTP API, on SQLite and PostgreSQL: core modules (C and Zig,
compiled with Zig from PyPI) and Python source on CPython-in-Wasm, from upload to output."""

from __future__ import annotations

import base64
import textwrap

import pytest
from httpx import Client

from tests.integration.app import APPROVAL, SUM, new_tenant, wait_status
from tests.wasm_guests import conformance_module, greet_module, python_runtime

BASE = "/v1/workflows"


@pytest.fixture
def acme(client: Client) -> dict[str, str]:
    return new_tenant(client, "acme", vars={"region": "eu"})


def upload(client: Client, headers: dict[str, str], name: str, body: dict[str, str]) -> str:
    reply = client.put(f"{BASE}/{name}", json=body, headers=headers)
    assert reply.status_code == 201, reply.text
    assert reply.json()["sandbox"] == "wasm"
    return str(reply.json()["version"])


def module(wasm: bytes) -> dict[str, str]:
    return {"wasm_base64": base64.b64encode(wasm).decode(), "sandbox": "wasm"}


def logs(client: Client, headers: dict[str, str], path: str) -> list[tuple[str | None, str]]:
    lines = client.get(f"{path}/logs", headers=headers).json()["logs"]
    return [(line["step"], line["message"]) for line in lines]


def test_a_c_module_runs_to_completion(client: Client, acme: dict[str, str]) -> None:
    version = upload(client, acme, "conf", module(conformance_module()))
    workflow = client.get(f"{BASE}/conf", headers=acme).json()
    assert (workflow["sandbox"], workflow["version"]) == ("wasm", version)
    assert workflow["versions"][0]["class_name"] is None
    body = {"id": "c1", "params": {"scenario": "steps"}}
    assert client.post(f"{BASE}/conf/instances", json=body, headers=acme).status_code == 201
    done = wait_status(client, acme, f"{BASE}/conf/instances/c1", "complete")
    assert done["output"] == {"b": 42}
    assert [(s["name"], s["status"], s["output"]) for s in done["steps"]] == [
        ("a", "complete", 41),
        ("b", "complete", 42),
    ]
    assert logs(client, acme, f"{BASE}/conf/instances/c1") == [
        (None, "start"),
        ("b", "adding one to 41"),
    ]


def test_a_zig_module_sleeps_and_waits_for_an_event(client: Client, acme: dict[str, str]) -> None:
    upload(client, acme, "greet", module(greet_module()))
    body = {"id": "g1", "params": {"name": "ann"}}
    assert client.post(f"{BASE}/greet/instances", json=body, headers=acme).status_code == 201
    path = f"{BASE}/greet/instances/g1"
    waiting = wait_status(client, acme, path, "waiting")
    assert waiting["steps"][0]["output"] == "hello, ann"
    reply = client.post(f"{path}/events/approved", json={"by": "bob"}, headers=acme)
    assert reply.status_code == 202
    done = wait_status(client, acme, path, "complete")
    assert done["output"]["greeting"] == "hello, ann"
    assert done["output"]["approval"]["payload"] == {"by": "bob"}
    assert [s["type"] for s in done["steps"]] == ["do", "sleep", "wait_for_event"]


def test_python_source_runs_on_cpython_in_wasm(client: Client, acme: dict[str, str]) -> None:
    python_runtime()
    upload(client, acme, "sum", {"source": textwrap.dedent(SUM), "sandbox": "wasm"})
    body = {"id": "p1", "params": {"x": 1}}
    assert client.post(f"{BASE}/sum/instances", json=body, headers=acme).status_code == 201
    done = wait_status(client, acme, f"{BASE}/sum/instances/p1", "complete")
    assert done["output"] == {"a": 2, "vars": {"region": "eu"}}
    assert logs(client, acme, f"{BASE}/sum/instances/p1") == [(None, "a is 2")]

    upload(client, acme, "approval", {"source": textwrap.dedent(APPROVAL), "sandbox": "wasm"})
    path = f"{BASE}/approval/instances/a1"
    created = client.post(f"{BASE}/approval/instances", json={"id": "a1"}, headers=acme)
    assert created.status_code == 201
    wait_status(client, acme, path, "waiting")
    client.post(f"{path}/events/approved", json={"by": "ann"}, headers=acme)
    assert wait_status(client, acme, path, "complete")["output"] == {"by": "ann"}


def test_invalid_wasm_uploads_are_a_422(client: Client, acme: dict[str, str]) -> None:
    python_runtime()
    broken = (
        "from treadle import WorkflowEntrypoint\n\n"
        "class B(WorkflowEntrypoint):\n    def run(self, event, step)\n        pass\n"
    )
    reply = client.put(f"{BASE}/b", json={"source": broken, "sandbox": "wasm"}, headers=acme)
    assert reply.status_code == 422
    assert reply.json()["error"]["problems"][0]["line"] == 4
    reply = client.put(
        f"{BASE}/b", json={"wasm_base64": "bm90IHdhc20=", "sandbox": "wasm"}, headers=acme
    )
    assert reply.status_code == 422
    assert "not a WebAssembly module" in reply.json()["error"]["message"]
