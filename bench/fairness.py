"""Fairness: tenant A holds a backlog of 100,000 queued instances; how soon do B's start?

Starts a real `treadle serve` (default settings) on a fresh database, gives tenant A a backlog
of queued instances of a one-step workflow (inserted with one SQL statement, all due before
anything B creates), then creates B's instances one at a time and measures, from the
instances' own timestamps, the time from each create to its start, and the throughput of A's
backlog meanwhile. Then, the server stopped and the backlog still queued, it times the claim
transaction of a full batch against it (as the scheduler makes it, rolled back). Usage:
python -m bench.fairness [--backlog N] [--probes N] [--backend sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from datetime import datetime

import httpx
import sqlalchemy as sa

from bench._server import fresh_database, metric, serve, tenant_client
from engine._store import EngineStore
from storage import Database

SOURCE = """
from treadle import WorkflowEntrypoint

class One(WorkflowEntrypoint):
    def run(self, event, step):
        return step.do("one", lambda: 1)
"""
_COLUMNS = "tenant_id, workflow, id, version, status, params, created_at, due_at, epoch"


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _backlog(db: Database, tenant: str, version: str, count: int) -> None:
    select = "SELECT t.id, 'one', 'a' || i, :v, 'queued', NULL, :due, :due + i * 1e-6, 0"
    if db.dialect == "postgresql":
        rows = "FROM generate_series(0, :n - 1) AS i"
        sql = f"INSERT INTO instances ({_COLUMNS}) {select} {rows}, tenants t WHERE t.name = :t"
    else:
        seq = "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < :n - 1)"
        rows = "FROM seq, tenants t WHERE t.name = :t"
        sql = f"{seq} INSERT INTO instances ({_COLUMNS}) {select} {rows}"
    with db.begin() as conn:
        conn.execute(sa.text(sql), {"t": tenant, "v": version, "due": time.time(), "n": count})
    with db.begin() as conn:
        conn.execute(sa.text("ANALYZE"))


class _RolledBack(Exception):
    """Ends a measured claim without committing it."""


def _claim_ms(db: Database, repeats: int) -> list[float]:
    """The claim of a full batch (32 instances) as the scheduler makes it, rolled back."""
    store = EngineStore(db)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        now = time.time()
        due = store.next_due_by_tenant()
        caps = {t: 1000 for t, at in due.items() if at <= now}
        # A write transaction, as the engine's (SQLite: BEGIN IMMEDIATE), rolled back.
        with contextlib.suppress(_RolledBack), db.begin() as conn:
            store.claim("bench", now, now + 30, 32, due, caps)(conn)
            raise _RolledBack
        times.append((time.perf_counter() - started) * 1000)
    return times


def run(backend: str, backlog: int, probes: int) -> dict[str, float]:
    with fresh_database(backend) as url:
        db = Database(url)
        with serve(url) as base:
            waits, per_s, queued = _under_backlog(base, db, backlog, probes)
        # The server stopped, its backlog still queued: the claim's own cost, without waiting
        # for the server's transactions.
        claims = _claim_ms(db, 30)
        db.dispose()
    return {
        "start_p50_ms": statistics.median(waits) * 1000,
        "start_max_ms": max(waits) * 1000,
        "claim_p50_ms": statistics.median(claims),
        "claim_max_ms": max(claims),
        "backlog_per_s": per_s,
        "queued_left": queued,
    }


def _under_backlog(
    base: str, db: Database, backlog: int, probes: int
) -> tuple[list[float], float, float]:
    """B's waits from create to start, A's throughput meanwhile and what A has left queued."""
    a = tenant_client(base, "a")
    b = tenant_client(base, "b")
    version = a.put("/v1/workflows/one", json={"source": SOURCE, "sandbox": "restricted"})
    b.put("/v1/workflows/one", json={"source": SOURCE, "sandbox": "restricted"})
    _backlog(db, "a", version.json()["version"], backlog)
    complete_before, started = metric(base, "treadle_instances", status="complete"), time.time()
    waits = []
    for n in range(probes):
        b.post("/v1/workflows/one/instances", json={"id": f"b{n}"}).raise_for_status()
        path = f"/v1/workflows/one/instances/b{n}"
        deadline = time.monotonic() + 30
        while (instance := b.get(path).json())["status"] == "queued":
            if time.monotonic() > deadline:
                raise RuntimeError(f"b{n} did not start in 30 s")
            time.sleep(0.01)
        waits.append(_ts(instance["started_at"]) - _ts(instance["created_at"]))
        time.sleep(0.2)
    done = metric(base, "treadle_instances", status="complete") - complete_before
    per_s = done / (time.time() - started)
    return waits, per_s, metric(base, "treadle_instances", status="queued")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], action="append")
    args = parser.parse_args()
    for backend in args.backend or ["sqlite", "postgresql"]:
        try:
            f = run(backend, args.backlog, args.probes)
        except httpx.HTTPError as exc:
            raise SystemExit(f"{backend}: {exc}") from exc
        print(
            f"fairness {backend:10} backlog {args.backlog}: B starts p50 {f['start_p50_ms']:.0f} ms"
            f" max {f['start_max_ms']:.0f} ms ({args.probes} probes); claim of 32 p50 "
            f"{f['claim_p50_ms']:.1f} ms max {f['claim_max_ms']:.1f} ms; backlog drained at "
            f"{f['backlog_per_s']:.0f} wf/s meanwhile, {f['queued_left']:.0f} still queued"
        )


if __name__ == "__main__":
    main()
