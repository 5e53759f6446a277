"""Overhead of each sandbox backend: per replay, and per step (executed and replayed).

Backends: ``restricted`` (RestrictedPython), ``wasm`` (CPython in a Wasm component) and
``wasm-module`` (a core module through the ABI). For each, a workflow of 1 and of 10 no-op
steps is replayed

- fresh (empty journal: every step body runs), and
- memoised (every step recorded: the replay returns recorded results),

through ``SandboxPool.replay`` (a reused worker, a no-op host) and in-process (the backend's
``replay`` alone: no worker, no protocol). Per-step costs are (10 steps - 1 step) / 9.

Usage: python -m bench.wasm_overhead [--replays N]
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from bench.sandbox_overhead import NoOpChannel, NoOpHost, _measure
from sandbox import Artifact, Done, Limits, ReplayRequest, SandboxPool
from sandbox._backends import load_backend, preload
from sandbox.wasm._build import ensure_python_runtime

BACKENDS = ("restricted", "wasm", "wasm-module")
LIMITS = Limits()


def python_source(steps: int) -> str:
    lines = [f"        step.do('s{i}', lambda: 1)" for i in range(steps)]
    return (
        "from treadle import WorkflowEntrypoint\n\n"
        "class Steps(WorkflowEntrypoint):\n"
        "    def run(self, event, step):\n" + "\n".join(lines) + "\n        return 1\n"
    )


def module_source(steps: int) -> str:
    """A core module of ``steps`` no-op steps (WAT, base64 of its binary)."""
    import wasmtime

    calls = "".join(
        f"(if (i32.eq (call $begin (i32.const {2 * i}) (i32.const 2) (i32.const 512) "
        f"(i32.const 64)) (i32.const -1)) (then (call $end (i32.const {2 * i}) (i32.const 2) "
        "(i32.const 100) (i32.const 1))))"
        for i in range(steps)
    )
    names = "".join(f"s{i}" for i in range(steps))
    text = f"""(module
      (import "treadle" "step_begin" (func $begin (param i32 i32 i32 i32) (result i32)))
      (import "treadle" "step_end" (func $end (param i32 i32 i32 i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "{names}")
      (data (i32.const 100) "1")
      (func (export "alloc") (param i32) (result i32) (i32.const 1024))
      (func (export "run") (param i32 i32) (result i64)
        {calls}
        (i64.or (i64.shl (i64.const 100) (i64.const 32)) (i64.const 1))))"""
    return base64.b64encode(bytes(wasmtime.wat2wasm(text))).decode()


def artifact(backend: str, steps: int) -> Artifact:
    source = module_source(steps) if backend == "wasm-module" else python_source(steps)
    return Artifact(f"{backend}-{steps}", backend, source)


def journal(steps: int) -> list[dict[str, Any]]:
    record = {"type": "do", "status": "complete", "output": 1, "error": None, "attempts": []}
    return [{**record, "name": f"s{i}", "count": 1, "wake_at": None, "event_pk": None}
            for i in range(steps)]  # fmt: skip


def request(records: list[dict[str, Any]]) -> ReplayRequest:
    now = time.time()
    return ReplayRequest("bench", "wf", now, {"n": 1}, records, [], now, {})


def through_pool(pool: SandboxPool, art: Artifact, records: list[Any]) -> Callable[[], object]:
    def replay() -> object:
        outcome = pool.replay(art.sandbox, art, LIMITS, request(records), NoOpHost())
        assert isinstance(outcome, Done), outcome
        return outcome

    return replay


def in_process(art: Artifact, records: list[Any]) -> Callable[[], object]:
    program = load_backend(art.sandbox).compile(art.source, None)
    program.check()

    def replay() -> object:
        outcome, _ = program.replay(dataclasses.asdict(request(records)), LIMITS, NoOpChannel())
        assert outcome["t"] == "done", outcome
        return outcome

    return replay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replays", type=int, default=1000)
    replays = parser.parse_args().replays
    ensure_python_runtime()
    for backend in BACKENDS:
        preload(backend)  # in-process runs load what a worker loads when it starts
    pool = SandboxPool(max_workers=3, per_tenant=1)
    header = f"{'backend':<12} {'path':<11} {'replay (1 step)':>16} {'p99':>9}"
    print(f"{header} {'per step run':>13} {'per step replayed':>18}   ({replays} replays)")
    try:
        for backend in BACKENDS:
            one, ten = artifact(backend, 1), artifact(backend, 10)
            for art in (one, ten):
                pool.validate(backend, art)
            for path in ("pool", "in-process"):
                make = (lambda a, r: through_pool(pool, a, r)) if path == "pool" else in_process
                fresh1, p99 = _measure(make(one, []), replays)
                fresh10, _ = _measure(make(ten, []), replays)
                memo1, _ = _measure(make(one, journal(1)), replays)
                memo10, _ = _measure(make(ten, journal(10)), replays)
                run_step, replayed_step = (fresh10 - fresh1) / 9, (memo10 - memo1) / 9
                print(
                    f"{backend:<12} {path:<11} {fresh1 * 1e3:>13.3f} ms {p99 * 1e3:>6.3f} ms "
                    f"{run_step * 1e6:>10.0f} µs {replayed_step * 1e6:>15.0f} µs"
                )
    finally:
        pool.close()


if __name__ == "__main__":
    main()
