"""API keys: listing with last-used times, expiry, and rotation with an overlap."""

from __future__ import annotations

import datetime as dt
import json
from hashlib import sha256
from typing import Any

import pytest
from httpx import Client

from dispatcher import Platform
from storage import Clock, Database, ManualClock, available_migrations, iso, migrate, tables
from tenants import TenantStore
from tests.integration.app import ADMIN, bearer
from treadle.errors import Unauthorized

KEYS = "/v1/admin/tenants/{tenant}/keys"


@pytest.fixture
def client(timed_client: Client) -> Client:
    """The API on a platform whose clock moves only when the test says so, with a tenant."""
    reply = timed_client.post("/v1/admin/tenants", json={"name": "acme"}, headers=ADMIN)
    assert reply.status_code == 201, reply.text
    return timed_client


def new_key(client: Client, tenant: str = "acme", **body: Any) -> dict[str, Any]:
    reply = client.post(KEYS.format(tenant=tenant), json=body or None, headers=ADMIN)
    assert reply.status_code == 201, reply.text
    key: dict[str, Any] = reply.json()
    return key


def rotate(client: Client, key_id: str, **body: Any) -> dict[str, Any]:
    path = KEYS.format(tenant="acme") + f"/{key_id}/rotate"
    reply = client.post(path, json=body or None, headers=ADMIN)
    assert reply.status_code == 201, reply.text
    key: dict[str, Any] = reply.json()
    return key


def listed(client: Client, tenant: str = "acme") -> dict[str, dict[str, Any]]:
    reply = client.get(KEYS.format(tenant=tenant), headers=ADMIN)
    assert reply.status_code == 200, reply.text
    return {k["id"]: k for k in reply.json()["keys"]}


def works(client: Client, key: dict[str, Any]) -> bool:
    status = client.get("/v1/workflows", headers=bearer(key["key"])).status_code
    assert status in (200, 401)
    return status == 200


def test_keys_are_listed_without_secrets_and_show_when_they_were_last_used(
    client: Client, clock: ManualClock
) -> None:
    key = new_key(client)
    assert key["created_at"] == iso(clock.now()) and key["expires_at"] is None
    shown = listed(client)[key["id"]]
    assert shown == {
        "id": key["id"],
        "created_at": iso(clock.now()),
        "last_used_at": None,
        "expires_at": None,
        "expired": False,
        "rotated_from": None,
    }
    clock.advance(5)
    assert works(client, key)
    assert listed(client)[key["id"]]["last_used_at"] == iso(clock.now())
    clock.advance(30)
    assert works(client, key)  # within the minute: the recorded time stays
    assert listed(client)[key["id"]]["last_used_at"] == iso(clock.now() - 30)
    clock.advance(31)
    assert works(client, key)
    assert listed(client)[key["id"]]["last_used_at"] == iso(clock.now())
    text = client.get(KEYS.format(tenant="acme"), headers=ADMIN).text
    assert key["key"].split("_", 2)[2] not in text


def test_keys_of_another_tenant_are_not_found_through_this_tenant(
    client: Client,
) -> None:
    client.post("/v1/admin/tenants", json={"name": "other"}, headers=ADMIN)
    mine, theirs = new_key(client), new_key(client, "other")
    assert list(listed(client)) == [mine["id"]]
    assert list(listed(client, "other")) == [theirs["id"]]
    path = KEYS.format(tenant="acme") + f"/{theirs['id']}"
    for method, url in [("POST", path + "/rotate"), ("DELETE", path)]:
        reply = client.request(method, url, headers=ADMIN)
        assert reply.status_code == 404, reply.text
        assert reply.json()["error"]["code"] == "key.not_found"
    assert works(client, theirs)
    reply = client.get(KEYS.format(tenant="ghost"), headers=ADMIN)
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "tenant.not_found"


