"""Idle instances: what 50,000 waiting instances cost, and how promptly they wake.

Half the instances sleep until a time spread over one minute, ``--due-after`` seconds after the
run starts; the other half wait for an event. The figures, per database:

- the server's RSS before the creates (after one instance warmed the tenant's sandbox) and
  once every instance waits, and the CPU time of the server (with its sandbox workers) and of
  PostgreSQL over ``--idle-seconds`` while they all wait, and over as long with none;
- timer lateness: when the step after each sleep started, against the time it slept until;
- event latency: ``--events`` events, sent as fast as ``--clients`` clients get them accepted
  (or at ``--event-rate`` a second);
  for each, from the event's arrival (as stored) to the start of the step after the wait.

Times come from the database (the attempts' recorded start times), not from polling.

Usage: python -m bench.idle [--instances N] [--events N] [--due-after S] [--backend ...]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from bench._cpu import CpuMeter
from bench._processes import TreadleProcess
from bench._server import fresh_database, post_all, tenant_client

SOURCE = """
from treadle import WorkflowEntrypoint

class Idle(WorkflowEntrypoint):
    def run(self, event, step):
        if event.payload["kind"] == "sleep":
            step.sleep_until("nap", event.payload["until"])
        else:
            step.wait_for_event("wait", type="go", timeout="7 days")
        step.do("after", lambda: 1)
        return "ok"
"""


def _query(url: str, sql: str) -> list[tuple[Any, ...]]:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return conn.execute(sql).fetchall()
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


def _count(url: str, status: str) -> int:
    return int(_query(url, f"SELECT count(*) FROM instances WHERE status = '{status}'")[0][0])


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _after_started(url: str) -> dict[str, float]:
    """When the step after the wait started, by instance id."""
    rows = _query(
        url,
        "SELECT i.id, s.attempts FROM instances i JOIN steps s ON s.instance_pk = i.pk"
        " WHERE s.name = 'after'",
    )
    found = {}
    for instance_id, attempts in rows:
        attempts = json.loads(attempts) if isinstance(attempts, str) else attempts
        found[instance_id] = float(attempts[0]["started_at"])
    return found


def _wait_for(url: str, status: str, count: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last = -1
    while (done := _count(url, status)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: only {done} of {count} are {status}")
        if done // 5000 != last // 5000:
            print(f"  {what}: {done}/{count} {status}", flush=True)
            last = done
        time.sleep(1)


def _percentiles(values: list[float]) -> str:
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return (
        f"p50 {statistics.median(values) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"max {values[-1] * 1000:.0f} ms"
    )


def run(
    backend: str,
    instances: int,
    events: int,
    due_after: float,
    idle: float,
    clients: int,
    event_rate: float | None = None,
) -> None:
    with fresh_database(backend) as url, tempfile.TemporaryDirectory() as tmp:
        server = TreadleProcess(url, Path(tmp))
        server.start()
        try:
            client = tenant_client(
                server.base,
                creates_per_second=1_000_000,
                max_running_instances=1_000_000,
                max_storage_mb=16 * 1024,
            )
            client.put("/v1/workflows/idle", json={"source": SOURCE, "sandbox": "restricted"})
            client.post(
                "/v1/workflows/idle/instances",
                json={"id": "warm", "params": {"kind": "sleep", "until": 0}},
            ).raise_for_status()
            _wait_for(url, "complete", 1, 60, "warm-up")
            time.sleep(2)
            rss_before = _rss_mb(server.pid)
            meter = CpuMeter(lambda: {"server": server.pid})
            meter.start()
            time.sleep(idle)
            empty = meter.stop()
            start = time.time()
            sleepers = instances // 2
            until = {f"s{n}": start + due_after + random.uniform(0, 60) for n in range(sleepers)}
            items = [{"id": i, "params": {"kind": "sleep", "until": at}} for i, at in until.items()]
            items += [
                {"id": f"e{n}", "params": {"kind": "event"}} for n in range(instances - sleepers)
            ]
            random.shuffle(items)
            for first in range(0, len(items), 100):
                reply = client.post(
                    "/v1/workflows/idle/instances/batch",
                    json={"instances": items[first : first + 100]},
                )
                reply.raise_for_status()
                assert not reply.json()["errors"], reply.json()["errors"][:3]
            _wait_for(url, "waiting", instances, due_after, "reaching their waits")
            settled = time.time()
            if settled + idle > start + due_after:
                raise RuntimeError(
                    f"the instances took {settled - start:.0f} s to reach their waits: "
                    f"give --due-after more than {settled - start + idle:.0f} s"
                )
            meter = CpuMeter(lambda: {"server": server.pid})
            meter.start()
            time.sleep(idle)
            used = meter.stop()
            rss_waiting = _rss_mb(server.pid)
            print(
                f"  {instances} waiting (reached in {settled - start:.0f} s): server RSS "
                f"{rss_before:.0f} MB before, {rss_waiting:.0f} MB while they wait "
                f"(+{rss_waiting - rss_before:.0f} MB); CPU over {idle:.0f} s while they wait: "
                f"server {used.get('server', 0):.2f} s, PostgreSQL {used.get('postgres', 0):.2f} s "
                f"(with none: {empty.get('server', 0):.2f} s and "
                f"{empty.get('postgres', 0):.2f} s)",
                flush=True,
            )
            # Timers: due from start + due_after, over a minute.
            _wait_for(url, "complete", 1 + sleepers, due_after + 300, "sleepers waking")
            woke = _after_started(url)
            lateness = [woke[i] - at for i, at in until.items()]
            print(f"  timer lateness ({sleepers} timers over 60 s): {_percentiles(lateness)}")
            # Events, as fast as the clients get them accepted (or at the rate asked).
            targets = [f"e{n}" for n in range(min(events, instances - sleepers))]
            sent_at = _send_events(server.base, dict(client.headers), targets, clients, event_rate)
            _wait_for(url, "complete", 1 + sleepers + len(targets), 600, "event waiters")
            arrived = {
                i: float(at)
                for i, at in _query(
                    url,
                    "SELECT i.id, e.created_at FROM events e"
                    " JOIN instances i ON i.pk = e.instance_pk",
                )
            }
            woke = _after_started(url)
            latency = [woke[i] - arrived[i] for i in targets]
            rate = len(targets) / (sent_at[1] - sent_at[0])
            print(
                f"  events: {len(targets)} sent at {rate:.0f}/s; arrival to the next step's "
                f"start: {_percentiles(latency)}"
            )
        finally:
            server.stop()


def _send_events(
    base: str, headers: dict[str, str], targets: list[str], clients: int, rate: float | None
) -> tuple[float, float]:
    path = "/v1/workflows/idle/instances/{}/events/go"
    began = time.time()
    requests = [(path.format(t), {"n": 1}) for t in targets]
    for _, reply in post_all(base, headers, requests, clients, rate):
        reply.raise_for_status()
    return began, time.time()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=50_000)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--due-after", type=float, default=420.0)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--event-rate", type=float, help="events a second (default: at once)")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], action="append")
    args = parser.parse_args()
    for backend in args.backend or ["postgresql"]:
        print(f"idle {backend}: {args.instances} instances", flush=True)
        run(
            backend,
            args.instances,
            args.events,
            args.due_after,
            args.idle_seconds,
            args.clients,
            args.event_rate,
        )


if __name__ == "__main__":
    main()
