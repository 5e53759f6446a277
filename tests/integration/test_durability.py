"""Durability against real `treadle serve` and `treadle worker` processes: no lost wake-up,
pauses that wait for the running step, fan-out branches recorded as they finish, and the
instances of a killed process taken over in seconds, not after their lease."""

from __future__ import annotations

import collections
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from bench._processes import TreadleProcess
from bench._server import tenant_client
from storage import normalize_url
from tests.integration.slow_server import SlowServer

RACE = """
from treadle import WorkflowEntrypoint

class Race(WorkflowEntrypoint):
    def run(self, event, step):
        a = step.do("a", lambda: 1)
        got = step.wait_for_event("go", type="go")
        return {"a": a, "n": got["payload"]["n"]}
"""
# The event is sent 0-1.5 s after the create: often while the instance commits its move
# into the wait, the moment a wake-up could be lost.
RACE_INSTANCES = int(os.environ.get("TREADLE_RACE_INSTANCES", "2000"))


def _statuses(url: str) -> dict[str, int]:
    engine = sa.create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT status, count(*) FROM instances GROUP BY status"))
            return {str(status): int(n) for status, n in rows}
    finally:
        engine.dispose()


def _deadlocks(url: str) -> int:
    engine = sa.create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            query = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
            return int(conn.execute(sa.text(query)).scalar_one())
    finally:
        engine.dispose()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[TreadleProcess]]:
    started: list[TreadleProcess] = []
    yield started
    for process in started:
        process.stop()


def _start(
    started: list[TreadleProcess], url: str, tmp: Path, kind: str, name: str, **env: str
) -> TreadleProcess:
    process = TreadleProcess(url, tmp, kind=kind, name=name, env=env)
    started.append(process)
    process.start()
    return process


def _race(url: str, base: str) -> None:
    with tenant_client(base, "race", creates_per_second=100_000) as client:
        _race_with(client, url, base)


def _race_with(client: httpx.Client, url: str, base: str) -> None:
    _deploy(client, "race", RACE)
    rng = random.Random(20261203)
    sends: list[tuple[float, str]] = []
    for first in range(0, RACE_INSTANCES, 100):
        ids = [f"r{i}" for i in range(first, min(first + 100, RACE_INSTANCES))]
        batch = {"instances": [{"id": i} for i in ids]}
        reply = client.post("/v1/workflows/race/instances/batch", json=batch)
        assert reply.status_code == 200 and not reply.json()["errors"], reply.text
        created = time.monotonic()
        sends += [(created + rng.uniform(0.0, 1.5), i) for i in ids]
    sends.sort()
    local = threading.local()
    opened: list[httpx.Client] = []

    def send(item: tuple[float, str]) -> None:
        at, instance = item
        time.sleep(max(0.0, at - time.monotonic()))
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base, headers=client.headers, timeout=30)
            opened.append(local.client)
        path = f"/v1/workflows/race/instances/{instance}/events/go"
        reply = local.client.post(path, json={"n": int(instance[1:])})
        assert reply.status_code == 202, reply.text

    try:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(send, sends))
    finally:
        for each in opened:
            each.close()
    deadline = time.monotonic() + 120
    while (statuses := _statuses(url)) != {"complete": RACE_INSTANCES}:
        if time.monotonic() > deadline:
            stuck = client.get("/v1/workflows/race/instances?status=waiting&limit=20").json()
            raise AssertionError(f"not all complete: {statuses}; waiting: {stuck}")
        time.sleep(0.5)
    for i in rng.sample(range(RACE_INSTANCES), 20):
        instance = client.get(f"/v1/workflows/race/instances/r{i}").json()
        assert instance["output"] == {"a": 1, "n": i}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_event_sent_while_its_waiter_suspends_is_never_lost(
    database_url: str, tmp_path: Path, processes: list[TreadleProcess]
) -> None:
    serve = _start(processes, database_url, tmp_path, "serve", "serve")
    _race(database_url, serve.base)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_no_event_is_lost_with_three_processes_and_no_deadlock(
    postgresql_url: str, tmp_path: Path, processes: list[TreadleProcess]
) -> None:
    serve = _start(processes, postgresql_url, tmp_path, "serve", "serve")
    for n in (1, 2):
        _start(processes, postgresql_url, tmp_path, "worker", f"worker{n}")
    _race(postgresql_url, serve.base)
    assert _deadlocks(postgresql_url) == 0


