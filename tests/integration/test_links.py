"""Approval links through the HTTP API, on SQLite and PostgreSQL: minted by a tenant (or by a
workflow's ``step.approval_link``), used without an API key, and expired after their uses,
their time, or their instance."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import textwrap
import threading
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa
from httpx import Client

import treadle
import treadle.errors
from bench._processes import TreadleProcess
from bench._server import tenant_client
from dispatcher import Platform
from dispatcher.http._links import HideTokens
from storage import ManualClock, tables
from tests.integration.app import APPROVAL, deploy, new_tenant, wait_for, wait_status
from tests.wasm_guests import python_runtime

BASE = "/v1/workflows/approval/instances"
TWICE = """
from treadle import WorkflowEntrypoint

class Twice(WorkflowEntrypoint):
    def run(self, event, step):
        first = step.wait_for_event("first", type="vote", timeout="1 hour")
        second = step.wait_for_event("second", type="vote", timeout="1 hour")
        return [first["payload"], second["payload"]]
"""
LINKED = """
from treadle import WorkflowEntrypoint

class Linked(WorkflowEntrypoint):
    def run(self, event, step):
        link = step.approval_link("mint", "decision", ttl="2 days", uses=1)
        print("mail", link["url"])
        step.sleep("before mailing", "1 second")
        mailed = step.do("mail", lambda: link)
        got = step.wait_for_event("wait", type="decision", timeout="1 hour")
        return {"link": link, "mailed": mailed, "approved": got["payload"]["approved"]}
