"""The workflow code API (docs/api.md): upload, validate, version, list, delete."""

from __future__ import annotations

import textwrap

import pytest
from httpx import Client

from dispatcher import Platform
from loader import content_version
from tests.integration.app import ADMIN, SUM, deploy, new_tenant


@pytest.fixture
def acme(client: Client) -> dict[str, str]:
    return new_tenant(client, "acme")


def test_uploaded_code_gets_a_content_version_and_becomes_current(
    client: Client, acme: dict[str, str]
) -> None:
    body = {"source": SUM, "sandbox": "restricted"}
    reply = client.put("/v1/workflows/sum", json=body, headers=acme)
    assert reply.status_code == 201, reply.text
    stored = reply.json()
    assert stored == {
        "name": "sum",
        "version": content_version("restricted", None, SUM),
        "sandbox": "restricted",
        "flow": None,
    }
    workflow = client.get("/v1/workflows/sum", headers=acme).json()
    assert (workflow["name"], workflow["version"], workflow["sandbox"]) == (
        "sum",
        stored["version"],
        "restricted",
    )
    assert [v["version"] for v in workflow["versions"]] == [stored["version"]]
    assert workflow["versions"][0]["class_name"] == "Sum"


def test_uploading_the_same_code_again_is_idempotent(client: Client, acme: dict[str, str]) -> None:
    first = deploy(client, acme, "sum", SUM)
    assert deploy(client, acme, "sum", SUM) == first
    assert len(client.get("/v1/workflows/sum", headers=acme).json()["versions"]) == 1


def test_new_code_is_a_new_version_and_old_versions_are_kept(
    client: Client, acme: dict[str, str]
) -> None:
    first = deploy(client, acme, "sum", SUM)
    second = deploy(client, acme, "sum", SUM + "\n# changed\n")
    assert first != second
    workflow = client.get("/v1/workflows/sum", headers=acme).json()
    assert workflow["version"] == second
    assert {v["version"] for v in workflow["versions"]} == {first, second}
    listed = client.get("/v1/workflows", headers=acme).json()["workflows"]
    assert [(w["name"], w["version"], w["sandbox"]) for w in listed] == [
        ("sum", second, "restricted")
    ]


def test_invalid_code_is_a_422_with_lines_and_columns(client: Client, acme: dict[str, str]) -> None:
    source = textwrap.dedent(
        """
        from treadle import WorkflowEntrypoint

        class Broken(WorkflowEntrypoint):
            def run(self, event, step)
                return 1
        """
    )
    reply = client.put(
        "/v1/workflows/broken", json={"source": source, "sandbox": "restricted"}, headers=acme
    )
    assert reply.status_code == 422, reply.text
    error = reply.json()["error"]
    assert error["code"] == "code.invalid" and error["message"]
    assert error["problems"] and error["problems"][0]["line"] == 5
    assert {"line", "column", "message"} <= set(error["problems"][0])
    assert client.get("/v1/workflows/broken", headers=acme).status_code == 404


def test_a_forbidden_import_is_reported_on_its_line(client: Client, acme: dict[str, str]) -> None:
    source = SUM.replace("from treadle", "import os\nfrom treadle")
    body = {"source": source, "sandbox": "restricted"}
    reply = client.put("/v1/workflows/sneaky", json=body, headers=acme)
    assert reply.status_code == 422
    problems = reply.json()["error"]["problems"]
    assert [(p["line"], "'os'" in p["message"]) for p in problems] == [(2, True)]


def test_a_sandbox_the_policy_does_not_allow_is_refused(client: Client) -> None:
    only_wasm = new_tenant(client, "wasmy", sandboxes=["wasm"])
    reply = client.put(
        "/v1/workflows/sum", json={"source": SUM, "sandbox": "restricted"}, headers=only_wasm
    )
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "sandbox.not_allowed"
    assert "restricted" in reply.json()["error"]["message"]


