"""Victim latency with and without each attack of ``tests/hostile``.

Runs the hostile scenarios (each against a real `treadle serve`, on SQLite and PostgreSQL);
each measures another tenant's one-step run (create to complete) and its `GET /v1/workflows`
before the attack and again and again while it runs, and appends its figures to a report file.
Prints them as a table: the worst run and list seen before and during each attack.
Usage: python -m bench.hostile [-k EXPRESSION] [--report FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only the scenarios pytest -k selects")
    parser.add_argument("--report", help="keep the raw figures (JSON lines) in this file")
    args = parser.parse_args()
    report = Path(args.report or tempfile.mkstemp(prefix="treadle-hostile-", suffix=".jsonl")[1])
    report.write_text("")
    command = [sys.executable, "-m", "pytest", "-q", "tests/hostile", "-p", "no:randomly"]
    if args.k:
        command += ["-k", args.k]
    print("running:", " ".join(command), flush=True)
    env = {**os.environ, "TREADLE_HOSTILE_REPORT": str(report)}
    tests = subprocess.run(command, env=env, check=False)
    lines = [json.loads(line) for line in report.read_text().splitlines() if line.strip()]
    print()
    print(table(lines))
    if tests.returncode != 0:
        print(f"\nsome scenarios failed (pytest exit {tests.returncode}): see above")
    return tests.returncode


def table(lines: list[dict[str, Any]]) -> str:
    rows = [
        "| attack | database | run, without | run, during | list, without | list, during |"
        " probes during |",
        "|---|---|---|---|---|---|---|",
    ]
    for line in sorted(lines, key=lambda x: (x["scenario"], x["database"])):
        before, during = line["before"], line["during"]
        rows.append(
            f"| {line['scenario']} | {line['database']} | {_s(before['run'])} | "
            f"{_s(during['run'])} | {_s(before['list'])} | {_s(during['list'])} | "
            f"{during['probes']} |"
        )
    return "\n".join(rows)


def _s(seconds: float) -> str:
    if seconds is None or math.isnan(seconds):
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


if __name__ == "__main__":
    raise SystemExit(main())