def test_after_a_rotation_both_keys_work_until_the_overlap_ends(
    client: Client, clock: ManualClock
) -> None:
    old = new_key(client)
    new = rotate(client, old["id"], overlap="1 hour")
    assert new["id"] != old["id"] and new["key"] != old["key"]
    assert new["rotated_from"] == old["id"] and new["expires_at"] is None
    assert new["old_key_expires_at"] == iso(clock.now() + 3600)
    assert works(client, old) and works(client, new)
    clock.advance(3599)
    assert works(client, old) and works(client, new)
    assert listed(client)[old["id"]]["expired"] is False
    clock.advance(1)
    assert not works(client, old) and works(client, new)
    reply = client.get("/v1/workflows", headers=bearer(old["key"]))
    assert reply.json()["error"] == {
        "code": "auth.unauthorized",
        "message": "the API key has expired",
    }
    keys = listed(client)
    assert keys[old["id"]]["expired"] is True
    assert keys[old["id"]]["expires_at"] == new["old_key_expires_at"]
    assert keys[new["id"]] == {**keys[new["id"]], "expired": False, "rotated_from": old["id"]}


def test_the_overlap_defaults_to_a_day_and_zero_stops_the_old_key_at_once(
    client: Client, clock: ManualClock
) -> None:
    first = new_key(client)
    second = rotate(client, first["id"])
    assert second["old_key_expires_at"] == iso(clock.now() + 86400)
    third = rotate(client, second["id"], overlap=0)
    assert not works(client, second) and works(client, third) and works(client, first)
    # A rotation never lets a key live longer: the first key keeps its day, not two hours.
    rotate(client, third["id"], overlap="2 hours")
    fourth = rotate(client, first["id"], overlap="2 days")
    assert fourth["old_key_expires_at"] == second["old_key_expires_at"]
    reply = client.post(KEYS.format(tenant="acme") + f"/{second['id']}/rotate", headers=ADMIN)
    assert reply.status_code == 409 and reply.json()["error"]["code"] == "key.expired"


def test_a_key_can_be_made_to_expire(client: Client, clock: ManualClock) -> None:
    short = new_key(client, ttl="10 minutes")
    assert short["expires_at"] == iso(clock.now() + 600)
    until = dt.datetime.fromtimestamp(clock.now() + 7200, tz=dt.UTC).isoformat()
    dated = new_key(client, expires_at=until)
    assert dated["expires_at"] == iso(clock.now() + 7200)
    rotated = rotate(client, dated["id"], overlap=60, ttl=900)
    assert rotated["expires_at"] == iso(clock.now() + 900)
    clock.advance(30)
    assert works(client, short) and works(client, dated) and works(client, rotated)
    clock.advance(570)
    assert not works(client, short) and not works(client, dated) and works(client, rotated)
    clock.advance(300)
    assert not works(client, rotated)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"ttl": "soon"}, "ttl"),
        ({"ttl": -5}, "ttl: must not be negative"),
        ({"ttl": 0}, "expires_at must lie in the future"),
        ({"ttl": 60, "expires_at": "2100-01-01T00:00:00Z"}, "not both"),
        ({"expires_at": "yesterday"}, "not an ISO 8601 time"),
        ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at must lie in the future"),
        ({"ttl": True}, "ttl"),
        ('{"ttl": Infinity}', "Infinity is not a JSON number"),
        ({"ttl": 1e300}, "ttl: must not exceed 365 days"),
        ({"expires_at": 1e12}, "before the year 10000"),
        ('{"expires_at": NaN}', "NaN is not a JSON number"),
        ({"expires_at": "10000-01-01T00:00:00Z"}, "not an ISO 8601 time"),
        ({"name": "x"}, "name: unknown field"),
    ],
)
def test_invalid_key_lifetimes_are_a_400(
    client: Client, body: dict[str, Any] | str, message: str
) -> None:
    raw = body if isinstance(body, str) else json.dumps(body)
    reply = client.post(KEYS.format(tenant="acme"), content=raw, headers=ADMIN)
    assert reply.status_code == 400, reply.text
    assert message in reply.json()["error"]["message"]
    assert listed(client) == {}


