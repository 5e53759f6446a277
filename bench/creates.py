"""Creates: instances per second through the batch endpoint (100 per request).

``--clients`` threads post batches of 100 new instances (with small params) as fast as the
server answers, ``--instances`` in all. The tenant may run one instance at a time, so the
figure is what the API and the database take to admit and store creates, not the engine's
replays of them. Printed per database: instances/s, and the p50/p99 time of a batch request.

Usage: python -m bench.creates [--instances N] [--clients C] [--backend sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench._server import fresh_database, post_all, serve, tenant_client
from bench.w1 import SOURCE


def run(backend: str, instances: int, clients: int) -> dict[str, float]:
    batches = [
        [{"id": f"i{n}", "params": {"order": n, "sku": "A-1"}} for n in range(first, first + 100)]
        for first in range(0, instances, 100)
    ]
    with fresh_database(backend) as url, serve(url) as base:
        admin_made = tenant_client(base, creates_per_second=1_000_000, max_running_instances=1)
        admin_made.put("/v1/workflows/w1", json={"source": SOURCE, "sandbox": "restricted"})
        requests = [("/v1/workflows/w1/instances/batch", {"instances": b}) for b in batches]
        started = time.perf_counter()
        done = post_all(base, dict(admin_made.headers), requests, clients)
        elapsed = time.perf_counter() - started
    failures = [r.text[:200] for _, r in done if r.status_code != 200 or r.json()["errors"]]
    if failures:
        raise RuntimeError(f"{len(failures)} batches failed, e.g. {failures[0]}")
    latencies = [took for took, _ in done]
    latencies.sort()
    return {
        "per_s": instances / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=50_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], action="append")
    args = parser.parse_args()
    for backend in args.backend or ["sqlite", "postgresql"]:
        figures = run(backend, args.instances, args.clients)
        print(
            f"creates {backend:10} {args.instances} in batches of 100, {args.clients} clients: "
            f"{figures['per_s']:.0f} instances/s, batch p50 {figures['p50_ms']:.1f} ms "
            f"p99 {figures['p99_ms']:.1f} ms"
        )


if __name__ == "__main__":
    main()
