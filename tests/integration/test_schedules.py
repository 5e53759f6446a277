"""Schedules over HTTP (docs/schedules.md) on SQLite and PostgreSQL: put, read, delete, bad
input refused naming its field with nothing written, other tenants kept out, and fires made
by the firer on a clock the test moves (``Firer.fire_due``: one pass, as the thread makes)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench._processes import TreadleProcess
from dispatcher import Platform
from engine._cron import fire_id
from storage import ManualClock
from tests.integration.app import ADMIN_TOKEN, deploy, new_tenant, wait_for, wait_status
from tests.integration.test_client_cli import Run, acme, config_file, treadle
from treadle import AsyncClient, Client
from treadle.errors import InvalidInput, NotFound

__all__ = ["acme", "config_file", "treadle"]  # the command line's fixtures, used here too

QUICK = """
from treadle import WorkflowEntrypoint

class Quick(WorkflowEntrypoint):
    def run(self, event, step):
        return event.payload
"""
WAIT = """
from treadle import WorkflowEntrypoint

class Wait(WorkflowEntrypoint):
    def run(self, event, step):
        return step.wait_for_event("go", type="go", timeout="1 hour")
"""
PATH = "/v1/workflows/quick/schedules"


@pytest.fixture
def tenant(client: httpx.Client) -> dict[str, str]:
    headers = new_tenant(client, "acme")
    deploy(client, headers, "quick", QUICK)
    return headers


def test_put_get_list_delete(client: httpx.Client, tenant: dict[str, str]) -> None:
    body = {"cron": "30 2 * * *", "timezone": "Europe/Berlin", "params": {"a": 1}}
    created = client.put(f"{PATH}/nightly", json=body, headers=tenant)
    assert created.status_code == 201, created.text
    schedule = created.json()
    assert schedule["id"] == "nightly" and schedule["workflow"] == "quick"
    assert (schedule["cron"], schedule["every"], schedule["timezone"]) == (
        "30 2 * * *",
        None,
        "Europe/Berlin",
    )
    assert (schedule["overlap"], schedule["catch_up"], schedule["paused"]) == (
        "skip",
        "latest",
        False,
    )
    assert schedule["next_fire_at"].endswith(("T00:30:00.000Z", "T01:30:00.000Z"))
    assert schedule["last_fire_at"] is None

    replaced = client.put(f"{PATH}/nightly", json={**body, "paused": True}, headers=tenant)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["paused"] is True and replaced.json()["next_fire_at"] is None
    assert client.get(f"{PATH}/nightly", headers=tenant).json() == replaced.json()
    listed = client.get(PATH, headers=tenant).json()["schedules"]
    assert [s["id"] for s in listed] == ["nightly"]

    assert client.delete(f"{PATH}/nightly", headers=tenant).status_code == 204
    gone = client.get(f"{PATH}/nightly", headers=tenant)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "schedule.not_found"
    assert client.delete(f"{PATH}/nightly", headers=tenant).status_code == 404


BAD = [
    ({"cron": "61 * * * *"}, "cron"),
    ({"cron": "* * * * * *"}, "cron"),
    ({"cron": "0 0 30 2 *"}, "cron"),
    ({"every": 0}, "every"),
    ({"every": -5}, "every"),
    ({"every": "2 fortnights"}, "every"),
    ({"every": 5, "timezone": "Mars/Base"}, "timezone"),
    ({"every": 5, "overlap": "sometimes"}, "overlap"),
    ({"every": 5, "catch_up": "some"}, "catch_up"),
    ({"every": 5, "cron": "* * * * *"}, "cron"),
    ({}, "cron"),
    ({"every": 5, "colour": "red"}, "colour"),
    ({"cron": None, "every": 5}, "cron"),
    ({"every": 5, "params": {"a": 2**60}}, "params"),
]


def test_bad_input_is_refused_naming_the_field(
    client: httpx.Client, tenant: dict[str, str]
) -> None:
    for body, field in BAD:
        reply = client.put(f"{PATH}/bad", json=body, headers=tenant)
        assert reply.status_code == 400, (body, reply.text)
        assert f"{field}:" in reply.json()["error"]["message"], (body, reply.text)
    assert client.get(PATH, headers=tenant).json() == {"schedules": []}  # nothing written


def test_unknown_time_zone_message(client: httpx.Client, tenant: dict[str, str]) -> None:
    reply = client.put(f"{PATH}/x", json={"every": 5, "timezone": "Mars/Base"}, headers=tenant)
    assert reply.json()["error"] == {
        "code": "schedule.invalid",
        "message": "timezone: unknown time zone 'Mars/Base'",
    }
    reply = client.put(f"{PATH}/x", json={"every": 0}, headers=tenant)
    assert reply.json()["error"]["message"] == "every: must be positive"
    reply = client.put(f"{PATH}/a.b", json={"every": 5}, headers=tenant)
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "schedule.invalid_id"


def test_other_tenants_and_missing_workflows_get_404(
    client: httpx.Client, tenant: dict[str, str]
) -> None:
    assert client.put(f"{PATH}/mine", json={"every": 60}, headers=tenant).status_code == 201
    other = new_tenant(client, "other")
    for reply in (
        client.get(f"{PATH}/mine", headers=other),
        client.delete(f"{PATH}/mine", headers=other),
        client.get(PATH, headers=other),
        client.put(f"{PATH}/mine", json={"every": 60}, headers=other),
    ):
        assert reply.status_code == 404, reply.text
    missing = client.put("/v1/workflows/nope/schedules/s", json={"every": 60}, headers=tenant)
    assert missing.json()["error"]["code"] == "workflow.not_found"
    assert client.get(f"{PATH}/mine", headers=tenant).status_code == 200


def _instances(client: httpx.Client, headers: dict[str, str], workflow: str) -> list[str]:
    reply = client.get(f"/v1/workflows/{workflow}/instances?limit=1000", headers=headers)
    return sorted(i["id"] for i in reply.json()["instances"])


@pytest.fixture
def timed(timed_client: httpx.Client, timed_platform: Platform) -> httpx.Client:
    timed_platform.engine.schedules.stop()  # the test makes each pass itself
    return timed_client


def test_fires_make_instances_with_their_ids_once(
    timed: httpx.Client, timed_platform: Platform, clock: ManualClock
) -> None:
    headers = new_tenant(timed, "acme")
    deploy(timed, headers, "quick", QUICK)
    clock.advance(1 - clock.now() % 60 + 59)  # at hh:mm:00 and a second: fires on the minute
    body = {"every": "1 minute", "params": {"n": 1}, "catch_up": "all", "overlap": "allow"}
    assert timed.put(f"{PATH}/m", json=body, headers=headers).status_code == 201
    firer = timed_platform.engine.schedules.firer
    assert firer.fire_due() == 0  # nothing due yet
    clock.advance(60)
    assert firer.fire_due() == 1
    assert firer.fire_due() == 0  # moved on
    ids = _instances(timed, headers, "quick")
    assert len(ids) == 1 and ids[0].startswith("m-") and ids[0].endswith("00Z")
    clock.advance(180)  # three fires missed: catch_up all makes each
    firer.fire_due()
    assert len(_instances(timed, headers, "quick")) == 4
    schedule = timed.get(f"{PATH}/m", headers=headers).json()
    assert schedule["last_fire_at"] < schedule["next_fire_at"]


def test_catch_up_latest_and_none(
    timed: httpx.Client, timed_platform: Platform, clock: ManualClock
) -> None:
    headers = new_tenant(timed, "acme")
    deploy(timed, headers, "quick", QUICK)
    firer = timed_platform.engine.schedules.firer
    for policy in ("latest", "none"):
        body = {"every": 10, "catch_up": policy, "overlap": "allow"}
        assert timed.put(f"{PATH}/{policy}", json=body, headers=headers).status_code == 201
    clock.advance(52)  # four fires missed, the latest 2 s late
    firer.fire_due()
    ids = _instances(timed, headers, "quick")
    assert [i.split("-")[0] for i in ids] == ["latest", "none"]  # one each: it is hardly late
    clock.advance(600 + 5)  # 60 fires missed, the latest 7 s late: over half a period
    firer.fire_due()
    ids = _instances(timed, headers, "quick")
    assert [i.split("-")[0] for i in ids] == ["latest", "latest", "none"]


def test_overlap_skip_and_buffer_one(
    timed: httpx.Client, timed_platform: Platform, clock: ManualClock
) -> None:
    headers = new_tenant(timed, "acme")
    deploy(timed, headers, "wait", WAIT)
    path = "/v1/workflows/wait/schedules"
    firer = timed_platform.engine.schedules.firer
    for overlap in ("skip", "buffer_one"):
        body = {"every": 10, "overlap": overlap}
        assert timed.put(f"{path}/{overlap}", json=body, headers=headers).status_code == 201
    for _ in range(3):  # the first fire waits for an event: the next two overlap it
        clock.advance(10)
        firer.fire_due()
    ids = _instances(timed, headers, "wait")
    assert [i.split("-")[0] for i in ids] == ["buffer_one", "skip"]
    first = next(i for i in ids if i.startswith("buffer_one"))
    timed.post(f"/v1/workflows/wait/instances/{first}/events/go", json={}, headers=headers)
    wait_status(timed, headers, f"/v1/workflows/wait/instances/{first}", "complete")
    assert firer.fire_due() == 0  # a fire held back is looked at once a second
    clock.advance(1)
    firer.fire_due()  # the fire held back is made now: the second, not the third
    ids = _instances(timed, headers, "wait")
    assert [i.split("-")[0] for i in ids] == ["buffer_one", "buffer_one", "skip"]
    schedule = timed.get(f"{path}/buffer_one", headers=headers).json()
    assert ids[1] == "buffer_one-" + _stamp(schedule["last_fire_at"])


def _stamp(iso: str) -> str:
    return iso.replace("-", "").replace(":", "").replace(".000", "")


def test_a_berlin_cron_fires_after_the_spring_gap_on_the_clock(
    timed: httpx.Client, timed_platform: Platform, clock: ManualClock
) -> None:
    headers = new_tenant(timed, "acme")
    deploy(timed, headers, "quick", QUICK)
    saturday_noon = dt.datetime(2026, 3, 28, 11, tzinfo=dt.UTC).timestamp()
    clock.advance(saturday_noon - clock.now())
    body = {"cron": "30 2 * * *", "timezone": "Europe/Berlin"}
    made = timed.put(f"{PATH}/nightly", json=body, headers=headers).json()
    assert made["next_fire_at"] == "2026-03-29T01:30:00.000Z"  # 03:30 CEST: 02:30 is skipped
    firer = timed_platform.engine.schedules.firer
    clock.advance(14.5 * 3600 - 1)
    assert firer.fire_due() == 0
    clock.advance(1)
    assert firer.fire_due() == 1
    assert _instances(timed, headers, "quick") == ["nightly-20260329T013000Z"]
    after = timed.get(f"{PATH}/nightly", headers=headers).json()
    assert after["next_fire_at"] == "2026-03-30T00:30:00.000Z"  # 02:30 CEST
    assert after["last_fire_at"] == "2026-03-29T01:30:00.000Z"


def test_a_crash_between_fire_and_record_does_not_fire_twice(
    timed: httpx.Client, timed_platform: Platform, clock: ManualClock, monkeypatch: Any
) -> None:
    headers = new_tenant(timed, "acme")
    deploy(timed, headers, "quick", QUICK)
    assert timed.put(f"{PATH}/c", json={"every": 10}, headers=headers).status_code == 201
    schedules = timed_platform.engine.schedules
    record = schedules.store.advance

    def crash(*args: Any) -> bool:
        raise ConnectionError("the process died here")

    clock.advance(10)
    monkeypatch.setattr(schedules.store, "advance", crash)
    with pytest.raises(ConnectionError):
        schedules.firer.fire_due()  # created, not recorded; its lease holds it a while
    monkeypatch.setattr(schedules.store, "advance", record)
    assert schedules.firer.fire_due() == 0
    clock.advance(11)  # the lease has run out: the fire is made again, and is there already
    schedules.firer.fire_due()
    ids = _instances(timed, headers, "quick")
    assert len(ids) == 2 and ids[0] == fire_id("c", clock.now() - 11), ids
    schedule = timed.get(f"{PATH}/c", headers=headers).json()
    assert _epoch(schedule["last_fire_at"]) == clock.now() - 1


def test_fires_refused_by_the_quota_are_made_later_not_lost(
    timed: httpx.Client, timed_platform: Platform, clock: ManualClock
) -> None:
    headers = new_tenant(timed, "acme", creates_per_second=1)
    deploy(timed, headers, "quick", QUICK)
    body = {"every": 10, "catch_up": "all", "overlap": "allow"}
    assert timed.put(f"{PATH}/q", json=body, headers=headers).status_code == 201
    firer = timed_platform.engine.schedules.firer
    clock.advance(30)  # three fires due, one create a second allowed
    firer.fire_due()
    assert len(_instances(timed, headers, "quick")) == 1
    assert firer.fire_due() == 0  # not before Retry-After
    for _ in range(2):
        clock.advance(1.01)
        firer.fire_due()
    anchor = math.floor(clock.now() - 32.02)
    assert _instances(timed, headers, "quick") == _fire_ids("q", anchor, 3, 10.0)


# -- real processes killed while they fire -------------------------------------------------------


def _fire_ids(schedule_id: str, anchor: float, count: int, every: float) -> list[str]:
    return [fire_id(schedule_id, anchor + k * every) for k in range(1, count + 1)]


@pytest.mark.slow
def test_every_2_seconds_survives_two_kill_9(database_url: str, tmp_path: Path) -> None:
    """``every: 2 seconds`` for 10 s makes its 5 instances, each once, though the firing
    process is killed twice meanwhile: on PostgreSQL ``serve`` and a ``worker`` fire and each is
    killed once; on SQLite ``serve`` is killed and started again twice."""
    lease = {"TREADLE_LEASE_SECONDS": "3", "TREADLE_ADMIN_TOKEN": ADMIN_TOKEN}
    server = TreadleProcess(database_url, tmp_path, env=lease)
    processes = [server]
    if database_url.startswith("postgresql"):
        processes.append(TreadleProcess(database_url, tmp_path, kind="worker", env=lease))
    try:
        for process in processes:
            process.start()
        with httpx.Client(base_url=server.base, timeout=30) as api:
            headers = new_tenant(api, "acme")
            deploy(api, headers, "quick", QUICK)
            body = {"every": "2 seconds", "overlap": "allow", "catch_up": "all"}
            reply = api.put(f"{PATH}/tick", json=body, headers=headers)
            assert reply.status_code == 201, reply.text
            created = _epoch(reply.json()["created_at"])
            for at, victim in ((3.0, processes[-1]), (6.5, processes[0])):
                time.sleep(max(0.0, created + at - time.time()))
                victim.kill()
                victim.start()  # on SQLite: the same file, the same process kind
            end = math.floor(created) + 10
            time.sleep(max(0.0, end + 0.5 - time.time()))
            wait_for(
                lambda: api.get(f"{PATH}/tick", headers=headers).json(),
                lambda s: s["last_fire_at"] is not None and _epoch(s["last_fire_at"]) >= end,
            )
            assert api.delete(f"{PATH}/tick", headers=headers).status_code == 204
            ids = [i for i in _instances(api, headers, "quick") if i.startswith("tick-")]
        made = [i for i in ids if i <= fire_id("tick", end)]
        assert made == _fire_ids("tick", math.floor(created), 5, 2.0)
    finally:
        for process in processes:
            process.stop()


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# -- the SDK and the command line -----------------------------------------------------------------


def test_the_sdk_puts_reads_pauses_and_deletes_schedules(
    client: httpx.Client, tenant: dict[str, str]
) -> None:
    key = tenant["Authorization"].removeprefix("Bearer ")
    with Client(str(client.base_url).rstrip("/"), api_key=key) as sdk:
        made = sdk.put_schedule("quick", "daily", cron="0 9 * * *", timezone="Europe/Berlin")
        assert (made.cron, made.timezone, made.every) == ("0 9 * * *", "Europe/Berlin", None)
        assert made.next_fire_at is not None and made.next_fire_at.hour in (7, 8)  # UTC
        every = sdk.put_schedule("quick", "tick", every=dt.timedelta(minutes=5), params=[1])
        assert (every.every, every.params, every.overlap) == (300.0, [1], "skip")
        assert [s.id for s in sdk.schedules("quick")] == ["daily", "tick"]
        paused = sdk.pause_schedule("quick", "tick")
        assert paused.paused and paused.next_fire_at is None and paused.params == [1]
        resumed = sdk.resume_schedule("quick", "tick")
        assert not resumed.paused and resumed.next_fire_at is not None
        with pytest.raises(InvalidInput, match=r"^cron: "):
            sdk.put_schedule("quick", "bad", cron="not a cron")
        sdk.delete_schedule("quick", "tick")
        with pytest.raises(NotFound):
            sdk.schedule("quick", "tick")

    async def use_async() -> list[str]:
        async with AsyncClient(str(client.base_url).rstrip("/"), api_key=key) as sdk:
            await sdk.put_schedule("quick", "a", every="1 hour", catch_up="none")
            await sdk.pause_schedule("quick", "a")
            return [s.id for s in await sdk.schedules("quick") if s.paused]

    assert asyncio.run(use_async()) == ["a"]


def test_the_cli_manages_schedules(acme: Run) -> None:
    code, out, err = acme("schedules", "put", "sum", "tick", "--every", "2 minutes",
                          "--params", '{"x": 1}', "--overlap", "allow")  # fmt: skip
    assert code == 0 and out.startswith("schedule tick: next fire "), err
    code, out, err = acme("schedules", "put", "sum", "nightly", "--cron", "30 2 * * *",
                          "--timezone", "Europe/Berlin", "--paused")  # fmt: skip
    assert code == 0 and out.strip() == "schedule nightly: next fire paused", err
    code, out, _ = acme("schedules", "list", "sum")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "WHEN", "TIMEZONE", "NEXT", "FIRE", "LAST", "FIRE"]
    assert lines[1].startswith("nightly") and "cron 30 2 * * *" in lines[1]
    assert lines[2].startswith("tick") and "every 120 s" in lines[2]
    code, out, _ = acme("schedules", "get", "sum", "tick", "--json")
    assert code == 0 and json.loads(out)["params"] == {"x": 1}
    assert acme("schedules", "pause", "sum", "tick")[1].strip() == "schedule tick: paused"
    code, out, _ = acme("schedules", "resume", "sum", "nightly")
    assert code == 0 and "next fire 20" in out
    code, _, err = acme("schedules", "put", "sum", "bad", "--cron", "99 * * * *")
    assert code == 2 and "cron: '99 * * * *' is not a valid cron expression" in err
    code, _, err = acme("schedules", "put", "sum", "bad", "--every", "0")
    assert code == 2 and "every: must be positive" in err
    assert acme("schedules", "delete", "sum", "tick")[0] == 0
    code, _, err = acme("schedules", "get", "sum", "tick")
    assert code == 2 and "schedule 'tick' of workflow 'sum' not found" in err
