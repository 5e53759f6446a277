"""Signed webhooks (docs/webhooks.md) on SQLite and PostgreSQL: a delivery signed with the
hook's secret creates an instance whose params are its body; anything that does not verify
answers one 401 and writes nothing; an ``Idempotency-Key`` makes a repeat, racing too (on two
``treadle serve`` processes of one PostgreSQL database), return the one instance it created."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench._processes import TreadleProcess
from storage import ManualClock
from tests.integration.app import ADMIN_TOKEN, deploy, new_tenant, wait_status
from tests.integration.test_client_cli import Run, acme, config_file, treadle
from treadle import Client
from treadle.client import sign_webhook
from treadle.errors import NotFound, Unauthorized

__all__ = ["acme", "config_file", "treadle"]  # the command line's fixtures, used here too

QUICK = """
from treadle import WorkflowEntrypoint

class Quick(WorkflowEntrypoint):
    def run(self, event, step):
        return event.payload
"""
HOOKS = "/v1/workflows/quick/hooks"
DOES_NOT_VERIFY = {
    "error": {"code": "hook.unauthorized", "message": "the request's signature does not verify"}
}


@pytest.fixture
def tenant(client: httpx.Client) -> dict[str, str]:
    headers = new_tenant(client, "acme")
    deploy(client, headers, "quick", QUICK)
    return headers


def _put(client: httpx.Client, headers: dict[str, str], name: str = "github") -> dict[str, Any]:
    reply = client.put(f"{HOOKS}/{name}", headers=headers)
    assert reply.status_code in (200, 201), reply.text
    return dict(reply.json())


def _send(
    client: httpx.Client,
    url: str,
    body: bytes,
    secret: str,
    *,
    at: float | None = None,
    key: str | None = None,
) -> httpx.Response:
    headers = sign_webhook(secret, body, None if at is None else int(at))
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post(url, content=body, headers=headers)


def _instances(client: httpx.Client, headers: dict[str, str]) -> list[dict[str, Any]]:
    reply = client.get("/v1/workflows/quick/instances", headers=headers)
    assert reply.status_code == 200, reply.text
    return list(reply.json()["instances"])


def test_a_signed_delivery_creates_an_instance_of_its_body(
    client: httpx.Client, tenant: dict[str, str]
) -> None:
    created = client.put(f"{HOOKS}/github", headers=tenant)
    assert created.status_code == 201, created.text
    hook = created.json()
    assert set(hook) == {"hook", "url", "secret"} and hook["hook"] == "github"
    base = str(client.base_url).rstrip("/")
    assert hook["url"].startswith(f"{base}/v1/hooks/hk_") and len(hook["url"]) > len(base) + 40
    body = json.dumps({"action": "opened", "number": 7}).encode()
    reply = _send(client, hook["url"], body, hook["secret"])
    assert reply.status_code == 201, reply.text
    made = reply.json()
    assert made["status"] == "queued" and made["version"]
    path = f"/v1/workflows/quick/instances/{made['id']}"
    done = wait_status(client, tenant, path, "complete")
    assert done["params"] == {"action": "opened", "number": 7}
    assert done["output"] == {"action": "opened", "number": 7}
    # An empty body is null params; any JSON value is params as it is.
    for raw, params in ((b"", None), (b"[1, 2]", [1, 2]), (b'"x"', "x")):
        sent = _send(client, hook["url"], raw, hook["secret"])
        assert sent.status_code == 201, sent.text
        got = client.get(f"/v1/workflows/quick/instances/{sent.json()['id']}", headers=tenant)
        assert got.json()["params"] == params


def test_the_api_lists_gets_rotates_and_deletes_without_secrets(
    client: httpx.Client, tenant: dict[str, str]
) -> None:
    first = _put(client, tenant, "github")
    _put(client, tenant, "stripe")
    listed = client.get(HOOKS, headers=tenant).json()["hooks"]
    assert [h["hook"] for h in listed] == ["github", "stripe"]
    assert all("secret" not in h and h["previous_expires_at"] is None for h in listed)
    got = client.get(f"{HOOKS}/github", headers=tenant).json()
    assert got["url"] == first["url"] and got["workflow"] == "quick" and "secret" not in got
    # A put of an existing hook: the same url, a new secret; the old one still verifies.
    rotated = client.put(f"{HOOKS}/github", headers=tenant)
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()
    assert second["url"] == first["url"] and second["secret"] != first["secret"]
    assert client.get(f"{HOOKS}/github", headers=tenant).json()["previous_expires_at"]
    for secret in (first["secret"], second["secret"]):
        assert _send(client, first["url"], b"{}", secret).status_code == 201
    assert client.delete(f"{HOOKS}/github", headers=tenant).status_code == 204
    assert client.get(f"{HOOKS}/github", headers=tenant).status_code == 404
    assert client.delete(f"{HOOKS}/github", headers=tenant).status_code == 404
    gone = _send(client, first["url"], b"{}", second["secret"])
    assert gone.status_code == 401 and gone.json() == DOES_NOT_VERIFY
    bad = client.put(f"{HOOKS}/bad%20name", headers=tenant)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "hook.invalid_name"
    missing = client.put("/v1/workflows/nope/hooks/x", headers=tenant)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "workflow.not_found"
    assert client.get("/v1/workflows/nope/hooks", headers=tenant).status_code == 404


def test_what_does_not_verify_is_one_401_and_writes_nothing(
    client: httpx.Client, tenant: dict[str, str]
) -> None:
    hook = _put(client, tenant)
    url, secret = hook["url"], hook["secret"]
    body = b'{"a": 1}'
    now = time.time()
    signed_then = sign_webhook(secret, body, int(now - 360))
    refused = [
        _send(client, url, body, "whsec_wrong"),  # wrong secret
        _send(client, url, body, secret, at=now - 360),  # 6 minutes old
        _send(client, url, body, secret, at=now + 360),  # 6 minutes ahead
        client.post(url, content=body, headers=signed_then),  # an old delivery replayed
        _send(client, url.rsplit("/", 1)[0] + "/hk_unknown0000000000000000000000", body, secret),
        client.post(url, content=b'{"a": 2}', headers=sign_webhook(secret, body)),  # tampered
    ]
    assert [r.status_code for r in refused] == [401] * len(refused)
    assert refused[0].json() == DOES_NOT_VERIFY
    assert len({r.content for r in refused}) == 1  # byte for byte the same
    missing = client.post(url, content=body)
    assert missing.status_code == 401 and "missing" in missing.json()["error"]["message"]
    for header in ("t=1,v1=zz", "v1=" + "a" * 64, "garbage", f"t={int(now)}"):
        malformed = client.post(url, content=body, headers={"Treadle-Signature": header})
        assert malformed.status_code == 401, header
        assert "malformed" in malformed.json()["error"]["message"]
    # Within 5 minutes either way verifies.
    assert _send(client, url, body, secret, at=now - 250).status_code == 201
    assert _send(client, url, body, secret, at=now + 250).status_code == 201
    assert len(_instances(client, tenant)) == 2


def test_bad_bodies_and_keys_are_400_after_the_signature_and_write_nothing(
    client: httpx.Client, tenant: dict[str, str]
) -> None:
    hook = _put(client, tenant)
    url, secret = hook["url"], hook["secret"]
    not_json = _send(client, url, b"{nope", secret)
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "request.json"
    # Unsigned, the same body is a 401: nothing is parsed before the signature verifies.
    assert client.post(url, content=b"{nope").status_code == 401
    for key in (b"", b"x" * 256, "caf\u00e9".encode("latin-1"), b"a\tb"):
        headers: dict[str, Any] = {**sign_webhook(secret, b"{}"), "Idempotency-Key": key}
        reply = client.post(url, content=b"{}", headers=headers)
        assert reply.status_code == 400, (key, reply.text)
        assert reply.json()["error"]["code"] == "hook.invalid_idempotency_key"
    assert _instances(client, tenant) == []


def test_a_body_over_the_limit_is_413_and_writes_nothing(
    client: httpx.Client, tenant: dict[str, str], platform: Any
) -> None:
    hook = _put(client, tenant)
    body = b'{"x": "' + b"a" * platform.settings.max_body_bytes + b'"}'
    declared = _send(client, hook["url"], body, hook["secret"])
    assert declared.status_code == 413, declared.text
    assert "larger than" in declared.json()["error"]["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield body[: len(body) // 2]
        yield body[len(body) // 2 :]

    streamed = client.post(
        hook["url"], content=chunks(), headers=sign_webhook(hook["secret"], body)
    )
    assert streamed.status_code == 413, streamed.text
    assert _instances(client, tenant) == []


def test_an_idempotency_key_repeated_returns_the_same_instance(
    client: httpx.Client, tenant: dict[str, str]
) -> None:
    hook = _put(client, tenant)
    url, secret = hook["url"], hook["secret"]
    first = _send(client, url, b'{"n": 1}', secret, key="delivery-1")
    assert first.status_code == 201, first.text
    again = _send(client, url, b'{"n": 1}', secret, key="delivery-1")
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    other = _send(client, url, b'{"n": 2}', secret, key="delivery-2")
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]

    # Racing: 16 requests with one key at once create one instance.
    def send(_: int) -> httpx.Response:
        return _send(client, url, b'{"n": 3}', secret, key="racing")

    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(send, range(16)))
    assert sorted(r.status_code for r in replies) == [200] * 15 + [201], [r.text for r in replies]
    assert len({r.json()["id"] for r in replies}) == 1
    assert len(_instances(client, tenant)) == 3


def test_other_tenants_get_404(client: httpx.Client, tenant: dict[str, str]) -> None:
    hook = _put(client, tenant)
    other = new_tenant(client, "globex")
    deploy(client, other, "quick", QUICK)
    assert client.get(f"{HOOKS}/github", headers=other).status_code == 404
    assert client.get(HOOKS, headers=other).json() == {"hooks": []}
    assert client.delete(f"{HOOKS}/github", headers=other).status_code == 404
    # Its own hook of the same name is another hook; this tenant's is untouched.
    theirs = _put(client, other)
    assert theirs["url"] != hook["url"]
    assert client.get(f"{HOOKS}/github", headers=tenant).json()["url"] == hook["url"]
    third = new_tenant(client, "initech")  # without the workflow
    for method in ("GET", "PUT", "DELETE"):
        reply = client.request(method, f"{HOOKS}/github", headers=third)
        assert reply.status_code == 404, (method, reply.text)
    assert _send(client, hook["url"], b"{}", theirs["secret"]).status_code == 401


def test_deleting_the_workflow_deletes_its_hooks(
    client: httpx.Client, tenant: dict[str, str]
) -> None:
    hook = _put(client, tenant)
    assert _send(client, hook["url"], b"{}", hook["secret"], key="k").status_code == 201
    assert client.delete("/v1/workflows/quick", headers=tenant).status_code == 204
    reply = _send(client, hook["url"], b"{}", hook["secret"])
    assert reply.status_code == 401 and reply.json() == DOES_NOT_VERIFY
    deploy(client, tenant, "quick", QUICK)
    assert client.get(HOOKS, headers=tenant).json() == {"hooks": []}


def test_a_full_queue_is_429_and_writes_nothing(client: httpx.Client) -> None:
    headers = new_tenant(client, "acme", max_queued_instances=1)
    deploy(client, headers, "quick", QUICK)
    hook = _put(client, headers)
    later = client.post("/v1/workflows/quick/instances", json={"id": "later", "delay": "1 hour"},
                        headers=headers)  # fmt: skip
    assert later.status_code == 201, later.text  # queued for an hour: the queue is full
    full = _send(client, hook["url"], b"{}", hook["secret"], key="k")
    assert full.status_code == 429, full.text
    assert full.json()["error"]["code"].startswith("quota.") and full.headers["Retry-After"]
    assert [i["id"] for i in _instances(client, headers)] == ["later"]
    # Nothing of the refused key was kept: once there is room, the same key creates.
    assert client.delete("/v1/workflows/quick/instances/later", headers=headers).status_code in (
        200,
        204,
    )
    deadline = time.monotonic() + 10
    while (made := _send(client, hook["url"], b"{}", hook["secret"], key="k")).status_code == 429:
        assert time.monotonic() < deadline, made.text
        time.sleep(0.2)
    assert made.status_code == 201, made.text


def test_rotation_overlap_ends(
    timed_client: httpx.Client, timed_platform: Any, clock: ManualClock
) -> None:
    headers = new_tenant(timed_client, "acme")
    deploy(timed_client, headers, "quick", QUICK)
    first = _put(timed_client, headers)
    second = _put(timed_client, headers)
    at = clock.now()
    assert _send(timed_client, first["url"], b"{}", first["secret"], at=at).status_code == 201
    clock.advance(24 * 3600 + 1)
    at = clock.now()
    old = _send(timed_client, first["url"], b"{}", first["secret"], at=at)
    assert old.status_code == 401 and old.json() == DOES_NOT_VERIFY
    assert _send(timed_client, first["url"], b"{}", second["secret"], at=at).status_code == 201
    got = timed_client.get(f"{HOOKS}/github", headers=headers).json()
    assert got["previous_expires_at"] is None


def test_a_key_is_remembered_for_7_days(
    timed_client: httpx.Client, timed_platform: Any, clock: ManualClock
) -> None:
    headers = new_tenant(timed_client, "acme")
    deploy(timed_client, headers, "quick", QUICK)
    hook = _put(timed_client, headers)

    def send(key: str) -> httpx.Response:
        return _send(timed_client, hook["url"], b"{}", hook["secret"], at=clock.now(), key=key)

    first = send("k")
    assert first.status_code == 201, first.text
    clock.advance(6 * 86400)
    assert send("k").json()["id"] == first.json()["id"]
    clock.advance(86400 + 1)
    again = send("k")
    assert again.status_code == 201 and again.json()["id"] != first.json()["id"]
    assert send("k").json()["id"] == again.json()["id"]
    assert len(_instances(timed_client, headers)) == 2


# -- two API processes on one database ----------------------------------------------------------


@pytest.mark.slow
def test_a_key_racing_on_two_processes_creates_one_instance(
    postgresql_url: str, tmp_path: Path
) -> None:
    env = {"TREADLE_ADMIN_TOKEN": ADMIN_TOKEN}
    servers = [TreadleProcess(postgresql_url, tmp_path, name=n, env=env) for n in "ab"]
    try:
        for server in servers:
            server.start()
        apis = [httpx.Client(base_url=s.base, timeout=60) for s in servers]
        headers = new_tenant(apis[0], "acme")
        deploy(apis[0], headers, "quick", QUICK)
        hook = _put(apis[0], headers)
        hook_path = "/v1/hooks/" + hook["url"].rsplit("/", 1)[1]
        for round_ in range(5):
            key = f"race-{round_}"

            def send(n: int, key: str = key) -> httpx.Response:
                return _send(apis[n % 2], hook_path, b'{"r": 1}', hook["secret"], key=key)

            with ThreadPoolExecutor(8) as pool:
                replies = list(pool.map(send, range(8)))
            assert sorted(r.status_code for r in replies) == [200] * 7 + [201], [
                r.text for r in replies
            ]
            assert len({r.json()["id"] for r in replies}) == 1
        assert len(_instances(apis[1], headers)) == 5
        for api in apis:
            api.close()
    finally:
        for server in servers:
            server.stop()


# -- the SDK and the command line ------------------------------------------------------------------


def test_the_sdk_puts_sends_and_deletes_hooks(client: httpx.Client, tenant: dict[str, str]) -> None:
    key = tenant["Authorization"].removeprefix("Bearer ")
    with Client(str(client.base_url).rstrip("/"), api_key=key) as sdk:
        made = sdk.put_hook("quick", "github")
        assert made.hook == "github" and made.secret.startswith("whsec_")
        assert [h.hook for h in sdk.hooks("quick")] == ["github"]
        assert sdk.hook("quick", "github").url == made.url
        sent = sdk.send_hook(made.url, {"a": 1}, made.secret, idempotency_key="one")
        again = sdk.send_hook(made.url.rsplit("/", 1)[1], {"a": 1}, made.secret, "one")
        assert again.id == sent.id
        assert sdk.wait("quick", sent.id).output == {"a": 1}
        with pytest.raises(Unauthorized, match="does not verify"):
            sdk.send_hook(made.url, {"a": 1}, "whsec_wrong")
        sdk.delete_hook("quick", "github")
        with pytest.raises(NotFound):
            sdk.hook("quick", "github")


def test_the_cli_manages_hooks(acme: Run) -> None:
    code, out, err = acme("hooks", "put", "sum", "github")
    assert code == 0, err
    assert "/v1/hooks/hk_" in out and "whsec_" in out and "shown this once" in out
    code, out, err = acme("hooks", "list", "sum")
    assert code == 0 and out.splitlines()[0].split()[:2] == ["HOOK", "URL"], err
    assert out.splitlines()[1].startswith("github") and "whsec_" not in out
    code, out, _ = acme("hooks", "get", "sum", "github", "--json")
    assert code == 0 and json.loads(out)["hook"] == "github"
    code, out, err = acme("hooks", "put", "sum", "github")
    assert code == 0 and "rotated" in out and "whsec_" in out, err
    assert acme("hooks", "delete", "sum", "github")[0] == 0
    code, _, err = acme("hooks", "get", "sum", "github")
    assert code == 2 and "hook 'github' of workflow 'sum' not found" in err
