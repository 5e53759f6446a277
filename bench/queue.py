"""Queues that do not slow down: the dequeue rate of one workflow with a small backlog and with
2,000,000 queued instances, and the plans of the claim's statements (PostgreSQL).

The backlog is inserted in one statement (queued W1 instances, due in creation order) while a
`treadle serve` runs; after ``--warmup`` seconds the instances completed over ``--window``
seconds give the dequeue rate. Then ``EXPLAIN (ANALYZE, BUFFERS)`` of the statements a claim
runs, with the backlog still there and the server stopped: the engine's own
``Claims.next_due_by_tenant`` and one ``Claims.claim``, recorded and replayed by ``bench._plans``
(in a transaction that is rolled back).

Usage: python -m bench.queue [--small 20000] [--full 2000000] [--window 30] [--rounds 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import psycopg

from bench._plans import explain_claim
from bench._processes import TreadleProcess
from bench._server import fresh_database, tenant_client
from bench.w1 import SOURCE

_BACKLOG = """
INSERT INTO instances (tenant_id, workflow, id, version, status, params, created_at, due_at,
                       epoch, stored_bytes, log_bytes)
SELECT %(tenant)s, 'w1', 'q' || g, %(version)s, 'queued', '{}'::jsonb, %(now)s,
       %(now)s - 1 + g * 1e-7, 0, 200, 0
FROM generate_series(1, %(count)s) AS g
"""


def _completed(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM instances WHERE status = 'complete'").fetchone()
    assert row is not None
    return int(row[0])


def run(backlog: int, warmup: float, window: float, explain: bool) -> float:
    with fresh_database("postgresql") as url, tempfile.TemporaryDirectory() as tmp:
        server = TreadleProcess(url, Path(tmp))
        server.start()
        try:
            client = tenant_client(server.base, creates_per_second=1_000_000)
            client.put("/v1/workflows/w1", json={"source": SOURCE, "sandbox": "restricted"})
            with psycopg.connect(url, autocommit=True) as conn:
                row = conn.execute("SELECT tenant_id, version FROM workflows").fetchone()
                assert row is not None
                tenant, version = row
                began = time.monotonic()
                conn.execute(
                    _BACKLOG,
                    {"tenant": tenant, "version": version, "now": time.time(), "count": backlog},
                )
                conn.execute("ANALYZE instances")
                print(f"  {backlog} queued in {time.monotonic() - began:.0f} s", flush=True)
                time.sleep(warmup)
                before, at = _completed(conn), time.monotonic()
                time.sleep(window)
                rate = (_completed(conn) - before) / (time.monotonic() - at)
                print(f"  backlog {backlog}: {rate:.0f} instances/s dequeued and run", flush=True)
                if explain:
                    # The server stopped first: its claims would hold the tenant's advisory
                    # lock now and then, and the plans are of one claim on its own.
                    server.stop()
                    _explain(url)
        finally:
            server.stop()
    return rate


def _explain(url: str) -> None:
    """The plans of the statements the engine's claim sends (``bench._plans``)."""
    print("  EXPLAIN of the claim's statements (next_due_by_tenant, then one claim):")
    explain_claim(url, indent="    ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=20_000)
    parser.add_argument("--full", type=int, default=2_000_000)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    small, full = [], []
    for n in range(args.rounds):
        small.append(run(args.small, args.warmup, args.window, explain=False))
        full.append(run(args.full, args.warmup, args.window, explain=n == 0))
    s, f = statistics.median(small), statistics.median(full)
    print(
        f"queue: dequeue rate with {args.small} queued {s:.0f}/s, with {args.full} queued "
        f"{f:.0f}/s ({100 * f / s:.0f}% of it; median of {args.rounds})"
    )


if __name__ == "__main__":
    main()