def test_a_wasm_module_without_the_abi_is_a_422(client: Client, acme: dict[str, str]) -> None:
    body = {"wasm_base64": "AGFzbQEAAAA=", "sandbox": "wasm"}  # an empty module
    reply = client.put("/v1/workflows/mod", json=body, headers=acme)
    assert reply.status_code == 422
    error = reply.json()["error"]
    assert error["code"] == "code.invalid"
    assert "the module must export its linear memory as 'memory'" in [
        p["message"] for p in error["problems"]
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"sandbox": "restricted"}, 'exactly one of "source" and "wasm_base64"'),
        ({"source": SUM}, "sandbox: Field required"),
        ({"source": SUM, "sandbox": "docker"}, "sandbox: Input should be"),
        ({"source": 42, "sandbox": "restricted"}, "source: Input should be a valid string"),
        ({"source": SUM, "sandbox": "restricted", "x": 1}, "x: unknown field"),
        ({"source": SUM, "sandbox": "restricted", "class_name": "no such"}, "class_name"),
        ({"wasm_base64": "AA==", "sandbox": "restricted"}, '"wasm_base64" needs'),
    ],
)
def test_a_malformed_upload_is_a_400(
    client: Client, acme: dict[str, str], body: dict[str, object], message: str
) -> None:
    reply = client.put("/v1/workflows/sum", json=body, headers=acme)
    assert reply.status_code == 400, reply.text
    assert message in reply.json()["error"]["message"]


@pytest.mark.parametrize("name", ["bad name", "-x", "x" * 65, "a.b"])
def test_a_bad_workflow_name_is_a_400(client: Client, acme: dict[str, str], name: str) -> None:
    reply = client.put(
        f"/v1/workflows/{name}", json={"source": SUM, "sandbox": "restricted"}, headers=acme
    )
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "workflow.invalid_name"


def test_source_over_the_limit_is_a_413(client: Client, acme: dict[str, str]) -> None:
    source = SUM + "#" * (1024 * 1024)
    reply = client.put(
        "/v1/workflows/big", json={"source": source, "sandbox": "restricted"}, headers=acme
    )
    assert reply.status_code == 413


def test_a_body_over_the_cap_is_a_413_before_it_is_read(
    client: Client, acme: dict[str, str]
) -> None:
    reply = client.put("/v1/workflows/big", content=b"x" * (11 * 1024 * 1024), headers=acme)
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == "request.too_large"


def test_another_tenants_workflow_is_not_found(client: Client, acme: dict[str, str]) -> None:
    deploy(client, acme, "sum", SUM)
    other = new_tenant(client, "other")
    assert client.get("/v1/workflows/sum", headers=other).status_code == 404
    assert client.delete("/v1/workflows/sum", headers=other).status_code == 404
    assert client.get("/v1/workflows", headers=other).json() == {"workflows": []}
    assert client.get("/v1/workflows/sum", headers=acme).status_code == 200


def test_deleting_a_workflow_deletes_its_code_and_instances(
    client: Client, acme: dict[str, str], platform: Platform
) -> None:
    version = deploy(client, acme, "sum", SUM)
    created = client.post("/v1/workflows/sum/instances", json={"id": "i1"}, headers=acme)
    assert created.status_code == 201
    assert client.delete("/v1/workflows/sum", headers=acme).status_code == 204
    assert client.get("/v1/workflows/sum", headers=acme).status_code == 404
    assert client.get("/v1/workflows/sum/instances/i1", headers=acme).status_code == 404
    assert client.delete("/v1/workflows/sum", headers=acme).status_code == 404
    tenant_id = platform.tenants.tenant("acme").id
    with pytest.raises(Exception, match="has no version"):
        platform.loader.artifact(tenant_id, "sum", version)
    assert deploy(client, acme, "sum", SUM) == version  # the name can be used again


def test_the_loader_hands_out_the_stored_artifact(
    client: Client, acme: dict[str, str], platform: Platform
) -> None:
    version = deploy(client, acme, "sum", SUM)
    tenant_id = platform.tenants.tenant("acme").id
    artifact = platform.loader.artifact(tenant_id, "sum", version)
    assert (artifact.version, artifact.sandbox, artifact.source) == (version, "restricted", SUM)
    assert artifact.class_name == "Sum"
    assert platform.loader.artifact(tenant_id, "sum", version) is artifact  # cached


def test_workflow_routes_need_a_tenant_key(client: Client) -> None:
    for headers in [{}, ADMIN]:
        assert client.get("/v1/workflows", headers=headers).status_code == 401
        assert client.put("/v1/workflows/x", json={}, headers=headers).status_code == 401
