"""The admin API and credentials (docs/api.md), on both databases."""

from __future__ import annotations

import re

import pytest
from httpx import Client

from dispatcher import Platform
from storage import ManualClock
from tenants import TenantStore
from tests.integration.app import ADMIN, bearer, new_tenant

DEFAULTS = {
    "sandboxes": ["restricted", "wasm"],
    "max_running_instances": 1000,
    "max_queued_instances": 2000000,
    "creates_per_second": 300,
    "step_cpu_ms": 30000,
    "memory_mb": 256,
    "max_step_result_bytes": 1048576,
    "max_steps_per_instance": 10000,
    "egress_allow": [],
    "retention_days": 7,
    "max_storage_mb": 1024,
    "max_log_bytes_per_instance": 1048576,
    "vars": {},
}


def test_a_tenant_is_created_with_the_default_policy_and_can_be_read(client: Client) -> None:
    reply = client.post("/v1/admin/tenants", json={"name": "acme"}, headers=ADMIN)
    assert reply.status_code == 201
    tenant = reply.json()
    assert tenant["name"] == "acme" and tenant["policy"] == DEFAULTS
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", tenant["created_at"])
    assert client.get("/v1/admin/tenants/acme", headers=ADMIN).json() == tenant
    listed = client.get("/v1/admin/tenants", headers=ADMIN).json()["tenants"]
    assert [t["name"] for t in listed] == ["acme"]


def test_a_policy_given_at_creation_fills_in_the_rest_with_defaults(client: Client) -> None:
    body = {"name": "small", "policy": {"memory_mb": 64, "egress_allow": ["API.example.com"]}}
    policy = client.post("/v1/admin/tenants", json=body, headers=ADMIN).json()["policy"]
    assert policy == {**DEFAULTS, "memory_mb": 64, "egress_allow": ["api.example.com"]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "bad name"}, "tenant name"),
        ({"name": "x" * 65}, "tenant name"),
        ({"name": "-dash"}, "tenant name"),
        ({"name": "ok\n"}, "tenant name"),
        ({}, "name: Field required"),
        ({"name": 5}, "name: Input should be a valid string"),
        ({"name": "t", "extra": 1}, "extra: unknown field"),
        ({"name": "t", "policy": {"memroy_mb": 1}}, "policy.memroy_mb: unknown field"),
        ({"name": "t", "policy": {"memory_mb": "256"}}, "policy.memory_mb"),
        ({"name": "t", "policy": {"memory_mb": 1}}, "greater than or equal to 64"),
        ({"name": "t", "policy": {"sandboxes": ["docker"]}}, "policy.sandboxes.0"),
        ({"name": "t", "policy": {"egress_allow": ["not a host"]}}, "not a host name"),
    ],
)
def test_invalid_tenants_are_refused_with_a_clear_400(
    client: Client, body: dict[str, object], message: str
) -> None:
    reply = client.post("/v1/admin/tenants", json=body, headers=ADMIN)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["code"] in ("request.invalid", "tenant.invalid_name")
    assert message in error["message"]


def test_malformed_json_is_a_400(client: Client) -> None:
    reply = client.post("/v1/admin/tenants", content=b"{nope", headers=ADMIN)
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "request.json"


def test_a_duplicate_tenant_is_a_409(client: Client) -> None:
    client.post("/v1/admin/tenants", json={"name": "acme"}, headers=ADMIN)
    reply = client.post("/v1/admin/tenants", json={"name": "acme"}, headers=ADMIN)
    assert reply.status_code == 409
    assert reply.json()["error"]["code"] == "tenant.already_exists"


def test_an_unknown_tenant_is_a_404(client: Client) -> None:
    for method, path in [
        ("GET", "/v1/admin/tenants/ghost"),
        ("PATCH", "/v1/admin/tenants/ghost/policy"),
        ("POST", "/v1/admin/tenants/ghost/keys"),
        ("DELETE", "/v1/admin/tenants/ghost/keys/abc"),
    ]:
        reply = client.request(method, path, json={}, headers=ADMIN)
        assert reply.status_code == 404, (method, path, reply.text)
        assert reply.json()["error"]["code"] == "tenant.not_found" or method == "DELETE"


def test_a_policy_patch_merges_and_returns_the_whole_policy(client: Client) -> None:
    client.post("/v1/admin/tenants", json={"name": "acme"}, headers=ADMIN)
    path = "/v1/admin/tenants/acme/policy"
    first = client.patch(path, json={"memory_mb": 128, "vars": {"region": "eu"}}, headers=ADMIN)
    assert first.status_code == 200
    assert first.json() == {**DEFAULTS, "memory_mb": 128, "vars": {"region": "eu"}}
    second = client.patch(path, json={"sandboxes": ["restricted"]}, headers=ADMIN).json()
    assert second == {**first.json(), "sandboxes": ["restricted"]}
    assert client.get("/v1/admin/tenants/acme", headers=ADMIN).json()["policy"] == second


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"nope": 1}, "nope: unknown field"),
        ({"step_cpu_ms": 0}, "step_cpu_ms"),
        ({"vars": []}, "vars"),
        ([1, 2], "should be an object"),
    ],
)
def test_an_invalid_policy_patch_changes_nothing(
    client: Client, patch: object, message: str
) -> None:
    client.post("/v1/admin/tenants", json={"name": "acme"}, headers=ADMIN)
    reply = client.patch("/v1/admin/tenants/acme/policy", json=patch, headers=ADMIN)
    assert reply.status_code == 400 and message in reply.json()["error"]["message"], reply.text
    assert client.get("/v1/admin/tenants/acme", headers=ADMIN).json()["policy"] == DEFAULTS


