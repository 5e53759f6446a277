"""Latency: one instance at a time, 3 no-op steps, from create to complete.

Each instance is created over HTTP and the next one only after it completed, so nothing queues
behind anything. Printed per database:

- ``create→complete``: the server's own times, from the instance's ``created_at`` to its
  ``ended_at`` (what the engine takes);
- ``client``: from sending the create to seeing the instance complete, polled every
  ``--poll-ms`` (so up to that much more than the server's figure);
- ``create→first step``: from ``created_at`` to the first step's start (the create's commit,
  the claim, the journal read and the hand-over to a sandbox worker);
- ``commit gap``: from one step's end to the next step's start, as the attempts recorded them:
  what a step commit adds before the next body runs;
- ``last step→complete``: from the last step's end to ``ended_at`` (the final commit).

Usage: python -m bench.latency [--instances N] [--backend sqlite|postgresql] [--poll-ms 2]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable
from datetime import datetime

from bench._server import fresh_database, serve, tenant_client
from bench.w1 import SOURCE


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def run(
    backend: str, instances: int, poll: float, warmup: int = 20, via: Callable[[str], str] = str
) -> dict[str, list[float]]:
    """The latencies; ``via`` gives the URL the server uses for the fresh database's URL."""
    server, client_side, gaps, starts, ends = [], [], [], [], []
    with fresh_database(backend) as url, serve(via(url)) as base:
        client = tenant_client(base, creates_per_second=1_000_000)
        client.put("/v1/workflows/w1", json={"source": SOURCE, "sandbox": "restricted"})
        for n in range(warmup + instances):
            sent = time.perf_counter()
            client.post("/v1/workflows/w1/instances", json={"id": f"i{n}"}).raise_for_status()
            while True:
                instance = client.get(f"/v1/workflows/w1/instances/i{n}").json()
                if instance["status"] == "complete":
                    seen = time.perf_counter()
                    break
                if instance["status"] in ("errored", "terminated"):
                    raise RuntimeError(f"i{n} ended {instance['status']}: {instance['error']}")
                time.sleep(poll)
            if n < warmup:  # the tenant's first sandbox worker starts during these
                continue
            server.append(_ts(instance["ended_at"]) - _ts(instance["created_at"]))
            client_side.append(seen - sent)
            attempts = [step["attempts"][-1] for step in instance["steps"]]
            starts.append(_ts(attempts[0]["started_at"]) - _ts(instance["created_at"]))
            ends.append(_ts(instance["ended_at"]) - _ts(attempts[-1]["ended_at"]))
            for before, after in itertools.pairwise(attempts):
                gaps.append(_ts(after["started_at"]) - _ts(before["ended_at"]))
    return {"server": server, "client": client_side, "gap": gaps, "start": starts, "end": ends}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--poll-ms", type=float, default=2.0)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], action="append")
    args = parser.parse_args()
    for backend in args.backend or ["sqlite", "postgresql"]:
        figures = run(backend, args.instances, args.poll_ms / 1000)
        line = [f"latency {backend:10} {args.instances} instances one at a time, 3 steps:"]
        for name, label in (
            ("server", "create→complete"),
            ("client", "client"),
            ("start", "create→first step"),
            ("gap", "commit gap"),
            ("end", "last step→complete"),
        ):
            values = figures[name]
            line.append(
                f"{label} p50 {statistics.median(values) * 1000:.1f} ms "
                f"p99 {_pct(values, 0.99) * 1000:.1f} ms"
            )
        print(", ".join(line[1:]).join([line[0] + " ", ""]))


if __name__ == "__main__":
    main()