LONG_STEP = """
from treadle import WorkflowEntrypoint

class Long(WorkflowEntrypoint):
    def run(self, event, step):
        base = event.payload["base"]

        def long(ctx):
            # Fetches of at most 10 s each: a fetch waits at most 30 s for an answer. The first
            # one's tag counts the runs of the body.
            print("long body")
            left, tag = event.payload["s"], event.instance_id
            while left > 0:
                part = min(left, 10)
                self.env.fetch(base + "/sleep?s=" + str(part) + "&tag=" + tag)
                left, tag = left - part, event.instance_id + "-more"
            return event.payload["s"]

        slept = step.do("long", long, timeout="5 minutes")
        return {"slept": slept, "after": step.do("after", lambda: "done")}
"""


def _deploy(client: httpx.Client, name: str, source: str) -> None:
    reply = client.put(f"/v1/workflows/{name}", json={"source": source, "sandbox": "restricted"})
    assert reply.status_code == 201, reply.text


def _long_steps_in_flight(
    client: httpx.Client, slow: SlowServer, ids: list[str], *, seconds: float
) -> None:
    """Start instances ``ids`` of LONG_STEP and wait until each one's step body runs."""
    _deploy(client, "long", LONG_STEP)
    batch = {"instances": [{"id": i, "params": {"base": slow.url, "s": seconds}} for i in ids]}
    assert not client.post("/v1/workflows/long/instances/batch", json=batch).json()["errors"]
    deadline = time.monotonic() + 60
    while not all(slow.calls[i] for i in ids):
        assert time.monotonic() < deadline, slow.calls
        time.sleep(0.05)