"""


@pytest.fixture
def acme(client: Client) -> dict[str, str]:
    headers = new_tenant(client, "acme")
    deploy(client, headers, "approval", APPROVAL)
    return headers


def waiting(client: Client, headers: dict[str, str], instance: str, base: str = BASE) -> None:
    assert client.post(base, json={"id": instance}, headers=headers).status_code == 201
    wait_status(client, headers, f"{base}/{instance}", "waiting")


def mint(
    client: Client, headers: dict[str, str], path: str, body: Any = None, status: int = 201
) -> dict[str, Any]:
    reply = (
        client.post(path, json=body, headers=headers)
        if body
        else client.post(path, headers=headers)
    )
    assert reply.status_code == status, reply.text
    result: dict[str, Any] = reply.json()
    return result


def use(client: Client, url: str, payload: Any) -> httpx.Response:
    """A POST to the link as a program sends it: no API key."""
    return client.post(url, json=payload)


def expired(reply: httpx.Response) -> bool:
    return reply.status_code == 410 and reply.json()["error"]["code"] == "link.expired"


def link_rows(platform: Platform) -> list[Any]:
    with platform.db.connect() as conn:
        return list(conn.execute(sa.select(tables.approval_links)))


def test_a_link_sends_its_event_once(
    client: Client, acme: dict[str, str], platform: Platform
) -> None:
    waiting(client, acme, "o1")
    link = mint(client, acme, f"{BASE}/o1/events/approved/links")
    assert set(link) == {"url", "expires_at"}
    assert link["url"].startswith(str(client.base_url).rstrip("/") + "/v1/links/")
    token = link["url"].rsplit("/", 1)[1]
    assert len(token) >= 43
    # Only the token's hash is kept.
    [row] = link_rows(platform)
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(tuple(row))
    assert (row.uses, row.uses_left) == (1, 1)

    sent = use(client, link["url"], {"by": "ann"})
    assert sent.status_code == 202, sent.text
    done = wait_status(client, acme, f"{BASE}/o1", "complete")
    assert done["output"] == {"by": "ann"}
    again = use(client, link["url"], {"by": "bob"})
    assert expired(again), again.text
    page = client.get(link["url"])
    assert page.status_code == 410 and "expired" in page.text
    events = client.get(f"{BASE}/o1", headers=acme).json()
    assert events["output"] == {"by": "ann"}


def test_a_link_of_two_uses_sends_two_events(client: Client, acme: dict[str, str]) -> None:
    deploy(client, acme, "twice", TWICE)
    base = "/v1/workflows/twice/instances"
    waiting(client, acme, "t1", base)
    link = mint(client, acme, f"{base}/t1/events/vote/links", {"uses": 2, "ttl": 3600})
    page = client.get(link["url"])
    assert page.status_code == 200 and "Uses left" in page.text and ">2<" in page.text
    assert use(client, link["url"], "yes").status_code == 202
    assert use(client, link["url"], "no").status_code == 202
    assert expired(use(client, link["url"], "maybe"))
    done = wait_status(client, acme, f"{base}/t1", "complete")
    assert done["output"] == ["yes", "no"]


def test_a_link_expires_after_its_ttl(
    timed_client: Client, timed_platform: Platform, clock: ManualClock
) -> None:
    client = timed_client
    headers = new_tenant(client, "acme")
    deploy(client, headers, "approval", APPROVAL)
    waiting(client, headers, "o1")
    link = mint(client, headers, f"{BASE}/o1/events/approved/links", {"ttl": "10 minutes"})
    clock.advance(601)
    assert expired(use(client, link["url"], {"by": "late"}))
    assert client.get(link["url"]).status_code == 410
    assert [r.uses_left for r in link_rows(timed_platform)] == [1]  # nothing spent
    assert client.get(f"{BASE}/o1", headers=headers).json()["status"] == "waiting"


def test_an_instance_has_at_most_100_live_links(
    client: Client, acme: dict[str, str], platform: Platform
) -> None:
    """The 101st live link is refused with nothing written; a link used up gives its place
    (and its row) back at the next mint."""
    waiting(client, acme, "o1")
    path = f"{BASE}/o1/events/nudge/links"  # an event it does not wait for: it stays waiting
    links = [mint(client, acme, path) for _ in range(100)]
    refused = mint(client, acme, path, status=409)
    assert refused["error"]["code"] == "link.too_many", refused
    assert "100 live links" in refused["error"]["message"]
    assert len(link_rows(platform)) == 100
    assert use(client, links[0]["url"], {"by": "ann"}).status_code == 202
    fresh = mint(client, acme, path)
    rows = link_rows(platform)
    assert len(rows) == 100 and all(r.uses_left == 1 for r in rows)
    assert expired(use(client, links[0]["url"], {"by": "ann"}))  # its row gone: still 410
    assert mint(client, acme, path, status=409)["error"]["code"] == "link.too_many"
    assert fresh["url"] != links[0]["url"]


def test_links_of_ended_instances_are_expired(
    client: Client, acme: dict[str, str], platform: Platform
) -> None:
    waiting(client, acme, "o1")
    link = mint(client, acme, f"{BASE}/o1/events/approved/links", {"uses": 5})
    assert use(client, link["url"], {"by": "ann"}).status_code == 202
    wait_status(client, acme, f"{BASE}/o1", "complete")
    assert expired(use(client, link["url"], {"by": "ann"}))
    assert client.get(link["url"]).status_code == 410
    # Minting for an ended instance is refused.
    finished = mint(client, acme, f"{BASE}/o1/events/approved/links", status=409)
    assert finished["error"]["code"] == "instance.finished"

    waiting(client, acme, "o2")
    terminated = mint(client, acme, f"{BASE}/o2/events/approved/links")
    reply = client.patch(f"{BASE}/o2/status", json={"status": "terminate"}, headers=acme)
    assert reply.status_code == 200, reply.text
    assert expired(use(client, terminated["url"], {"by": "ann"}))

    waiting(client, acme, "o3")
    deleted = mint(client, acme, f"{BASE}/o3/events/approved/links")
    before = len(link_rows(platform))
    assert client.delete(f"{BASE}/o3", headers=acme).status_code == 204
    assert len(link_rows(platform)) == before - 1  # the row went with its instance
    assert expired(use(client, deleted["url"], {"by": "ann"}))


def test_two_racing_sends_on_a_single_use_link_deliver_one_event(
    client: Client, acme: dict[str, str]
) -> None:
    deploy(client, acme, "twice", TWICE)
    base = "/v1/workflows/twice/instances"
    for n in range(5):
        waiting(client, acme, f"r{n}", base)
        link = mint(client, acme, f"{base}/r{n}/events/vote/links")
        start = threading.Barrier(2)
        statuses: list[int] = []

        def send(
            payload: str,
            url: str = link["url"],
            done: list[int] = statuses,
            start: threading.Barrier = start,
        ) -> None:
            start.wait()
            done.append(use(client, url, payload).status_code)

        threads = [threading.Thread(target=send, args=(p,)) for p in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(statuses) == [202, 410]
        # One event arrived: the first wait took it, the second waits still.
        path = f"{base}/r{n}/steps"
        steps = wait_for(
            lambda path=path: client.get(path, headers=acme).json()["steps"],
            lambda steps: len(steps) == 2,
        )
        assert [s["status"] for s in steps] == ["complete", "waiting"]


def test_another_tenant_cannot_mint_and_bad_links_write_nothing(
    client: Client, acme: dict[str, str], platform: Platform
) -> None:
    waiting(client, acme, "o1")
    other = new_tenant(client, "other")
    deploy(client, other, "approval", APPROVAL)
    path = f"{BASE}/o1/events/approved/links"
    assert mint(client, other, path, status=404)["error"]["code"] == "instance.not_found"
    assert client.post(path).status_code == 401  # minting takes an API key
    for body in (
        {"uses": 0},
        {"uses": 101},
        {"uses": "2"},
        {"ttl": "31 days"},
        {"ttl": 0},
        {"ttl": -5},
        {"ttl": "soon"},
        {"nope": 1},
    ):
        reply = client.post(path, json=body, headers=acme)
        assert reply.status_code == 400, (body, reply.text)
    assert mint(client, acme, f"{BASE}/o1/events/bad.type/links", status=400)
    assert mint(client, acme, f"{BASE}/ghost/events/approved/links", status=404)
    assert link_rows(platform) == []
    # A token that was never minted, and one of the wrong shape.
    assert expired(use(client, "/v1/links/" + "A" * 43, {}))
    assert client.get("/v1/links/" + "A" * 43).status_code == 410
    assert client.post("/v1/links/not.a.token", json={}).status_code == 401


def test_a_link_page_is_self_contained(client: Client, acme: dict[str, str]) -> None:
    deploy(client, acme, "approval", APPROVAL)
    waiting(client, acme, "x-1")
    link = mint(client, acme, f"{BASE}/x-1/events/approved/links")
    page = client.get(link["url"])
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "approval" in page.text and "x-1" in page.text and "approved" in page.text
    assert "<script src" not in page.text and "http" not in page.text.split("<body>", 1)[1]


def test_a_step_mints_a_link_once_and_a_replay_returns_it(
    client: Client, acme: dict[str, str], platform: Platform
) -> None:
    run_linked(client, acme, platform, "restricted")


def test_a_step_mints_a_link_in_the_wasm_python_guest(
    client: Client, acme: dict[str, str], platform: Platform
) -> None:
    python_runtime()  # built from this checkout's runtime (its cache key is their hash)
    run_linked(client, acme, platform, "wasm")


def run_linked(client: Client, acme: dict[str, str], platform: Platform, sandbox: str) -> None:
    body = {"source": textwrap.dedent(LINKED), "sandbox": sandbox}
    assert client.put("/v1/workflows/linked", json=body, headers=acme).status_code == 201
    base = "/v1/workflows/linked/instances"
    assert client.post(base, json={"id": "l1"}, headers=acme).status_code == 201
    waited = wait_for(
        lambda: client.get(f"{base}/l1", headers=acme).json(),
        lambda instance: any(s["name"] == "wait" for s in instance.get("steps", [])),
    )
    steps = {s["name"]: s for s in waited["steps"]}
    link = steps["mint"]["output"]
    assert steps["mail"]["output"] == link  # replayed after the sleep: the same link
    assert len(steps["mint"]["attempts"]) == 1
    # The settings' public URL (here no public_url: the server's host and port) starts it.
    assert link["url"].startswith(platform.settings.link_base() + "/v1/links/")
    path = urlsplit(link["url"]).path
    [row] = link_rows(platform)
    assert row.step_key == "mint#1" and row.event_type == "decision"
    page = client.get(path)
    assert page.status_code == 200 and "linked" in page.text and "decision" in page.text
    assert use(client, path, {"approved": True}).status_code == 202
    done = wait_status(client, acme, f"{base}/l1", "complete")
    assert done["output"] == {"link": link, "mailed": link, "approved": True}
    assert expired(use(client, path, {"approved": False}))


def test_a_step_retried_mint_replaces_its_link(
    client: Client, acme: dict[str, str], platform: Platform
) -> None:
    waiting(client, acme, "o1")
    links = platform.engine.links
    tenant_id = platform.tenants.authenticate(acme["Authorization"].split()[1]).tenant_id
    first = links.mint(tenant_id, "approval", "o1", "approved", step_key="mint#1")
    second = links.mint(tenant_id, "approval", "o1", "approved", step_key="mint#1")
    assert expired(use(client, f"/v1/links/{first.token}", {"by": "old"}))
    assert use(client, f"/v1/links/{second.token}", {"by": "new"}).status_code == 202
    assert wait_status(client, acme, f"{BASE}/o1", "complete")["output"] == {"by": "new"}
    assert len(link_rows(platform)) == 1


def test_the_access_log_hides_link_tokens() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        (
            "127.0.0.1:5000",
            "POST",
            "/v1/links/q8Ga49R9KF22vOm0atqbXEfrwwJRWS6zhpjxR_m97l8",
            "1.1",
            202,
        ),
        None,
    )
    assert HideTokens().filter(record)
    assert "q8Ga49" not in record.getMessage() and "/v1/links/\u2026" in record.getMessage()


def test_a_minted_link_survives_a_crash_and_is_not_minted_again(
    crashable_server: TreadleProcess,
) -> None:
    with tenant_client(crashable_server.base, "crash") as api:
        body = {"source": textwrap.dedent(LINKED), "sandbox": "restricted"}
        assert api.put("/v1/workflows/linked", json=body).status_code == 201
        base = "/v1/workflows/linked/instances"
        assert api.post(base, json={"id": "c1"}).status_code == 201

        def minted() -> dict[str, Any]:
            instance: dict[str, Any] = api.get(f"{base}/c1").json()
            return instance

        before = wait_for(minted, lambda i: any(s["name"] == "mint" for s in i.get("steps", [])))
        link = next(s for s in before["steps"] if s["name"] == "mint")["output"]
        crashable_server.kill()  # SIGKILL, while the instance sleeps or waits
        crashable_server.start()
        after = wait_for(minted, lambda i: any(s["name"] == "wait" for s in i.get("steps", [])))
        steps = {s["name"]: s for s in after["steps"]}
        assert steps["mint"]["output"] == link and len(steps["mint"]["attempts"]) == 1
        assert steps["mail"]["output"] == link
        # Served with --port and no --public-url: the link is the server's own address.
        assert link["url"].startswith(crashable_server.base + "/v1/links/")
        assert httpx.post(link["url"], json={"approved": False}).status_code == 202
        done = wait_for(minted, lambda i: i["status"] in ("complete", "errored"))
        assert done["output"] == {"link": link, "mailed": link, "approved": False}


def test_the_sdk_mints_a_link(client: Client, acme: dict[str, str]) -> None:
    waiting(client, acme, "s1")
    key = acme["Authorization"].removeprefix("Bearer ")
    with treadle.Client(str(client.base_url), api_key=key) as sdk:
        link = sdk.create_link("approval", "s1", "approved", ttl=dt.timedelta(hours=2), uses=1)
        assert link.url.startswith(str(client.base_url).rstrip("/") + "/v1/links/")
        assert link.expires_at.tzinfo is not None
        with pytest.raises(treadle.errors.InvalidInput):
            sdk.create_link("approval", "s1", "approved", uses=0)
    assert use(client, link.url, {"by": "sdk"}).status_code == 202
    assert wait_status(client, acme, f"{BASE}/s1", "complete")["output"] == {"by": "sdk"}
