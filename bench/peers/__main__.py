"""W1 for treadle and its peers in one invocation, interleaved, with the ratios.

Each round runs treadle's W1 (``bench.w1``) on SQLite and on PostgreSQL, then Restate (its Rust
server from npm, a Python SDK service) and DBOS (on a PostgreSQL cluster of its own, queue mode),
1,000 instances x 3 no-op steps each. The peers' ``run.sh`` install what they need on first use
(npm, PyPI) and run in a network namespace with only loopback. Rounds interleave the engines so
that the shared machine's load drifts over all of them alike; compare within a round.

Usage: python -m bench.peers [--instances N] [--rounds R] [--only treadle-sqlite,restate,...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import w1

HERE = Path(__file__).resolve().parent
ENGINES = ("treadle-sqlite", "treadle-postgresql", "restate", "dbos-postgresql")


def _peer(command: list[str]) -> dict[str, Any]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.splitlines()[-15:])
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_engine(engine: str, instances: int) -> dict[str, Any]:
    """One W1 run of ``engine``: workflows/s, and p50/p99 where the harness reports them."""
    if engine.startswith("treadle-"):
        figures = w1.run(engine.removeprefix("treadle-"), instances)
        return {
            "workflows_per_s": figures["workflows_per_s"],
            "note": f"step p50 {figures['step_p50_ms']:.1f} ms p99 {figures['step_p99_ms']:.1f} ms",
        }
    if engine == "restate":
        result = _peer(["bash", str(HERE / "restate" / "run.sh"), str(instances)])
        note = f"workflow p50 {result['p50_ms']:.0f} ms p99 {result['p99_ms']:.0f} ms"
    else:
        run_sh = HERE / "dbos" / "run.sh"
        result = _peer(["bash", str(run_sh), str(instances), "postgres", "queue"])
        note = f"dbos {result.get('dbos_version', '?')}"
    return {"workflows_per_s": float(result["workflows_per_s"]), "note": note}


def _load() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", default=",".join(ENGINES), help="engines, comma-separated")
    args = parser.parse_args()
    engines = [e for e in args.only.split(",") if e]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        parser.error(f"unknown engines: {', '.join(unknown)}; choose from {', '.join(ENGINES)}")
    rounds: list[dict[str, float]] = []
    for number in range(1, args.rounds + 1):
        figures: dict[str, float] = {}
        for engine in engines:
            load = _load()
            started = time.monotonic()
            print(f"round {number}: {engine} ...", file=sys.stderr, flush=True)
            result = run_engine(engine, args.instances)
            figures[engine] = result["workflows_per_s"]
            print(
                f"round {number}  {engine:20} {result['workflows_per_s']:7.1f} workflows/s  "
                f"({result['note']}; load {load}; {time.monotonic() - started:.0f} s)",
                flush=True,
            )
        rounds.append(figures)
        _ratios(number, figures)
    if len(rounds) > 1:
        best = {e: max(r[e] for r in rounds) for e in engines}
        print("best of the rounds:", ", ".join(f"{e} {v:.1f}" for e, v in best.items()))
        _ratios(0, best)


def _ratios(number: int, figures: dict[str, float]) -> None:
    label = f"round {number}" if number else "best"
    for ours in ("treadle-sqlite", "treadle-postgresql"):
        for peer in ("restate", "dbos-postgresql"):
            if ours in figures and peer in figures and figures[peer] > 0:
                ratio = figures[ours] / figures[peer]
                print(f"{label}  {ours} / {peer}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