def _wait_status(client: httpx.Client, path: str, status: str, timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while (instance := client.get(path).json())["status"] != status:
        assert time.monotonic() < deadline, instance
        time.sleep(0.1)
    return instance


# A lease of 2 s and a step of 8 s: the step outlives four leases, as a 48 s step outlives a
# lease of 30 s (the default). TREADLE_PAUSE_LEASE=30 TREADLE_PAUSE_STEP=48 runs that case.
PAUSE_LEASE = os.environ.get("TREADLE_PAUSE_LEASE", "2")
PAUSE_STEP = float(os.environ.get("TREADLE_PAUSE_STEP", "8"))


@pytest.mark.slow
@pytest.mark.timeout(120 + 2 * PAUSE_STEP)
def test_a_pause_waits_for_a_step_longer_than_the_lease_and_never_runs_it_again(
    database_url: str, tmp_path: Path, processes: list[TreadleProcess]
) -> None:
    serve = _start(
        processes, database_url, tmp_path, "serve", "serve", TREADLE_LEASE_SECONDS=PAUSE_LEASE
    )
    with (
        SlowServer().running() as slow,
        tenant_client(serve.base, "p", egress_allow=["127.0.0.1"]) as client,
    ):
        _deploy(client, "long", LONG_STEP)
        params = {"base": slow.url, "s": PAUSE_STEP}
        reply = client.post("/v1/workflows/long/instances", json={"id": "p1", "params": params})
        assert reply.status_code == 201, reply.text
        deadline = time.monotonic() + 30
        while slow.calls["p1"] == 0:
            assert time.monotonic() < deadline, "the step never started"
            time.sleep(0.05)
        path = "/v1/workflows/long/instances/p1"
        reply = client.patch(path + "/status", json={"status": "pause"})
        assert reply.json()["status"] == "waitingForPause", reply.text
        paused = _wait_status(client, path, "paused", timeout=30 + PAUSE_STEP)
        assert slow.calls["p1"] == 1  # the step ran once, through the whole pause request
        assert [s["status"] for s in paused["steps"]] == ["complete"]  # type: ignore[union-attr]
        client.patch(path + "/status", json={"status": "resume"}).raise_for_status()
        done = _wait_status(client, path, "complete", timeout=30)
        assert done["output"] == {"slept": PAUSE_STEP, "after": "done"}
        assert slow.calls["p1"] == 1
        logs = client.get(path + "/logs").json()["logs"]
        assert [x["message"] for x in logs] == ["long body"]


FAN = """
from treadle import WorkflowEntrypoint

class Fan(WorkflowEntrypoint):
    def run(self, event, step):
        base = event.payload["base"]

        def call(ctx, seconds):
            tag = event.instance_id + "-" + ctx.step.name
            return self.env.fetch(base + "/sleep?s=" + str(seconds) + "&tag=" + tag).json()["tag"]

        @step.do("fast", concurrent=True)
        def fast(ctx):
            return call(ctx, 0)

        @step.do("slow", concurrent=True)
        def slow(ctx):
            return call(ctx, 4)

        @step.do("join", depends=[fast, slow])
        def join(fast, slow):
            return [fast, slow]

        return join()
"""


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_crash_during_a_fan_out_runs_only_the_unfinished_branch_again(
    database_url: str, tmp_path: Path, processes: list[TreadleProcess]
) -> None:
    serve = _start(processes, database_url, tmp_path, "serve", "serve", TREADLE_LEASE_SECONDS="3")
    ids = [f"f{i}" for i in range(5)]
    with (
        SlowServer().running() as slow,
        tenant_client(serve.base, "f", egress_allow=["127.0.0.1"]) as client,
    ):
        _deploy(client, "fan", FAN)
        batch = {"instances": [{"id": i, "params": {"base": slow.url}} for i in ids]}
        assert not client.post("/v1/workflows/fan/instances/batch", json=batch).json()["errors"]
        deadline = time.monotonic() + 30
        while not all(slow.calls[f"{i}-fast"] and slow.calls[f"{i}-slow"] for i in ids):
            assert time.monotonic() < deadline, slow.calls
            time.sleep(0.05)
        time.sleep(1.0)  # the fast branches are done and recorded; the slow ones run on
        serve.kill()
        serve.start()
        for i in ids:
            done = _wait_status(client, f"/v1/workflows/fan/instances/{i}", "complete", 60)
            assert done["output"] == [f"{i}-fast", f"{i}-slow"]
        assert {i: slow.calls[f"{i}-fast"] for i in ids} == {i: 1 for i in ids}
        assert {i: slow.calls[f"{i}-slow"] for i in ids} == {i: 2 for i in ids}


def _owners(url: str) -> collections.Counter[int]:
    """How many running instances each process (by pid) holds."""
    engine = sa.create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT lease_owner FROM instances WHERE status = 'running'")
            ).all()
    finally:
        engine.dispose()
    return collections.Counter(int(str(owner).split("-")[-2]) for (owner,) in rows if owner)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_killed_process_s_instances_resume_within_seconds_not_a_lease(
    database_url: str, tmp_path: Path, processes: list[TreadleProcess]
) -> None:
    # The default lease (30 s): what brings the instances back is the process's death being
    # seen, not its lease running out.
    serve = _start(processes, database_url, tmp_path, "serve", "serve")
    pg = database_url.startswith("postgresql")
    if pg:
        _start(processes, database_url, tmp_path, "worker", "worker")
    ids = [f"k{i}" for i in range(8)]
    with (
        SlowServer().running() as slow,
        tenant_client(serve.base, "k", egress_allow=["127.0.0.1"]) as client,
    ):
        _long_steps_in_flight(client, slow, ids, seconds=600)
        owners = _owners(database_url)
        victim = max(processes, key=lambda p: owners[p.pid])
        held = owners[victim.pid]
        assert held > 0, owners
        killed = time.monotonic()
        victim.kill()
        victim.start()
        ready = time.monotonic()
        deadline = ready + 30
        while sum(1 for i in ids if slow.calls[i] >= 2) < held:
            assert time.monotonic() < deadline, dict(slow.calls)
            time.sleep(0.02)
        resumed = max(slow.started[i][1] for i in ids if slow.calls[i] >= 2)
        print(
            f"kill -9 of the {victim.kind} holding {held} of {len(ids)} running instances: "
            f"restarted in {ready - killed:.2f} s; all resumed {resumed - killed:.2f} s after "
            f"the kill, {resumed - ready:.2f} s after the restart"
        )
        assert resumed - ready <= 3.0


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_process_that_is_only_slow_keeps_its_instances(
    postgresql_url: str, tmp_path: Path, processes: list[TreadleProcess]
) -> None:
    # A stopped (SIGSTOP) process keeps its database session, so it is not taken for dead:
    # its instances wait for it (or for its lease), and nothing runs twice.
    serve = _start(processes, postgresql_url, tmp_path, "serve", "serve")
    worker = _start(processes, postgresql_url, tmp_path, "worker", "worker")
    ids = [f"s{i}" for i in range(6)]
    with (
        SlowServer().running() as slow,
        tenant_client(serve.base, "s", egress_allow=["127.0.0.1"]) as client,
    ):
        _long_steps_in_flight(client, slow, ids, seconds=3)
        held = _owners(postgresql_url)[worker.pid]
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            time.sleep(5.0)  # five times the grace after which a dead process is taken over
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        assert held == 0 or _owners(postgresql_url)[worker.pid] == held
        for i in ids:
            done = _wait_status(client, f"/v1/workflows/long/instances/{i}", "complete", 60)
            assert done["output"] == {"slept": 3.0, "after": "done"}
        assert {i: slow.calls[i] for i in ids} == {i: 1 for i in ids}
