"""Bounded storage: the log cap per instance, paged reads of logs and steps, and the tenant's
storage quota (``max_storage_mb``) with its count kept exact across deletions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from httpx import Client

from storage import tables
from tests.integration.app import SUM, deploy, new_tenant, wait_for, wait_status

if TYPE_CHECKING:
    from dispatcher import Platform

CHATTY = """
from treadle import WorkflowEntrypoint

class Chatty(WorkflowEntrypoint):
    def run(self, event, step):
        def say(word, fill):
            for i in range(event.payload["lines"]):
                print(f"{word} {i:04d} " + fill * 40)
            return 1

        step.do("first", lambda: say("line", "x"))
        step.sleep("pause", 1)
        return step.do("second", lambda: say("again", "y"))
"""
BULKY = """
from treadle import WorkflowEntrypoint

class Bulky(WorkflowEntrypoint):
    def run(self, event, step):
        for i in range(event.payload["steps"]):
            step.do(f"s{i}", lambda: "x" * event.payload["size"])
        return "done"
"""
TRUNCATED = (
    "log truncated: this instance wrote more than 2048 bytes of logs; later lines are dropped"
)


def _all_pages(client: Client, headers: dict[str, str], path: str, key: str) -> list[Any]:
    items: list[Any] = []
    cursor = None
    while True:
        params = {"limit": "7", **({"cursor": cursor} if cursor else {})}
        reply = client.get(path, params=params, headers=headers)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert set(body) == {key, "next_cursor"}
        items += body[key]
        cursor = body["next_cursor"]
        if cursor is None:
            return items


def test_logs_stop_at_the_cap_with_one_marker_and_are_read_page_by_page(client: Client) -> None:
    acme = new_tenant(client, "acme", max_log_bytes_per_instance=2048)
    deploy(client, acme, "chatty", CHATTY)
    path = "/v1/workflows/chatty/instances/c1"
    body = {"id": "c1", "params": {"lines": 30}}
    assert client.post("/v1/workflows/chatty/instances", json=body, headers=acme).status_code == 201
    wait_status(client, acme, path, "complete")
    lines = _all_pages(client, acme, f"{path}/logs", "logs")
    messages = [line["message"] for line in lines]
    # 30 lines of 50 bytes fit; the second replay's crosses the cap at its 11th line.
    assert messages[-1] == TRUNCATED
    assert messages.count(TRUNCATED) == 1
    kept = messages[:-1]
    assert kept[:30] == [f"line {i:04d} " + "x" * 40 for i in range(30)]
    assert kept[30:] == [f"again {i:04d} " + "y" * 40 for i in range(len(kept) - 30)]
    assert sum(len(m) for m in kept) <= 2048 < sum(len(m) for m in kept) + 50
    whole = client.get(f"{path}/logs", headers=acme).json()
    assert whole == {"logs": lines, "next_cursor": None}


def test_a_large_instance_embeds_a_bounded_list_of_steps_and_pages_the_rest(
    client: Client,
) -> None:
    acme = new_tenant(client, "acme")
    deploy(client, acme, "bulky", BULKY)
    base = "/v1/workflows/bulky/instances"
    for instance_id, steps in (("big", 16), ("small", 3)):
        body = {"id": instance_id, "params": {"steps": steps, "size": 400_000}}
        assert client.post(base, json=body, headers=acme).status_code == 201
    big = wait_status(client, acme, f"{base}/big", "complete")
    small = wait_status(client, acme, f"{base}/small", "complete")
    assert "steps_next_cursor" not in small and len(small["steps"]) == 3
    # 4 MiB of values a page: 10 steps of 400 kB, then a cursor for the rest.
    assert len(big["steps"]) == 10 and big["steps_next_cursor"]
    rest = client.get(
        f"{base}/big/steps", params={"cursor": big["steps_next_cursor"]}, headers=acme
    ).json()
    assert [s["name"] for s in rest["steps"]] == [f"s{i}" for i in range(10, 16)]
    assert rest["next_cursor"] is None
    paged = _all_pages(client, acme, f"{base}/big/steps", "steps")
    assert [s["name"] for s in paged] == [f"s{i}" for i in range(16)]
    assert paged[:10] == big["steps"]
    bad = client.get(f"{base}/big/steps", params={"limit": "0"}, headers=acme)
    assert bad.status_code == 400, bad.text
    unknown = client.get(f"{base}/big/logs", params={"page": "2"}, headers=acme)
    assert unknown.status_code == 400, unknown.text


def _stored(platform: Platform, tenant_id: int) -> int:
    instances = tables.instances
    with platform.db.connect() as conn:
        total = conn.execute(
            sa.select(sa.func.sum(instances.c.stored_bytes)).where(
                instances.c.tenant_id == tenant_id
            )
        ).scalar()
    return int(total or 0)


def test_a_tenant_past_its_storage_errors_once_is_refused_and_recovers_by_deleting(
    client: Client, platform: Platform
) -> None:
    acme = new_tenant(client, "acme", max_storage_mb=1)
    deploy(client, acme, "bulky", BULKY)
    deploy(client, acme, "sum", SUM)
    base = "/v1/workflows/bulky/instances"
    body = {"id": "hog", "params": {"steps": 20, "size": 100_000}}
    assert client.post(base, json=body, headers=acme).status_code == 201
    hog = wait_status(client, acme, f"{base}/hog", "errored")
    assert hog["error"]["name"] == "StorageQuotaExceeded", hog["error"]
    assert "max_storage_mb=1" in hog["error"]["message"]
    failed = [s for s in hog["steps"] if s["status"] == "errored"]
    assert len(failed) == 1 and failed[0]["error"]["name"] == "StorageQuotaExceeded"
    assert all(s["status"] == "complete" for s in hog["steps"][:-1])
    assert len(hog["steps"]) < 20
    tenant_id = platform.tenants.tenant("acme").id
    used = platform.engine.storage_used(tenant_id)
    assert used == _stored(platform, tenant_id)
    assert 1024 * 1024 - 250_000 < used <= 1024 * 1024 + 4096

    refused = client.post(
        "/v1/workflows/sum/instances", json={"params": {"x": "y" * 300_000}}, headers=acme
    )
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "quota.storage"
    assert int(refused.headers["Retry-After"]) >= 1
    batch = client.post(
        "/v1/workflows/sum/instances/batch",
        json={"instances": [{"params": {"x": "y" * 300_000}}]},
        headers=acme,
    )
    assert batch.status_code == 429 and batch.json()["error"]["code"] == "quota.storage"

    assert client.delete(f"{base}/hog", headers=acme).status_code == 204
    assert platform.engine.storage_used(tenant_id) == _stored(platform, tenant_id) == 0
    body = {"id": "s1", "params": {"x": 1}}
    assert client.post("/v1/workflows/sum/instances", json=body, headers=acme).status_code == 201
    wait_status(client, acme, "/v1/workflows/sum/instances/s1", "complete")


def test_the_count_of_a_tenants_storage_stays_exact_across_deletes_and_retention(
    client: Client, platform: Platform
) -> None:
    acme = new_tenant(client, "acme")
    other = new_tenant(client, "other")
    for headers in (acme, other):
        deploy(client, headers, "sum", SUM)
        deploy(client, headers, "bulky", BULKY)
    ids = [f"i{n}" for n in range(6)]
    for instance_id in ids:
        body = {"id": instance_id, "params": {"x": 1, "pad": "p" * 1000}}
        for headers in (acme, other):
            assert client.post("/v1/workflows/sum/instances", json=body,
                               headers=headers).status_code == 201  # fmt: skip
    body = {"id": "b", "params": {"steps": 3, "size": 5000}}
    assert client.post("/v1/workflows/bulky/instances", json=body, headers=acme).status_code == 201
    for instance_id in ids:
        wait_status(client, acme, f"/v1/workflows/sum/instances/{instance_id}", "complete")
    wait_status(client, acme, "/v1/workflows/bulky/instances/b", "complete")
    acme_id, other_id = (platform.tenants.tenant(n).id for n in ("acme", "other"))
    engine = platform.engine

    def exact() -> int:
        used = engine.storage_used(acme_id)
        assert used == _stored(platform, acme_id)
        return used

    full = exact()
    assert full > 6 * 1000 + 3 * 2 * 5000
    assert client.delete("/v1/workflows/sum/instances/i0", headers=acme).status_code == 204
    assert exact() < full
    assert engine.purge_finished(acme_id, retention_days=0) == 6  # i1..i5 and b
    assert exact() == 0
    for instance_id in ("late1", "late2"):
        body = {"id": instance_id, "params": {"x": 1}}
        assert (
            client.post("/v1/workflows/sum/instances", json=body, headers=acme).status_code == 201
        )
    for instance_id in ("late1", "late2"):  # a running instance changes both counts between reads
        wait_status(client, acme, f"/v1/workflows/sum/instances/{instance_id}", "complete")
    assert exact() > 0
    assert client.delete("/v1/workflows/sum", headers=acme).status_code == 204
    assert exact() == 0
    assert engine.storage_used(other_id) == _stored(platform, other_id) > 6 * 1000


def test_the_ledger_of_a_tenant_is_folded_into_one_row_and_keeps_its_sum(
    client: Client, platform: Platform
) -> None:
    new_tenant(client, "acme")
    tenant_id = platform.tenants.tenant("acme").id
    usage = tables.storage_usage
    with platform.db.begin() as conn:
        conn.execute(usage.insert(), [{"tenant_id": tenant_id, "bytes": n} for n in range(300)])
        conn.execute(usage.insert(), [{"tenant_id": tenant_id, "bytes": -100}])

    def rows() -> int:
        with platform.db.connect() as conn:
            query = sa.select(sa.func.count()).where(usage.c.tenant_id == tenant_id)
            return int(conn.execute(query).scalar_one())

    assert platform.engine.storage_used(tenant_id) == sum(range(300)) - 100  # and asks to fold
    wait_for(lambda: {"rows": rows()}, lambda v: v["rows"] == 1)
    assert platform.engine.storage_used(tenant_id) == sum(range(300)) - 100
