"""Per-key flow control through the API, the SDK and the command line (docs/flow-control.md):
what a workflow's ``flow`` and a create's ``key``, ``priority``, ``start_at`` and ``delay``
accept, what they refuse (a 400 naming the field, nothing written) and what reads show."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from loader import Upload
from loader._store import CodeStore, Version
from storage import Database, tables
from tests.integration.app import SUM, deploy, new_tenant
from treadle import Client
from treadle.client import main
from treadle.errors import Conflict, InvalidDuration, InvalidInput

WORKFLOW = "/v1/workflows/sum"
INSTANCES = WORKFLOW + "/instances"
FLOW = {
    "concurrency_per_key": 2,
    "rate_per_key": {"limit": 10, "period": "1 minute"},
    "debounce": "5 seconds",
}
STORED = {"concurrency_per_key": 2, "rate_per_key": {"limit": 10, "period": 60.0}, "debounce": 5.0}


def _put(client: httpx.Client, headers: dict[str, str], flow: Any = None) -> httpx.Response:
    body: dict[str, Any] = {"source": textwrap.dedent(SUM), "sandbox": "restricted"}
    if flow is not None:
        body["flow"] = flow
    return client.put(WORKFLOW, json=body, headers=headers)


@pytest.fixture
def acme(client: httpx.Client) -> dict[str, str]:
    return new_tenant(client, "acme")


def test_a_flow_is_stored_shown_and_replaced_by_each_upload(
    client: httpx.Client, acme: dict[str, str]
) -> None:
    put = _put(client, acme, FLOW)
    assert put.status_code == 201, put.text
    assert put.json()["flow"] == STORED
    assert client.get(WORKFLOW, headers=acme).json()["flow"] == STORED
    assert client.get("/v1/workflows", headers=acme).json()["workflows"][0]["flow"] == STORED

    assert _put(client, acme, {"singleton": True}).status_code == 201  # the same code
    assert client.get(WORKFLOW, headers=acme).json()["flow"] == {"singleton": True}
    assert _put(client, acme).status_code == 201  # no flow: none
    assert client.get(WORKFLOW, headers=acme).json()["flow"] is None


@pytest.mark.parametrize(
    ("flow", "code", "names"),
    [
        ({"concurrency_per_key": 0}, "request.invalid", "flow.concurrency_per_key"),
        ({"concurrency_per_key": True}, "request.invalid", "flow.concurrency_per_key"),
        ({"rate_per_key": {"limit": 0, "period": 1}}, "request.invalid", "rate_per_key.limit"),
        ({"rate_per_key": {"limit": 1, "period": 0}}, "duration.invalid", "rate_per_key.period"),
        ({"rate_per_key": {"limit": 1, "period": "0 s"}}, "duration.invalid", "period"),
        ({"rate_per_key": {"limit": 1}}, "request.invalid", "flow.rate_per_key.period"),
        ({"debounce": -1}, "duration.invalid", "flow.debounce"),
        ({"debounce": "soon"}, "duration.invalid", "flow.debounce"),
        ({"singleton": True, "debounce": 5}, "request.invalid", "singleton and debounce"),
        ({"burst": 3}, "request.invalid", "flow.burst: unknown field"),
    ],
)
def test_a_bad_flow_is_a_400_naming_the_field_and_stores_nothing(
    client: httpx.Client, acme: dict[str, str], flow: Any, code: str, names: str
) -> None:
    answer = _put(client, acme, flow)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == code and names in error["message"], error
    assert client.get(WORKFLOW, headers=acme).status_code == 404


BAD_CREATES = [
    ({"priority": 10}, "request.invalid", "priority: must be an integer from 0 to 9"),
    ({"priority": -1}, "request.invalid", "priority: must be an integer from 0 to 9"),
    ({"priority": True}, "request.invalid", "priority"),
    ({"priority": "5"}, "request.invalid", "priority"),
    ({"key": ""}, "request.invalid", "key: must be 1 to 128 characters"),
    ({"key": "k" * 129}, "request.invalid", "key: must be 1 to 128 characters"),
    ({"key": 7}, "request.invalid", "key"),
    ({"start_at": "tomorrow"}, "duration.invalid", "start_at"),
    ({"start_at": "2030-01-01T09:00:00"}, "duration.invalid", "with a time zone"),
    ({"start_at": 1893456000}, "request.invalid", "start_at"),
    ({"delay": -5}, "duration.invalid", "delay: must not be negative"),
    ({"delay": "5 parsecs"}, "duration.invalid", "delay"),
    ({"delay": 5, "start_at": "2030-01-01T09:00:00Z"}, "request.invalid", "not both"),
]


@pytest.mark.parametrize(("body", "code", "names"), BAD_CREATES)
def test_a_bad_create_is_a_400_naming_the_field_and_writes_nothing(
    client: httpx.Client, acme: dict[str, str], body: Any, code: str, names: str
) -> None:
    deploy(client, acme, "sum", SUM)
    for path, sent, where in [
        (INSTANCES, {"params": {"x": 1}, **body}, ""),
        (INSTANCES + "/batch", {"instances": [{"params": {"x": 1}}, body]}, "instances.1"),
    ]:
        answer = client.post(path, json=sent, headers=acme)
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["code"] == code and names in error["message"], error
        assert where in error["message"], error
    assert client.get(INSTANCES, headers=acme).json()["instances"] == []


def test_a_good_create_is_accepted_in_every_form(
    client: httpx.Client, acme: dict[str, str]
) -> None:
    assert _put(client, acme, FLOW).status_code == 201
    for extra in [
        {"key": "k" * 128, "priority": 0},
        {"key": "ü", "priority": 9, "delay": "2 hours"},
        {"start_at": "2030-01-01T09:00:00+02:00"},
        {"start_at": "2020-01-01T09:00:00Z", "delay": None},
        {"delay": 0},
    ]:
        answer = client.post(INSTANCES, json={"params": {"x": 1}, **extra}, headers=acme)
        assert answer.status_code == 201, (extra, answer.text)
    batch = {"instances": [{"key": "a", "priority": 7, "delay": 60}, {"key": "b"}]}
    answer = client.post(INSTANCES + "/batch", json=batch, headers=acme)
    assert answer.status_code == 200 and answer.json()["errors"] == [], answer.text


def test_the_sdk_and_the_command_line_pass_every_field(
    client: httpx.Client,
    acme: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Needs the engine's part: the instance's ``key``, ``priority`` and ``waiting_reason``."""
    url = str(client.base_url).rstrip("/")
    key = acme["Authorization"].removeprefix("Bearer ")
    with Client(url, api_key=key) as sdk:
        stored = sdk.deploy("sum", textwrap.dedent(SUM), flow={"concurrency_per_key": 1})
        assert stored.flow is not None and stored.flow.concurrency_per_key == 1
        created = sdk.create("sum", {"x": 1}, key="user-1", priority=8, delay="1 hour")
        instance = sdk.get("sum", created.id)
        assert (instance.key, instance.priority, instance.status) == ("user-1", 8, "queued")
        assert instance.waiting_reason == "start_at"
        with pytest.raises(InvalidInput, match="priority: must be an integer from 0 to 9"):
            sdk.create("sum", {"x": 1}, priority=12)
        with pytest.raises(InvalidDuration, match="start_at"):
            sdk.create("sum", {"x": 1}, start_at="next tuesday")

    for name in [n for n in os.environ if n.startswith("TREADLE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TREADLE_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("TREADLE_URL", url)
    monkeypatch.setenv("TREADLE_API_KEY", key)
    (tmp_path / "sum.py").write_text(textwrap.dedent(SUM))

    def treadle(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(list(args))
        return code, capsys.readouterr().out

    code, out = treadle(
        "deploy", str(tmp_path / "sum.py"), "--rate-per-key", "10/1m", "--singleton", "--json"
    )
    assert code == 0, out
    flow = json.loads(out)["flow"]
    assert flow["rate_per_key"] == {"limit": 10, "period": 60.0} and flow["singleton"], flow
    code, out = treadle("run", "sum", "--flow-key", "user-2", "--priority", "3", "--delay", "1h")
    assert code == 0, out
    created_id = out.split()[1]
    code, out = treadle("instances", "get", "sum", created_id)
    assert code == 0, out
    assert "waiting:   start_at" in out and "key:" in out and "user-2" in out, out
    assert "priority:  3" in out, out
    code, out = treadle("instances", "list", "sum")
    assert "KEY" in out and "user-2" in out, out


def test_an_upload_gives_the_workflows_keys_their_new_limits(database_url: str) -> None:
    db = Database(database_url)
    try:
        with db.begin() as conn:
            conn.execute(
                sa.insert(tables.tenants).values(id=1, name="acme", policy={}, created_at=0.0)
            )
        store = CodeStore(db)
        code = Version("w", "v1", "restricted", "W", "source", 1.0)
        store.save(1, code, {"concurrency_per_key": 1})
        keys = tables.flow_keys
        with db.begin() as conn:
            for key, ready_at in [("full", None), ("ready", 5.0)]:
                conn.execute(
                    sa.insert(keys).values(
                        tenant_id=1, workflow="w", flow_key=key, concurrency=1, ready_at=ready_at
                    )
                )
        flow = Upload.model_validate({"sandbox": "restricted", "source": "x", "flow": FLOW}).flow
        assert flow is not None
        store.save(1, Version("w", "v1", "restricted", "W", "source", 9.0), flow.stored())
        with db.connect() as conn:
            rows = conn.execute(sa.select(keys).order_by(keys.c.flow_key)).all()
        assert [(r.concurrency, r.rate_limit, r.rate_period, r.ready_at) for r in rows] == [
            (2, 10, 60.0, 9.0),  # was full: looked at again now
            (2, 10, 60.0, 5.0),
        ]
        assert store.current_workflow(1, "w") == ("v1", STORED)
        assert store.current_workflow(1, "nope") is None
    finally:
        db.dispose()


def test_singleton_and_debounce_answers(client: httpx.Client, acme: dict[str, str]) -> None:
    """Needs the engine's part: a singleton's 409 names the live instance; a debounced
    create answers the instance it was merged into."""
    assert _put(client, acme, {"singleton": True}).status_code == 201
    later = {"key": "k", "delay": "1 hour"}
    first = client.post(INSTANCES, json={"id": "one", "params": {"x": 1}, **later}, headers=acme)
    assert first.status_code == 201, first.text
    second = client.post(INSTANCES, json={"id": "two", "params": {"x": 2}, **later}, headers=acme)
    assert second.status_code == 409, second.text
    error = second.json()["error"]
    assert (error["code"], error["existing_id"]) == ("instance.singleton", "one"), error
    batch = client.post(INSTANCES + "/batch", json={"instances": [later]}, headers=acme).json()
    assert batch["created"] == [] and batch["errors"][0]["existing_id"] == "one", batch
    url, key = str(client.base_url).rstrip("/"), acme["Authorization"].removeprefix("Bearer ")
    with Client(url, api_key=key) as sdk, pytest.raises(Conflict) as refused:
        sdk.create("sum", {"x": 3}, key="k")
    assert (refused.value.code, refused.value.details["existing_id"]) == (
        "instance.singleton",
        "one",
    )

    assert _put(client, acme, {"debounce": 60}).status_code == 201
    debounced = client.post(INSTANCES, json={"params": {"x": 1}, "key": "d"}, headers=acme).json()
    assert "debounced" not in debounced, debounced
    again = client.post(INSTANCES, json={"params": {"x": 9}, "key": "d"}, headers=acme).json()
    assert again == {**debounced, "debounced": True}, again
    instance = client.get(f"{INSTANCES}/{again['id']}", headers=acme).json()
    assert (instance["params"], instance["waiting_reason"]) == ({"x": 9}, "debounce"), instance
