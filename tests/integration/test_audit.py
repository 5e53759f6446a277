"""The audit log of admin actions, read through the admin API, on both databases."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import sqlalchemy as sa
from httpx import Client

from dispatcher import Platform, create_app
from storage import ManualClock, encode_cursor, tables
from tests.integration.app import ADMIN, bearer, served, settings

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
SECRET = "s3cr3t-hunter2-value"


def audit(client: Client, path: str = "/v1/admin/audit", **query: Any) -> dict[str, Any]:
    reply = client.get(path, params=query, headers=ADMIN)
    assert reply.status_code == 200, reply.text
    result: dict[str, Any] = reply.json()
    return result


def entries(client: Client, **query: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = audit(client, **query)["entries"]
    return found


def test_each_admin_action_leaves_exactly_one_entry(client: Client) -> None:
    client.post("/v1/admin/tenants", json={"name": "acme"}, headers=ADMIN)
    client.patch("/v1/admin/tenants/acme/policy", json={"memory_mb": 128}, headers=ADMIN)
    first = client.post("/v1/admin/tenants/acme/keys", headers=ADMIN).json()
    path = f"/v1/admin/tenants/acme/keys/{first['id']}"
    second = client.post(path + "/rotate", json={"overlap": "1 hour"}, headers=ADMIN).json()
    client.delete(path, headers=ADMIN)

    found = entries(client)
    assert [e["action"] for e in found] == [
        "key.revoked",
        "key.rotated",
        "key.created",
        "policy.updated",
        "tenant.created",
    ]
    ids = [e["id"] for e in found]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 5
    for entry in found:
        assert entry["actor"] == "configured"
        assert entry["client"] == "127.0.0.1"
        assert entry["tenant"] == "acme"
        assert entry["outcome"] == "ok"
        assert ISO.fullmatch(entry["time"])
    revoked, rotated, created, patched, born = found
    assert revoked["target"] == first["id"] and revoked["details"] == {}
    assert rotated["target"] == first["id"]
    assert rotated["details"]["new_key"] == second["id"]
    assert rotated["details"]["overlap_seconds"] == 3600
    assert rotated["details"]["old_key_expires_at"] == second["old_key_expires_at"]
    assert created["target"] == first["id"] and created["details"] == {"expires_at": None}
    assert patched["target"] is None
    assert patched["details"]["fields"] == ["memory_mb"]
    assert patched["details"]["changes"] == {"memory_mb": {"before": 256, "after": 128}}
    assert born["details"]["policy"]["memory_mb"] == 256 and born["details"]["vars"] == []


def test_listing_and_deleting_keys_and_reading_are_not_admin_changes(client: Client) -> None:
    client.post("/v1/admin/tenants", json={"name": "acme"}, headers=ADMIN)
    for path in ["/v1/admin/tenants", "/v1/admin/tenants/acme", "/v1/admin/tenants/acme/keys"]:
        assert client.get(path, headers=ADMIN).status_code == 200
    assert [e["action"] for e in entries(client)] == ["tenant.created"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/admin/tenants", {"name": "acme"}, 409),
        ("POST", "/v1/admin/tenants", {"name": "bad name"}, 400),
        ("POST", "/v1/admin/tenants", {"name": "new", "policy": {"memory_mb": 1}}, 400),
        ("PATCH", "/v1/admin/tenants/acme/policy", {"step_cpu_ms": 0}, 400),
        ("PATCH", "/v1/admin/tenants/acme/policy", {"vars": [], "memory_mb": 128}, 400),
        ("PATCH", "/v1/admin/tenants/ghost/policy", {"memory_mb": 128}, 404),
        ("POST", "/v1/admin/tenants/ghost/keys", None, 404),
        ("POST", "/v1/admin/tenants/acme/keys", {"ttl": "soon"}, 400),
        ("POST", "/v1/admin/tenants/acme/keys", {"expires_at": "2001-01-01T00:00:00Z"}, 400),
        ("POST", "/v1/admin/tenants/acme/keys/nokey/rotate", None, 404),
        ("POST", "/v1/admin/tenants/acme/keys/{key}/rotate", {"overlap": "-1 hour"}, 400),
        ("POST", "/v1/admin/tenants/acme/keys/{key}/rotate", {"overlap": 1, "x": 1}, 400),
        ("POST", "/v1/admin/tenants/other/keys/{key}/rotate", None, 404),
        ("DELETE", "/v1/admin/tenants/other/keys/{key}", None, 404),
        ("DELETE", "/v1/admin/tenants/acme/keys/nokey", None, 404),
    ],
)
def test_a_refused_change_changes_nothing_and_leaves_no_entry(
    client: Client, method: str, path: str, body: object, status: int
) -> None:
    client.post("/v1/admin/tenants", json={"name": "acme"}, headers=ADMIN)
    client.post("/v1/admin/tenants", json={"name": "other"}, headers=ADMIN)
    key = client.post("/v1/admin/tenants/acme/keys", headers=ADMIN).json()
    before = entries(client)
    keys_before = client.get("/v1/admin/tenants/acme/keys", headers=ADMIN).json()
    policy_before = client.get("/v1/admin/tenants/acme", headers=ADMIN).json()["policy"]

    reply = client.request(method, path.format(key=key["id"]), json=body, headers=ADMIN)
    assert reply.status_code == status, reply.text
    assert entries(client) == before
    assert client.get("/v1/admin/tenants/acme/keys", headers=ADMIN).json() == keys_before
    assert client.get("/v1/admin/tenants/acme", headers=ADMIN).json()["policy"] == policy_before
    assert client.get("/v1/workflows", headers=bearer(key["key"])).status_code == 200


def test_secrets_never_reach_the_audit_log(client: Client, platform: Platform) -> None:
    vars_ = {"api_token": SECRET, "region": "eu"}
    body = {"name": "acme", "policy": {"vars": vars_}}
    assert client.post("/v1/admin/tenants", json=body, headers=ADMIN).status_code == 201
    patch = {"vars": {"api_token": SECRET + "-2", "db_password": SECRET + "-3", "region": "eu"}}
    client.patch("/v1/admin/tenants/acme/policy", json=patch, headers=ADMIN)
    client.patch("/v1/admin/tenants/acme/policy", json={"vars": {}}, headers=ADMIN)
    key = client.post("/v1/admin/tenants/acme/keys", headers=ADMIN).json()
    path = f"/v1/admin/tenants/acme/keys/{key['id']}/rotate"
    new = client.post(path, headers=ADMIN).json()
    client.get("/v1/admin/audit", headers=bearer("not-the-admin-token-" + SECRET))

    shown = entries(client)
    born, added, cleared = shown[-1], shown[-2], shown[-3]
    assert born["details"]["vars"] == ["api_token", "region"]
    assert added["details"]["vars"] == {
        "added": ["db_password"],
        "removed": [],
        "changed": ["api_token"],
    }
    assert added["details"]["changes"] == {}  # vars are never shown before and after
    assert cleared["details"]["vars"]["removed"] == ["api_token", "db_password", "region"]

    with platform.db.connect() as conn:
        raw = json.dumps([list(row) for row in conn.execute(sa.select(tables.audit_log))])
        hashes = [row.secret_hash for row in conn.execute(sa.select(tables.api_keys))]
    for text in (raw, json.dumps(shown)):
        assert SECRET not in text
        for credential in (key["key"], new["key"], ADMIN["Authorization"]):
            assert credential.split("_", 2)[-1] not in text  # tdl_<id>_<secret: may hold _>
        assert "test-admin-token" not in text
        assert not any(h in text for h in hashes)


def test_entries_filter_by_tenant_and_action_and_page_newest_first(client: Client) -> None:
    for name in ("a", "b", "c"):
        client.post("/v1/admin/tenants", json={"name": name}, headers=ADMIN)
        for _ in range(2):
            client.post(f"/v1/admin/tenants/{name}/keys", headers=ADMIN)
    everything = entries(client, limit=1000)
    assert len(everything) == 9

    pages, cursor = [], None
    while True:
        page = audit(client, limit=2, **({"cursor": cursor} if cursor else {}))
        assert len(page["entries"]) <= 2
        pages.extend(page["entries"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == everything

    of_b = entries(client, tenant="b")
    assert [e["action"] for e in of_b] == ["key.created", "key.created", "tenant.created"]
    assert of_b == [e for e in everything if e["tenant"] == "b"]
    assert audit(client, "/v1/admin/tenants/b/audit")["entries"] == of_b
    keys_of_b = audit(client, "/v1/admin/tenants/b/audit", action="key.created", limit=1)
    assert keys_of_b["entries"] == of_b[:1] and keys_of_b["next_cursor"]
    created = entries(client, action="tenant.created")
    assert [e["tenant"] for e in created] == ["c", "b", "a"]
    assert entries(client, tenant="nobody") == []


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"action": "tenant.exploded"}, "request.invalid"),
        ({"limit": "0"}, "request.invalid"),
        ({"limit": "1001"}, "request.invalid"),
        ({"limit": "many"}, "request.invalid"),
        ({"cursor": "!!"}, "request.invalid_cursor"),
        ({"cursor": encode_cursor(2**70)}, "request.invalid_cursor"),
        ({"cursor": "LTE"}, "request.invalid_cursor"),  # -1
        ({"tenatn": "a"}, "request.invalid"),
        ({"tenant": "a\x00b"}, "tenant.invalid_name"),
    ],
)
def test_bad_audit_queries_are_a_400(client: Client, query: dict[str, str], code: str) -> None:
    reply = client.get("/v1/admin/audit", params=query, headers=ADMIN)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["code"] == code


def test_the_audit_of_an_unknown_tenant_is_a_404_and_needs_the_admin_token(
    client: Client,
) -> None:
    reply = client.get("/v1/admin/tenants/ghost/audit", headers=ADMIN)
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "tenant.not_found"
    for path in ["/v1/admin/audit", "/v1/admin/tenants/ghost/audit"]:
        assert client.get(path).status_code == 401


def test_failed_admin_sign_ins_are_counted_in_one_entry_a_minute(
    timed_platform: Platform, timed_client: Client, clock: ManualClock
) -> None:
    platform, client = timed_platform, timed_client
    for headers in [bearer("wrong"), {}, {"Authorization": "Basic x"}] * 10:
        assert client.get("/v1/admin/tenants", headers=headers).status_code == 401
    clock.advance(1)
    assert client.post("/v1/admin/tenants", json={}, headers=bearer("x")).status_code == 401
    failed = entries(client, action="admin.auth_failed")
    assert len(failed) == 1
    assert failed[0]["details"] == {"count": 31, "clients": ["127.0.0.1"], "window_seconds": 60}
    assert failed[0]["actor"] == "anonymous" and failed[0]["outcome"] == "denied"
    assert failed[0]["tenant"] is None

    client.get("/v1/admin/tenants", headers=bearer("wrong"))  # within the second: not written
    clock.advance(60)
    client.get("/v1/admin/tenants", headers=bearer("wrong"))  # opens the next window
    old, new = entries(client, action="admin.auth_failed")[::-1]
    assert old["details"]["count"] == 32 and new["details"]["count"] == 1
    # A wrong API key on a tenant route is an ordinary 401, not an admin sign-in.
    assert client.get("/v1/workflows", headers=bearer("wrong")).status_code == 401
    assert len(entries(client, action="admin.auth_failed")) == 2
    with platform.db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.audit_log)).scalar() == 2


def test_the_first_start_and_generated_admin_tokens_are_named_in_entries(
    database_url: str,
) -> None:
    platform = Platform(settings(database_url, admin_token=None))
    try:
        made = platform.tenants.bootstrap()
        assert made is not None
        with served(create_app(platform)) as client:
            admin = bearer(made.admin_token)
            first = client.get("/v1/admin/audit", headers=admin).json()["entries"]
            assert [(e["action"], e["actor"], e["tenant"]) for e in first] == [
                ("key.created", "bootstrap", "default"),
                ("tenant.created", "bootstrap", "default"),
                ("admin_token.created", "bootstrap", None),
            ]
            token_id = first[-1]["target"]
            assert made.admin_token.startswith(f"tdla_{token_id}_")
            client.post("/v1/admin/tenants", json={"name": "acme"}, headers=admin)
            latest = client.get("/v1/admin/audit", headers=admin).json()["entries"][0]
            assert latest["actor"] == f"admin:{token_id}"
            assert made.admin_token.split("_", 2)[2] not in json.dumps(latest)
    finally:
        platform.close()


def test_key_and_audit_answers_have_the_documented_shapes(client: Client) -> None:
    import jsonschema

    document = client.get("/openapi.json").json()

    def check(reply: Any, schema: str) -> None:
        root = {"$ref": f"#/components/schemas/{schema}", "components": document["components"]}
        jsonschema.Draft202012Validator(root).validate(reply.json())

    client.post("/v1/admin/tenants", json={"name": "acme"}, headers=ADMIN)
    created = client.post("/v1/admin/tenants/acme/keys", json={"ttl": 60}, headers=ADMIN)
    check(created, "ApiKey")
    path = f"/v1/admin/tenants/acme/keys/{created.json()['id']}/rotate"
    check(client.post(path, headers=ADMIN), "RotatedKey")
    check(client.get("/v1/admin/tenants/acme/keys", headers=ADMIN), "KeyList")
    client.get("/v1/admin/audit", headers=bearer("wrong"))
    check(client.get("/v1/admin/audit", headers=ADMIN), "AuditList")
    check(client.get("/v1/admin/tenants/acme/audit?limit=1", headers=ADMIN), "AuditList")
