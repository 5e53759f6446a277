"""The instance API and the service routes (docs/api.md), end to end through the engine."""

from __future__ import annotations

import time

import pytest
from httpx import Client
from starlette.routing import Route

from dispatcher import Platform, create_app
from sandbox import LAYERS
from tests.integration.app import ADMIN, APPROVAL, SUM, deploy, new_tenant, wait_status

BASE = "/v1/workflows/sum/instances"


@pytest.fixture
def acme(client: Client) -> dict[str, str]:
    headers = new_tenant(client, "acme", vars={"region": "eu"})
    deploy(client, headers, "sum", SUM)
    return headers


def test_an_instance_runs_the_current_version_to_completion(
    client: Client, acme: dict[str, str]
) -> None:
    version = client.get("/v1/workflows/sum", headers=acme).json()["version"]
    reply = client.post(BASE, json={"id": "i1", "params": {"x": 1}}, headers=acme)
    assert reply.status_code == 201
    assert reply.json() == {"id": "i1", "status": "queued", "version": version}
    done = wait_status(client, acme, f"{BASE}/i1", "complete", "errored")
    assert done["status"] == "complete", done
    assert done["output"] == {"a": 2, "vars": {"region": "eu"}}
    assert [(s["name"], s["status"], s["output"]) for s in done["steps"]] == [("a", "complete", 2)]
    logs = client.get(f"{BASE}/i1/logs", headers=acme).json()["logs"]
    assert [(x["step"], x["message"]) for x in logs] == [(None, "a is 2")]


def test_an_instance_without_an_id_gets_one(client: Client, acme: dict[str, str]) -> None:
    reply = client.post(BASE, headers=acme)
    assert reply.status_code == 201 and reply.json()["id"]


def test_creating_an_existing_instance_is_a_409(client: Client, acme: dict[str, str]) -> None:
    client.post(BASE, json={"id": "i1"}, headers=acme)
    reply = client.post(BASE, json={"id": "i1"}, headers=acme)
    assert reply.status_code == 409
    assert reply.json()["error"]["code"] == "instance.already_exists"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"id": "bad id"}, "instance.invalid_id"),
        ({"id": "x" * 101}, "instance.invalid_id"),
        ({"id": 5}, "request.invalid"),
        ({"params": {}, "extra": 1}, "request.invalid"),
    ],
)
def test_a_bad_create_is_a_400(
    client: Client, acme: dict[str, str], body: dict[str, object], code: str
) -> None:
    reply = client.post(BASE, json=body, headers=acme)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["code"] == code


def test_params_over_a_mebibyte_are_a_413(client: Client, acme: dict[str, str]) -> None:
    reply = client.post(BASE, json={"params": "x" * (1024 * 1024 + 1)}, headers=acme)
    assert reply.status_code == 413


def test_an_instance_of_a_missing_workflow_is_a_404(client: Client, acme: dict[str, str]) -> None:
    for path in ["/v1/workflows/nope/instances", "/v1/workflows/nope/instances/batch"]:
        reply = client.post(path, json={"instances": []} if "batch" in path else {}, headers=acme)
        assert reply.status_code == 404, path
        assert reply.json()["error"]["code"] == "workflow.not_found"
    assert client.get("/v1/workflows/nope/instances", headers=acme).status_code == 404


def test_a_batch_reports_errors_per_item(client: Client, acme: dict[str, str]) -> None:
    client.post(BASE, json={"id": "taken"}, headers=acme)
    items = [{"id": "a"}, {"id": "taken"}, {"id": "bad id"}, {"params": 1}, {"id": "a"}]
    reply = client.post(f"{BASE}/batch", json={"instances": items}, headers=acme)
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert [c["id"] for c in result["created"]] == ["a", result["created"][1]["id"]]
    assert [(e["index"], e["code"]) for e in result["errors"]] == [
        (1, "instance.already_exists"),
        (2, "instance.invalid_id"),
        (4, "instance.already_exists"),
    ]
    assert all(e["message"] and e["id"] for e in result["errors"])


def test_a_batch_of_more_than_100_is_a_400(client: Client, acme: dict[str, str]) -> None:
    items = [{"id": f"i{n}"} for n in range(101)]
    reply = client.post(f"{BASE}/batch", json={"instances": items}, headers=acme)
    assert reply.status_code == 400
    assert "at most 100" in reply.json()["error"]["message"]


