"""Per-replay overhead of the sandbox: 1-step and 3-step no-op workflows, median and p99.

Each replay starts from an empty journal, so every step body runs: this is the cost of one
wake-up of a fresh instance through ``SandboxPool.replay`` (worker reused, code cached, a
no-op host), and the same replay in-process for comparison (no worker, no protocol).

Usage: python -m bench.sandbox_overhead [--replays N]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

from sandbox import Artifact, Deadline, Done, Limits, ReplayRequest, SandboxPool
from sandbox.restricted._backend import RestrictedBackend

WORKFLOWS = {
    "1 step": """
from treadle import WorkflowEntrypoint

class One(WorkflowEntrypoint):
    def run(self, event, step):
        return step.do("one", lambda: 1)
""",
    "3 steps": """
from treadle import WorkflowEntrypoint

class Three(WorkflowEntrypoint):
    def run(self, event, step):
        step.do("one", lambda: 1)
        step.do("two", lambda: 2)
        return step.do("three", lambda: 3)
""",
}


class NoOpHost:
    def commit(
        self, records: list[dict[str, Any]], logs: list[dict[str, Any]], *, running: bool = False
    ) -> None:
        pass

    def on_stop(self, stop: Callable[[BaseException], None]) -> None:
        pass

    def call(self, method: str, args: dict[str, Any], deadline: Deadline) -> Any:
        raise NotImplementedError(method)


class NoOpChannel:
    def send(self, message: dict[str, Any]) -> None:
        pass

    def wait_ack(self) -> None:
        pass


def _request() -> ReplayRequest:
    now = time.time()
    return ReplayRequest("bench", "wf", now, {"n": 1}, [], [], now, {})


def _measure(replay: Callable[[], object], replays: int) -> tuple[float, float]:
    for _ in range(min(200, replays)):
        replay()
    samples = []
    for _ in range(replays):
        started = time.perf_counter()
        replay()
        samples.append(time.perf_counter() - started)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def _through_pool(pool: SandboxPool, artifact: Artifact) -> Callable[[], object]:
    limits = Limits()

    def replay() -> object:
        outcome = pool.replay("bench", artifact, limits, _request(), NoOpHost())
        assert isinstance(outcome, Done), outcome
        return outcome

    return replay


def _in_process(artifact: Artifact) -> Callable[[], object]:
    program = RestrictedBackend().compile(artifact.source, None)
    limits = Limits()
    return lambda: program.replay(dataclasses.asdict(_request()), limits, NoOpChannel())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replays", type=int, default=3000)
    replays = parser.parse_args().replays
    pool = SandboxPool(max_workers=1, per_tenant=1)
    try:
        print(f"{'workflow':<10} {'path':<12} {'median':>10} {'p99':>10}   ({replays} replays)")
        for name, source in WORKFLOWS.items():
            artifact = Artifact(name.replace(" ", "-"), "restricted", source)
            pool.validate("bench", artifact)
            for path, replay in (
                ("pool", _through_pool(pool, artifact)),
                ("in-process", _in_process(artifact)),
            ):
                median, p99 = _measure(replay, replays)
                print(f"{name:<10} {path:<12} {median * 1e6:>8.0f}µs {p99 * 1e6:>8.0f}µs")
    finally:
        pool.close()


if __name__ == "__main__":
    main()