def test_rotated_and_deleted_keys_stop_working_in_every_process(
    platform: Platform, clock: ManualClock
) -> None:
    here, there = TenantStore(platform.db, clock), TenantStore(platform.db, clock)
    here.create_tenant("acme")
    old = here.create_key("acme")
    assert there.authenticate(old["key"]).tenant_name == "acme"
    new = here.rotate_key("acme", old["id"], overlap=30)
    assert there.authenticate(old["key"]).tenant_name == "acme"
    assert there.authenticate(new["key"]).tenant_name == "acme"
    clock.advance(30)
    with pytest.raises(Unauthorized, match="expired"):
        there.authenticate(old["key"])
    assert there.authenticate(new["key"]).tenant_name == "acme"
    here.delete_key("acme", new["id"])
    with pytest.raises(Unauthorized, match="invalid API key"):
        there.authenticate(new["key"])
    assert [k["expired"] for k in there.keys("acme")] == [True]


def test_an_expired_key_with_a_wrong_secret_is_just_invalid(
    platform: Platform, clock: ManualClock
) -> None:
    store = TenantStore(platform.db, clock)
    store.create_tenant("acme")
    key = store.create_key("acme", expires_at=clock.now() + 1)
    clock.advance(1)
    wrong = key["key"][:-1] + ("A" if key["key"][-1] != "A" else "B")
    with pytest.raises(Unauthorized, match="invalid API key"):
        store.authenticate(wrong)


def test_keys_made_before_the_audit_migration_keep_working(empty_database_url: str) -> None:
    from storage._migrate import _VERSIONS
    from storage.migrations import m0001_initial

    db = Database(empty_database_url)
    secret = "a-secret-from-the-old-days"
    with db.begin() as conn:  # a database as the first release left it
        m0001_initial.upgrade(conn)
        _VERSIONS.create(conn)
        conn.execute(_VERSIONS.insert().values(version=1, name="m0001_initial", applied_at=0.0))
        conn.execute(tables.tenants.insert().values(id=1, name="acme", policy={}, created_at=1.0))
        row = {"id": "01d", "tenant_id": 1, "secret_hash": sha256(secret.encode()).hexdigest()}
        conn.execute(tables.api_keys.insert().values(**row, created_at=1.0, last_used_at=None))
    try:
        assert migrate(db) == [name for version, name in available_migrations() if version > 1]
        store = TenantStore(db, Clock())
        assert store.authenticate(f"tdl_01d_{secret}").tenant_name == "acme"
        [key] = store.keys("acme")
        assert key["expires_at"] is None and key["expired"] is False
        assert key["last_used_at"] is not None
        store.rotate_key("acme", "01d", overlap=0)
        with pytest.raises(Unauthorized, match="expired"):
            store.authenticate(f"tdl_01d_{secret}")
    finally:
        db.dispose()


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("GET", "/v1/admin/tenants/a%21b", "tenant.not_found"),
        ("PATCH", "/v1/admin/tenants/a%21b/policy", "tenant.not_found"),
        ("GET", "/v1/admin/tenants/a%21b/keys", "tenant.not_found"),
        ("POST", "/v1/admin/tenants/a%21b/keys", "tenant.not_found"),
        ("GET", "/v1/admin/tenants/a%21b/audit", "tenant.not_found"),
        ("GET", "/v1/admin/tenants/" + "x" * 300 + "/keys", "tenant.not_found"),
        ("POST", "/v1/admin/tenants/acme/keys/a%21b/rotate", "key.not_found"),
        ("DELETE", "/v1/admin/tenants/acme/keys/a%21b", "key.not_found"),
        ("POST", "/v1/admin/tenants/acme/keys/" + "f" * 33 + "/rotate", "key.not_found"),
    ],
)
def test_names_that_cannot_exist_are_not_found(
    client: Client, method: str, path: str, code: str
) -> None:
    reply = client.request(method, path, json={}, headers=ADMIN)
    assert reply.status_code == 404, reply.text
    assert reply.json()["error"]["code"] == code
