"""W1: 1,000 instances x 3 no-op steps, created with the batch endpoint, run to completion.

Prints workflows/s, steps/s, step latency p50/p99 and database commits per step, for SQLite
and PostgreSQL. ``--keys N`` creates instance n with the key ``k{n % N}`` (default 0: no key)
and ``--flow JSON`` uploads W1 with that ``flow`` (e.g. '{"concurrency_per_key": 1}'); the
output line then ends with the mode.

Usage: python -m bench.w1 [--instances N] [--backend sqlite|postgresql] [--keys N] [--flow JSON]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx

from bench._server import fresh_database, metric, serve, tenant_client

SOURCE = """
from treadle import WorkflowEntrypoint

class ThreeSteps(WorkflowEntrypoint):
    def run(self, event, step):
        step.do("one", lambda: 1)
        step.do("two", lambda: 2)
        step.do("three", lambda: 3)
        return "ok"
"""


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _step_latencies(instance: dict[str, Any]) -> list[float]:
    """Time from the previous step's end (or the start) to each step's end."""
    previous = _ts(instance["started_at"])
    latencies = []
    for step in instance["steps"]:
        ended = _ts(step["attempts"][-1]["ended_at"])
        latencies.append(ended - previous)
        previous = ended
    return latencies


def run(
    backend: str,
    instances: int,
    via: Callable[[str], str] = str,
    *,
    keys: int = 0,
    flow: dict[str, Any] | None = None,
) -> dict[str, float]:
    """W1's figures; ``via`` gives the URL the server uses for the fresh database's URL.
    ``keys``: instance n is created with the key ``k{n % keys}`` (0: none); ``flow``: the
    workflow's flow control, sent in its ``PUT``."""
    with fresh_database(backend) as url, serve(via(url)) as base:
        # Creating 1,000 instances in a burst: lift the default 300 creates per second.
        client = tenant_client(base, creates_per_second=1_000_000)
        upload: dict[str, Any] = {"source": SOURCE, "sandbox": "restricted"}
        if flow is not None:
            upload["flow"] = flow
        reply = client.put("/v1/workflows/w1", json=upload)
        if flow is not None and reply.status_code >= 400:
            raise RuntimeError(f"PUT /v1/workflows/w1 refused the flow: {reply.text}")
        commits_before = metric(base, "treadle_commits_total")
        started = time.perf_counter()
        started_wall = time.time()
        for first in range(0, instances, 100):
            batch: list[dict[str, Any]] = [
                {"id": f"i{n}", "key": f"k{n % keys}"} if keys else {"id": f"i{n}"}
                for n in range(first, min(first + 100, instances))
            ]
            reply = client.post("/v1/workflows/w1/instances/batch", json={"instances": batch})
            if keys and reply.status_code >= 400:
                raise RuntimeError(f"the batch create with keys was refused: {reply.text}")
            reply.raise_for_status()
            assert not reply.json()["errors"], reply.json()["errors"]
        while metric(base, "treadle_instances", status="complete") < instances:
            if time.perf_counter() - started > 600:
                raise RuntimeError("W1 did not finish in 10 minutes")
            # Seldom, so that the bench costs the server next to nothing: the run is timed by
            # when its last instance ended, as the server recorded it.
            time.sleep(0.25)
        commits = metric(base, "treadle_commits_total") - commits_before
        latencies = []
        ended = 0.0
        for n in range(instances):
            instance = client.get(f"/v1/workflows/w1/instances/i{n}").json()
            latencies += _step_latencies(instance)
            ended = max(ended, _ts(instance["ended_at"]))
        elapsed = ended - started_wall
    latencies.sort()
    steps = instances * 3
    return {
        "workflows_per_s": instances / elapsed,
        "steps_per_s": steps / elapsed,
        "step_p50_ms": statistics.median(latencies) * 1000,
        "step_p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "commits_per_step": commits / steps,
        "elapsed_s": elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], action="append")
    parser.add_argument("--keys", type=int, default=0, help="instance n gets key k{n %% N}")
    parser.add_argument("--flow", type=json.loads, default=None, help="the workflow's flow, JSON")
    args = parser.parse_args()
    mode = ""
    if args.keys or args.flow is not None:
        keyed = f"{args.keys} keys" if args.keys else "no keys"
        flow = json.dumps(args.flow, separators=(",", ":")) if args.flow is not None else "none"
        mode = f" [{keyed}, flow {flow}]"
    for backend in args.backend or ["sqlite", "postgresql"]:
        try:
            figures = run(backend, args.instances, keys=args.keys, flow=args.flow)
        except (httpx.HTTPError, RuntimeError) as exc:
            raise SystemExit(f"{backend}: {exc}") from exc
        print(
            f"W1 {backend:10} {args.instances} instances x 3 steps: "
            f"{figures['workflows_per_s']:.0f} workflows/s, {figures['steps_per_s']:.0f} steps/s, "
            f"step p50 {figures['step_p50_ms']:.1f} ms p99 {figures['step_p99_ms']:.1f} ms, "
            f"{figures['commits_per_step']:.2f} commits/step ({figures['elapsed_s']:.2f} s)"
            f"{mode}"
        )


if __name__ == "__main__":
    main()