def test_instances_are_listed_newest_first_page_by_page(
    client: Client, acme: dict[str, str]
) -> None:
    items = [{"id": f"i{n}"} for n in range(5)]
    client.post(f"{BASE}/batch", json={"instances": items}, headers=acme)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = client.get(BASE, params=params, headers=acme).json()
        assert len(page["instances"]) <= 2
        seen += [i["id"] for i in page["instances"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["i4", "i3", "i2", "i1", "i0"]
    for status in ["complete", "queued", "running"]:
        reply = client.get(BASE, params={"status": status}, headers=acme)
        assert reply.status_code == 200
        assert all(i["status"] == status for i in reply.json()["instances"])


@pytest.mark.parametrize(
    "params",
    [{"limit": "x"}, {"limit": "0"}, {"limit": "1001"}, {"status": "nope"}, {"cursor": "!"}],
)
def test_bad_list_parameters_are_a_400(
    client: Client, acme: dict[str, str], params: dict[str, str]
) -> None:
    reply = client.get(BASE, params=params, headers=acme)
    assert reply.status_code == 400, reply.text


def test_an_event_wakes_a_waiting_instance(client: Client, acme: dict[str, str]) -> None:
    deploy(client, acme, "approval", APPROVAL)
    base = "/v1/workflows/approval/instances"
    client.post(base, json={"id": "o1"}, headers=acme)
    wait_status(client, acme, f"{base}/o1", "waiting")
    reply = client.post(f"{base}/o1/events/approved", json={"by": "ann"}, headers=acme)
    assert reply.status_code == 202
    done = wait_status(client, acme, f"{base}/o1", "complete", "errored")
    assert done["output"] == {"by": "ann"}
    finished = client.post(f"{base}/o1/events/approved", json={}, headers=acme)
    assert finished.status_code == 409


def test_bad_events_are_refused(client: Client, acme: dict[str, str]) -> None:
    client.post(BASE, json={"id": "i1"}, headers=acme)
    assert client.post(f"{BASE}/ghost/events/x", json=1, headers=acme).status_code == 404
    reply = client.post(f"{BASE}/i1/events/bad.type", json=1, headers=acme)
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "event.invalid_type"
    bad_json = client.post(f"{BASE}/i1/events/ok", content=b"{", headers=acme)
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "request.json"


def test_another_tenants_instances_are_not_found(client: Client, acme: dict[str, str]) -> None:
    client.post(BASE, json={"id": "i1"}, headers=acme)
    other = new_tenant(client, "other")
    deploy(client, other, "sum", SUM)
    assert client.get(f"{BASE}/i1", headers=other).status_code == 404
    assert client.get(f"{BASE}/i1/logs", headers=other).status_code == 404
    assert client.post(f"{BASE}/i1/events/x", json=1, headers=other).status_code == 404
    assert client.get(BASE, headers=other).json()["instances"] == []
    assert client.post(BASE, json={"id": "i1"}, headers=other).status_code == 201  # its own


def test_service_routes(client: Client, acme: dict[str, str]) -> None:
    health = client.get("/healthz").json()
    assert health["status"] == "ok"
    assert set(health["sandbox_wall"]) == set(LAYERS)  # which layers are up: this machine's
    client.post(BASE, json={"id": "i1", "params": {"x": 1}}, headers=acme)
    wait_status(client, acme, f"{BASE}/i1", "complete")
    refused = client.get("/metrics", headers=acme)  # the whole platform's counts
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "auth.unauthorized"
    assert client.get("/metrics").status_code == 401
    metrics = client.get("/metrics", headers=ADMIN)
    assert metrics.headers["content-type"].startswith("text/plain")
    lines = dict(line.rsplit(" ", 1) for line in metrics.text.splitlines() if line[0] != "#")
    complete = [v for k, v in lines.items() if k.startswith("treadle_instances{")
                and 'status="complete"' in k]  # fmt: skip
    assert [float(v) for v in complete] == [1]
    assert float(lines["treadle_commits_total"]) > 0
    assert float(lines["treadle_steps_total"]) >= 1
    page = client.get("/playground")
    assert page.status_code == 200 and "playground" in page.text
    assert page.headers["content-type"].startswith("text/html")


def test_unknown_routes_and_methods_answer_json_errors(
    client: Client, acme: dict[str, str]
) -> None:
    missing = client.get("/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = client.patch("/v1/workflows", headers=acme)
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


def test_the_openapi_document_describes_every_route(client: Client, platform: Platform) -> None:
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    app = create_app(platform)
    served = {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    described = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert served == described


def test_creates_beyond_the_rate_are_refused_and_nothing_of_them_is_kept(client: Client) -> None:
    headers = new_tenant(client, "rated", creates_per_second=5)
    deploy(client, headers, "sum", SUM)
    batch = {"instances": [{"id": f"r{i}", "params": {"x": i}} for i in range(8)]}
    reply = client.post(f"{BASE}/batch", json=batch, headers=headers)
    assert reply.status_code == 200
    assert [c["id"] for c in reply.json()["created"]] == [f"r{i}" for i in range(5)]
    assert [(e["index"], e["code"]) for e in reply.json()["errors"]] == [
        (5, "quota.rate_limited"),
        (6, "quota.rate_limited"),
        (7, "quota.rate_limited"),
    ]
    assert reply.headers["Retry-After"] == "1"
    refused = client.post(BASE, json={"id": "r8"}, headers=headers)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "quota.exceeded"
    assert int(refused.headers["Retry-After"]) >= 1
    listed = client.get(BASE, headers=headers).json()["instances"]
    assert sorted(i["id"] for i in listed) == [f"r{i}" for i in range(5)]
    # The bucket refills at the policy's rate.
    deadline = time.monotonic() + 5
    while client.post(BASE, json={"id": "r8"}, headers=headers).status_code == 429:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.get(f"{BASE}/r8", headers=headers).status_code == 200