def test_admin_routes_need_the_admin_token(client: Client) -> None:
    tenant_key = new_tenant(client, "acme")
    for headers in [{}, bearer("wrong"), {"Authorization": "Basic abc"}, tenant_key]:
        reply = client.get("/v1/admin/tenants", headers=headers)
        assert reply.status_code == 401, headers
        assert reply.json()["error"]["code"] == "auth.unauthorized"
        assert reply.headers["www-authenticate"] == "Bearer"


def test_an_api_key_works_until_it_is_deleted(client: Client) -> None:
    client.post("/v1/admin/tenants", json={"name": "acme"}, headers=ADMIN)
    created = client.post("/v1/admin/tenants/acme/keys", headers=ADMIN)
    assert created.status_code == 201
    key_id, key = created.json()["id"], created.json()["key"]
    assert key.startswith(f"tdl_{key_id}_")
    assert client.get("/v1/workflows", headers=bearer(key)).status_code == 200
    assert client.delete(f"/v1/admin/tenants/acme/keys/{key_id}", headers=ADMIN).status_code == 204
    reply = client.get("/v1/workflows", headers=bearer(key))
    assert reply.status_code == 401
    again = client.delete(f"/v1/admin/tenants/acme/keys/{key_id}", headers=ADMIN)
    assert again.status_code == 404 and again.json()["error"]["code"] == "key.not_found"


def test_a_key_is_deleted_only_through_its_own_tenant(client: Client) -> None:
    new_tenant(client, "other")
    client.post("/v1/admin/tenants", json={"name": "acme"}, headers=ADMIN)
    created = client.post("/v1/admin/tenants/acme/keys", headers=ADMIN).json()
    reply = client.delete(f"/v1/admin/tenants/other/keys/{created['id']}", headers=ADMIN)
    assert reply.status_code == 404
    assert client.get("/v1/workflows", headers=bearer(created["key"])).status_code == 200


def test_a_tampered_key_is_refused(client: Client) -> None:
    key = new_tenant(client, "acme")["Authorization"].removeprefix("Bearer ")
    for wrong in [key[:-1] + ("A" if key[-1] != "A" else "B"), key + "x", "tdl_", "tdl_x", key[4:]]:
        assert client.get("/v1/workflows", headers=bearer(wrong)).status_code == 401, wrong


def test_a_deleted_key_stops_working_in_every_process(platform: Platform) -> None:
    other_process = TenantStore(platform.db, platform.clock)
    platform.tenants.create_tenant("acme")
    key = platform.tenants.create_key("acme")
    assert other_process.authenticate(key["key"]).tenant_name == "acme"
    platform.tenants.delete_key("acme", key["id"])
    with pytest.raises(Exception, match="invalid API key"):
        other_process.authenticate(key["key"])


def test_key_use_is_recorded_at_most_once_a_minute(platform: Platform) -> None:
    clock = ManualClock()
    store = TenantStore(platform.db, clock)
    store.create_tenant("acme")
    key = store.create_key("acme")
    commits = platform.db.commits
    for _ in range(5):
        store.authenticate(key["key"])
    assert platform.db.commits == commits + 1
    clock.advance(61)
    store.authenticate(key["key"])
    assert platform.db.commits == commits + 2


def test_a_policy_change_reaches_other_processes_within_a_second(platform: Platform) -> None:
    clock = ManualClock()
    engine_side = TenantStore(platform.db, clock, policy_ttl=1.0)
    tenant = platform.tenants.create_tenant("acme")
    assert engine_side.policy(tenant.id).memory_mb == 256
    platform.tenants.update_policy("acme", {"memory_mb": 512})
    assert platform.tenants.policy(tenant.id).memory_mb == 512  # this process: at once
    clock.advance(1.01)
    assert engine_side.policy(tenant.id).memory_mb == 512
    assert engine_side.name(tenant.id) == "acme"


def test_the_first_start_makes_an_admin_token_a_default_tenant_and_key_once(
    platform: Platform,
) -> None:
    store = TenantStore(platform.db, platform.clock)  # no TREADLE_ADMIN_TOKEN
    made = store.bootstrap()
    assert made is not None and made.tenant == "default"
    assert store.bootstrap() is None
    store.verify_admin(made.admin_token)
    assert store.authenticate(made.api_key).tenant_name == "default"
    with pytest.raises(Exception, match="invalid admin token"):
        store.verify_admin(made.admin_token + "x")
    configured = TenantStore(platform.db, platform.clock, admin_token="chosen")
    configured.verify_admin("chosen")
    with pytest.raises(Exception, match="invalid admin token"):
        configured.verify_admin(made.admin_token)  # the configured token replaces it
