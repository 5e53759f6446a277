"""Scale-out: W1 (instances x 3 no-op steps) on one PostgreSQL database run by `treadle serve`
alone and with `treadle worker` processes beside it, and the CPU time it costs.

For each number of processes (1 = `serve` alone; N = `serve` + N-1 workers) it prints
workflows/s (from the first create to the last instance's end, as the database recorded it)
and the CPU time per workflow of every treadle process with its sandbox workers, and of the
PostgreSQL server, measured from /proc over the same window.

Usage: python -m bench.scaleout [--processes 1,2,4] [--instances N] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

from bench._cpu import CpuMeter
from bench._processes import TreadleProcess
from bench._server import fresh_database, tenant_client
from bench.w1 import SOURCE


def run(processes: int, instances: int) -> dict[str, float]:
    with fresh_database("postgresql") as url, tempfile.TemporaryDirectory() as tmp:
        serve = TreadleProcess(url, Path(tmp))
        workers = [
            TreadleProcess(url, Path(tmp), kind="worker", name=f"worker-{n}")
            for n in range(processes - 1)
        ]
        try:
            serve.start()
            for worker in workers:
                worker.start()
            client = tenant_client(serve.base, creates_per_second=1_000_000)
            client.put("/v1/workflows/w1", json={"source": SOURCE, "sandbox": "restricted"})
            # Warm every process's sandbox pool for the tenant, so that starting workers is
            # not what is measured.
            _create(client, [f"warm{n}" for n in range(16 * processes)])
            _wait_done(url, 16 * processes)
            roots = {"serve": serve.pid} | {f"worker-{n}": w.pid for n, w in enumerate(workers)}
            meter = CpuMeter(lambda: roots)
            transactions = _transactions(url)
            meter.start()
            started = time.time()
            _create(client, [f"i{n}" for n in range(instances)])
            ended = _wait_done(url, 16 * processes + instances)
            used = meter.stop()
            time.sleep(2)  # backends report their statistics within a second or so
            transactions = _transactions(url) - transactions
        finally:
            for process in [serve, *workers]:
                process.stop()
    elapsed = ended - started
    treadle = sum(v for k, v in used.items() if k != "postgres")
    return {
        "workflows_per_s": instances / elapsed,
        "treadle_cpu_ms": treadle / instances * 1000,
        "postgres_cpu_ms": used.get("postgres", 0.0) / instances * 1000,
        "total_cpu_ms": (treadle + used.get("postgres", 0.0)) / instances * 1000,
        "transactions": transactions / instances,
    }


def _transactions(url: str) -> int:
    """Transactions committed in the database so far (PostgreSQL's statistics; the bench's
    own reads count too, a few a second)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def _create(client: httpx.Client, ids: list[str]) -> None:
    for first in range(0, len(ids), 100):
        batch = [{"id": i} for i in ids[first : first + 100]]
        reply = client.post("/v1/workflows/w1/instances/batch", json={"instances": batch})
        reply.raise_for_status()
        assert not reply.json()["errors"], reply.json()["errors"]


def _wait_done(url: str, count: int, timeout: float = 900.0) -> float:
    """Wait until ``count`` instances completed; when the last of them ended."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*), max(ended_at) FROM instances WHERE status = 'complete'"
            ).fetchone()
            assert row is not None
            done, last = row
            if done >= count:
                return float(last)
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done} of {count} instances completed")
            time.sleep(0.25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--instances", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    counts = [int(n) for n in args.processes.split(",")]
    figures: dict[int, list[dict[str, float]]] = {n: [] for n in counts}
    for _ in range(args.rounds):
        for n in counts:  # interleaved, so that drift of the machine hits every count alike
            figures[n].append(run(n, args.instances))
    for n in counts:
        med = {k: statistics.median(f[k] for f in figures[n]) for k in figures[n][0]}
        print(
            f"scale-out {n} process{'es' if n > 1 else '  '} ({args.instances} x W1, "
            f"median of {args.rounds}): {med['workflows_per_s']:.0f} workflows/s, CPU per "
            f"workflow {med['total_cpu_ms']:.2f} ms (treadle {med['treadle_cpu_ms']:.2f} ms, "
            f"PostgreSQL {med['postgres_cpu_ms']:.2f} ms), "
            f"{med['transactions']:.2f} transactions per workflow"
        )


if __name__ == "__main__":
    main()
