"""The disruptions: ``kill -9`` of a random treadle process, restarted at once, every few
seconds, and two crashes of PostgreSQL (``pg_ctl stop -m immediate``, then a start at once),
on a schedule drawn from the seeded generator. Processes that end on their own are started
again (and reported: nothing but the test should end one)."""

from __future__ import annotations

import dataclasses
import random
import threading
import time

from tests.chaos.fleet import Fleet
from tests.pg_cluster import PostgresCluster

POSTGRES = "postgresql"


@dataclasses.dataclass(frozen=True)
class Disruption:
    """``target``: the incarnation killed, or ``postgresql``; from ``at`` to ``done`` (when the
    process had been started again, or the database accepted connections again)."""

    target: str
    at: float
    done: float


def schedule(rng: random.Random, seconds: float, processes: list[str]) -> list[tuple[float, str]]:
    """``(offset, target)`` pairs: kills every 2.5-6 s from the third second, and PostgreSQL
    crashes once in each half."""
    plan, offset = [], 3.0
    while offset < seconds:
        plan.append((offset, rng.choice(processes)))
        offset += rng.uniform(2.5, 6.0)
    plan.append((rng.uniform(0.2, 0.45) * seconds, POSTGRES))
    plan.append((rng.uniform(0.6, 0.85) * seconds, POSTGRES))
    return sorted(plan)


class Chaos:
    def __init__(self, fleet: Fleet, cluster: PostgresCluster, plan: list[tuple[float, str]]):
        self._fleet = fleet
        self._cluster = cluster
        self._plan = plan
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)
        self._failure: BaseException | None = None
        self.disruptions: list[Disruption] = []
        self.ended = 0.0

    def start(self, started: float) -> None:
        self._started = started
        self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait for the end of the schedule; re-raise what broke the chaos thread."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the chaos schedule did not end in time"
        if self._failure is not None:
            raise self._failure

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        try:
            for offset, target in self._plan:
                while time.time() < self._started + offset:
                    if self._stop.wait(0.1):
                        return
                    self._fleet.revive()
                self._disrupt(target)
            self._fleet.revive()
            self.ended = self.disruptions[-1].done
        except BaseException as exc:
            self._failure = exc

    def _disrupt(self, target: str) -> None:
        at = time.time()
        if target == POSTGRES:
            self._cluster.restart_immediately()
            name = POSTGRES
        else:
            name = self._fleet.kill_and_restart(target).incarnation
        self.disruptions.append(Disruption(name, at, time.time()))
