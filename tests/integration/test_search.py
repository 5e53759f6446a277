"""Instance tags and search through the API, the SDK and the command line: tags given at
create are shown and searched; each filter of ``GET .../instances`` and ``GET /v1/instances``
alone and combined, paged; bad tags and filters are a 400 that writes nothing."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from storage import Database, tables
from tests.integration.app import SUM, deploy, new_tenant, wait_status
from treadle import Client
from treadle.client import main
from treadle.errors import InvalidInput

FAIL = """
from treadle import WorkflowEntrypoint

class Fail(WorkflowEntrypoint):
    def run(self, event, step):
        if event.payload.get("fail"):
            raise KeyError("boom")
        return step.do("ok", lambda: 1)
"""
WAIT = """
from treadle import WorkflowEntrypoint

class Wait(WorkflowEntrypoint):
    def run(self, event, step):
        step.wait_for_event("go", type="go", timeout="1 hour")
"""


@pytest.fixture
def acme(client: httpx.Client) -> dict[str, str]:
    return new_tenant(client, "acme")


def _create(
    client: httpx.Client, headers: dict[str, str], workflow: str, id_: str, **body: Any
) -> None:
    answer = client.post(
        f"/v1/workflows/{workflow}/instances", json={"id": id_, **body}, headers=headers
    )
    assert answer.status_code == 201, answer.text


def _ids(client: httpx.Client, headers: dict[str, str], path: str, **query: Any) -> list[str]:
    """Every id a listing gives, page after page (each exactly once)."""
    found: list[str] = []
    cursor = None
    while True:
        params = {**query, "limit": 2, **({"cursor": cursor} if cursor else {})}
        answer = client.get(path, params=params, headers=headers)
        assert answer.status_code == 200, answer.text
        found += [i["id"] for i in answer.json()["instances"]]
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            assert len(found) == len(set(found)), found
            return found


@pytest.fixture
def fleet(client: httpx.Client, acme: dict[str, str]) -> dict[str, str]:
    """Instances of three workflows, newest last: their ids tell what they are."""
    deploy(client, acme, "fail", FAIL)
    deploy(client, acme, "wait", WAIT)
    deploy(client, acme, "sum", SUM)
    ml, prod = {"team": "ml"}, {"team": "ml", "env": "prod"}
    _create(client, acme, "fail", "f-ok-1", params={}, tags=ml)
    _create(client, acme, "fail", "f-bad-1", params={"fail": True}, tags=prod)
    _create(client, acme, "wait", "w-1", params={}, tags=prod, key="user-1")
    _create(client, acme, "wait", "w-2", params={}, key="user-2")
    _create(client, acme, "sum", "s-1", params={"x": 1}, tags={"team": "web"})
    _create(client, acme, "fail", "f-bad-2", params={"fail": True})
    for path, status in [
        ("fail/instances/f-ok-1", "complete"),
        ("fail/instances/f-bad-1", "errored"),
        ("fail/instances/f-bad-2", "errored"),
        ("wait/instances/w-1", "waiting"),
        ("wait/instances/w-2", "waiting"),
        ("sum/instances/s-1", "complete"),
    ]:
        wait_status(client, acme, f"/v1/workflows/{path}", status)
    return acme


def test_tags_are_stored_and_shown(client: httpx.Client, acme: dict[str, str]) -> None:
    deploy(client, acme, "sum", SUM)
    tags = {"team": "ml", "run.id": "a/b:c-1", "empty": ""}
    _create(client, acme, "sum", "t1", params={"x": 1}, tags=tags)
    _create(client, acme, "sum", "t2", params={"x": 1})
    got = client.get("/v1/workflows/sum/instances/t1", headers=acme).json()
    assert got["tags"] == tags
    assert client.get("/v1/workflows/sum/instances/t2", headers=acme).json()["tags"] == {}
    listed = client.get("/v1/workflows/sum/instances", headers=acme).json()["instances"]
    assert {i["id"]: i["tags"] for i in listed} == {"t1": tags, "t2": {}}
    batch = {"instances": [{"id": "b1", "params": {"x": 1}, "tags": {"k": "v"}}]}
    answer = client.post("/v1/workflows/sum/instances/batch", json=batch, headers=acme)
    assert answer.status_code == 200 and answer.json()["errors"] == [], answer.text
    assert _ids(client, acme, "/v1/instances", **{"tag.k": "v"}) == ["b1"]


BAD_TAGS = [
    ({f"k{n}": "v" for n in range(17)}, "17 pairs"),
    ({"k" * 65: "v"}, "key"),
    ({"": "v"}, "key"),
    ({"bad key": "v"}, "key"),
    ({"k": "v" * 257}, "longer than 256"),
    ({"k": 1}, "must be a string"),
    ({"k": None}, "must be a string"),
    (["k", "v"], "must be an object"),
]


@pytest.mark.parametrize(("tags", "says"), BAD_TAGS)
def test_bad_tags_are_a_400_and_write_nothing(
    client: httpx.Client, acme: dict[str, str], database_url: str, tags: Any, says: str
) -> None:
    deploy(client, acme, "sum", SUM)
    body = {"id": "x", "params": {"x": 1}, "tags": tags}
    answer = client.post("/v1/workflows/sum/instances", json=body, headers=acme)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "instance.invalid_tags" and says in error["message"], error
    good = {"id": "y", "params": {"x": 1}, "tags": {"ok": "1"}}
    batch = {"instances": [body, good]}
    answer = client.post("/v1/workflows/sum/instances/batch", json=batch, headers=acme)
    assert answer.status_code == 200, answer.text
    assert [e["code"] for e in answer.json()["errors"]] == ["instance.invalid_tags"]
    assert [c["id"] for c in answer.json()["created"]] == ["y"]
    db = Database(database_url)
    try:
        with db.connect() as conn:
            stored = conn.execute(sa.select(tables.instances.c.id, tables.instances.c.tags))
            assert [tuple(r) for r in stored] == [("y", {"ok": "1"})]
    finally:
        db.dispose()


def test_each_filter_alone_and_combined(client: httpx.Client, fleet: dict[str, str]) -> None:
    everything = ["f-bad-2", "s-1", "w-2", "w-1", "f-bad-1", "f-ok-1"]
    assert _ids(client, fleet, "/v1/instances") == everything
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"status": "errored"}, ["f-bad-2", "f-bad-1"]),
        ({"status": ["complete", "waiting"]}, ["s-1", "w-2", "w-1", "f-ok-1"]),
        ({"tag.team": "ml"}, ["w-1", "f-bad-1", "f-ok-1"]),
        ({"tag.team": "ml", "tag.env": "prod"}, ["w-1", "f-bad-1"]),
        ({"tag.team": "ml", "status": "errored"}, ["f-bad-1"]),
        ({"tag.team": "nobody"}, []),
        ({"key": "user-1"}, ["w-1"]),
        ({"id_prefix": "f-bad"}, ["f-bad-2", "f-bad-1"]),
        ({"id_prefix": "f-bad-1"}, ["f-bad-1"]),
        ({"id_prefix": "f_"}, []),
        ({"error_name": "KeyError"}, ["f-bad-2", "f-bad-1"]),
        ({"error_name": "KeyError", "tag.env": "prod"}, ["f-bad-1"]),
        ({"error_name": "ValueError"}, []),
        ({"created_after": "2000-01-01T00:00:00Z"}, everything),
        ({"created_before": "2000-01-01T00:00:00+02:00"}, []),
        ({"status": "waiting", "key": "user-2", "id_prefix": "w"}, ["w-2"]),
    ]
    for query, expected in cases:
        assert _ids(client, fleet, "/v1/instances", **query) == expected, query
    per_workflow = [
        ({}, ["f-bad-2", "f-bad-1", "f-ok-1"]),
        ({"tag.team": "ml"}, ["f-bad-1", "f-ok-1"]),
        ({"status": "errored", "tag.env": "prod"}, ["f-bad-1"]),
        ({"tag.team": "web"}, []),
        ({"key": "user-1"}, []),
    ]
    for query, expected in per_workflow:
        assert _ids(client, fleet, "/v1/workflows/fail/instances", **query) == expected, query
    # Shown to the millisecond: w-1 was created at or after the time shown, before the next.
    created = client.get("/v1/workflows/wait/instances/w-1", headers=fleet).json()["created_at"]
    after = _ids(client, fleet, "/v1/instances", created_after=created)
    before = _ids(client, fleet, "/v1/instances", created_before=created)
    assert after[-1] == "w-1" and before == everything[len(after) :], (after, before)


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"colour": "red"}, "request.unknown_parameter"),
        ({"tags": "team:ml"}, "request.unknown_parameter"),
        ({"status": "done"}, "instance.invalid_status"),
        ({"status": ""}, "instance.invalid_status"),
        ({"created_after": "2026-01-01"}, "request.invalid_filter"),
        ({"created_after": "yesterday"}, "request.invalid_filter"),
        ({"tag.bad key": "v"}, "instance.invalid_tags"),
        ({"key": ""}, "request.invalid_filter"),
        ({"cursor": "nonsense!"}, "request.invalid_cursor"),
    ],
)
def test_a_bad_filter_is_a_400(
    client: httpx.Client, acme: dict[str, str], query: dict[str, str], code: str
) -> None:
    deploy(client, acme, "sum", SUM)
    for path in ("/v1/instances", "/v1/workflows/sum/instances"):
        answer = client.get(path, params=query, headers=acme)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == code, answer.text


def test_another_tenants_instances_never_appear(
    client: httpx.Client, fleet: dict[str, str]
) -> None:
    other = new_tenant(client, "other")
    deploy(client, other, "mine", SUM)
    _create(client, other, "mine", "o-1", params={"x": 1}, tags={"team": "ml"})
    assert _ids(client, other, "/v1/instances") == ["o-1"]
    assert _ids(client, other, "/v1/instances", **{"tag.team": "ml"}) == ["o-1"]
    assert "o-1" not in _ids(client, fleet, "/v1/instances", **{"tag.team": "ml"})
    answer = client.get("/v1/workflows/fail/instances", params={"tag.team": "ml"}, headers=other)
    assert answer.status_code == 404, answer.text


def test_a_debounced_create_replaces_the_tags(client: httpx.Client, acme: dict[str, str]) -> None:
    body = {"source": SUM, "sandbox": "restricted", "flow": {"debounce": "1 hour"}}
    assert client.put("/v1/workflows/sum", json=body, headers=acme).status_code == 201
    _create(client, acme, "sum", "d1", params={"x": 1}, key="k", tags={"v": "1"})
    answer = client.post(
        "/v1/workflows/sum/instances",
        json={"id": "d2", "params": {"x": 2}, "key": "k", "tags": {"v": "2"}},
        headers=acme,
    )
    assert answer.status_code == 201 and answer.json()["id"] == "d1", answer.text
    assert client.get("/v1/workflows/sum/instances/d1", headers=acme).json()["tags"] == {"v": "2"}
    assert _ids(client, acme, "/v1/instances", **{"tag.v": "1"}) == []
    assert _ids(client, acme, "/v1/instances", **{"tag.v": "2"}) == ["d1"]


def test_the_sdk_and_the_command_line_filter(
    client: httpx.Client,
    fleet: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = str(client.base_url).rstrip("/")
    key = fleet["Authorization"].removeprefix("Bearer ")
    with Client(url, api_key=key) as sdk:
        created = sdk.create("sum", {"x": 1}, id="sdk-1", tags={"team": "sdk"})
        assert sdk.get("sum", created.id).tags == {"team": "sdk"}
        page = sdk.all_instances(tags={"team": "ml"}, status=["errored", "waiting"])
        assert [i.id for i in page.instances] == ["w-1", "f-bad-1"]
        page = sdk.instances("fail", error_name="KeyError", limit=1)
        assert [i.id for i in page.instances] == ["f-bad-2"] and page.next_cursor
        page = sdk.all_instances(id_prefix="sdk", created_after=time.time() - 3600)
        assert [i.id for i in page.instances] == ["sdk-1"]
        with pytest.raises(InvalidInput, match="17"):
            sdk.create("sum", {"x": 1}, tags={f"k{n}": "v" for n in range(17)})

    for name in [n for n in os.environ if n.startswith("TREADLE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TREADLE_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("TREADLE_URL", url)
    monkeypatch.setenv("TREADLE_API_KEY", key)

    def treadle(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    code, out = treadle(
        "run", "sum", "--params", '{"x": 2}', "--id", "cli-1", "--tag", "team=cli", "--tag", "a=b=c"
    )
    assert code == 0, out
    code, out = treadle("instances", "get", "sum", "cli-1", "--json")
    assert code == 0 and json.loads(out)["tags"] == {"team": "cli", "a": "b=c"}, out
    code, out = treadle("instances", "list", "--tag", "team=ml", "--status", "errored", "--json")
    assert code == 0, out
    assert [i["id"] for i in json.loads(out)["instances"]] == ["f-bad-1"]
    code, out = treadle("instances", "list", "--status", "waiting")
    assert code == 0 and "WORKFLOW" in out and "w-1" in out and "f-bad-1" not in out, out
    code, out = treadle(
        "instances", "list", "fail", "--error-name", "KeyError", "--id-prefix", "f-bad-1"
    )
    assert code == 0 and "f-bad-1" in out and "f-bad-2" not in out, out
    code, out = treadle(
        "instances", "list", "--flow-key", "user-2", "--created-after", "2000-01-01T00:00:00Z"
    )
    assert code == 0 and "w-2" in out and "w-1" not in out, out
    code, out = treadle("instances", "list", "--status", "finished")
    assert code != 0 and "unknown status" in out, out
    with pytest.raises(SystemExit):  # argparse refuses it, saying how to give a tag
        treadle("run", "sum", "--tag", "novalue")
    assert "k=v" in capsys.readouterr().err


def _scans(plan: Any) -> list[tuple[str, str | None, int]]:
    """Each scan of the plan: its type, its index and the rows it read (kept or not)."""
    nodes, found = [plan[0]["Plan"]], []
    while nodes:
        node = nodes.pop()
        nodes += node.get("Plans", [])
        if "Scan" in node["Node Type"]:
            read = node["Actual Rows"] * node["Actual Loops"] + node.get(
                "Rows Removed by Filter", 0
            )
            found.append((node["Node Type"], node.get("Index Name"), read))
    return found


def test_filters_over_many_instances_read_indexes_not_the_table(postgresql_url: str) -> None:
    """200,000 instances of a tenant (after 20,000 of another) written by one statement: the
    first page of each filter, tag and status combined too, of either tenant, reads indexes,
    never the table, and at most a fraction of the rows (those past ``CLOCK_SLACK`` of a time
    bound, for a time filter: 30,000 here)."""
    from bench.search import filters, populate
    from engine._search import InstanceFilter, listing

    db = Database(postgresql_url)
    try:
        tenant, quiet = populate(db, 200_000)
        checked = dict(filters(200_000))
        checked["status=errored + tag team=t3"] = InstanceFilter(
            statuses=("errored",), tags=(("team", "t3"),)
        )
        cases = [(tenant, name, match) for name, match in checked.items()]
        cases += [(quiet, name, match) for name, match in filters(20_000)]
        for owner, name, match in cases:
            query = listing(owner, match, None).limit(51)
            sql = str(
                query.compile(dialect=db.engine.dialect, compile_kwargs={"literal_binds": True})
            )
            with db.connect() as conn:
                explain = f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}"
                plan = conn.execute(sa.text(explain)).scalar_one()
            scans = _scans(plan)
            assert scans, (name, plan)
            assert all(kind != "Seq Scan" for kind, _, _ in scans), (name, scans)
            assert sum(read for _, _, read in scans) < 40_000, (name, scans)
    finally:
        db.dispose()
