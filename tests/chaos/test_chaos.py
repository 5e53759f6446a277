"""``kill -9`` of ``serve`` and ``worker`` processes and PostgreSQL crashes under a mixed
workload: every instance completes with the right output, no completed step body runs again,
no event is lost or late.

The platform: a private PostgreSQL (restarting it disturbs no other test), one ``treadle
serve`` and two ``treadle worker`` processes with 3 s leases. The workload (``workload``):
about 200 instances of five workflows (sequential steps, sleeps, waits for events, retries,
fan-out), created over the first 56 s, with events sent by the test (some just as the
instance moves into its wait, when a wake-up could be lost) and some instances paused and
resumed while a step runs (``driver``). The chaos (``chaos``),
drawn from a seeded generator (the seed is printed; ``TREADLE_CHAOS_SEED=<seed>`` repeats the
schedule): for 65 s, a random process is killed with SIGKILL and started again at once every
2.5-6 s, and PostgreSQL is crashed (``pg_ctl stop -m immediate``) and started again twice.
The client retries through the outages (``api``).

The external record of side effects (``counter``): every step body calls a local HTTP server
through ``env.fetch`` with the step's idempotency key as the tag, and returns its answer. The
server numbers the calls of each tag in arrival order (1, 2, ...) and answers with the number.

The checks (``verdict``), once the chaos is over and every instance has finished or 90 s have
passed:

- **Every instance completed, with exactly the output its params and event payloads give.**
  Waits time out after an hour, so an instance that missed its wake-up stays ``waiting`` and
  is reported with its steps and the calls of each.
- **No completed step body ran again.** A committed step result is the counter's answer to
  one call, so it names that call's number. A body runs again only after its earlier call,
  so if the committed number is the tag's *last* call, no body ran after the call whose
  result was committed. A body in flight during a crash may have called before (lower
  numbers, their results never committed): allowed, bodies run at least once. A body that
  called after the committed one ran after the step had completed: a failure. (Could the
  later call come from a replay that ran alongside, so that the earlier one's commit came
  after it? Only if a replay commits after another process took its instance over, which
  the lease's fencing forbids: that is a failure too.) Every call made for a completed
  instance must belong to one of its committed steps.
- **No finished body's result was held back** (fan-out branches must be recorded each as it
  finishes): a body whose call was answered at least a lease (3 s) before its process was
  killed, with the database up all that time, must have had its result committed; if the
  step ran again after the kill, it had not been.
- **No body ran again without a crash**: a second call of a tag needs a cause, a kill of the
  process that made the first call or a PostgreSQL outage (up to 10 s before). Otherwise a
  live process lost its lease (renewed every second), e.g. while a pause waited for its
  running step: a third of the ``sequence`` instances are paused during a 4 s step.
- **Nothing ran while paused**: no step body started between the answer that accepted a
  pause and the resume.
- **No event lost**: each wait returned the payload of the event sent for it (each wait
  consumes the one event of its own type, so a duplicate from a retried send is harmless).
- **No event late**: each event was consumed (the first call of the step after the wait)
  within 30 s of the moment both the event and the waiting instance were there; and every
  instance completed within 30 s of the end of the chaos (or of the test's last create,
  event or resume for it, if later).
- **No sleep cut short**: the step after a ``step.sleep`` of n seconds starts at least n
  seconds after the body before it was answered.
- No process ended on its own, and no traceback in the processes' logs but for lost
  database connections (those are counted and printed).

The figures (printed, and written to ``chaos-figures.json`` in the test's directory, whose
path is printed with the logs) go into ``bench/RESULTS.md``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos import logs, verdict
from tests.chaos.api import Api, tenant_key
from tests.chaos.chaos import Chaos, schedule
from tests.chaos.counter import SideEffectCounter
from tests.chaos.driver import Driver
from tests.chaos.figures import figures
from tests.chaos.fleet import Fleet
from tests.chaos.workload import SOURCES, InstancePlan, plan, source
from tests.pg_cluster import PostgresCluster

CHAOS_SECONDS = 65.0
SETTLE_SECONDS = 90.0
FINAL = frozenset({"complete", "errored", "terminated"})


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    server = PostgresCluster()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_kill_9_and_postgres_crashes_lose_nothing(cluster: PostgresCluster, tmp_path: Path) -> None:
    seed = int(os.environ.get("TREADLE_CHAOS_SEED") or random.SystemRandom().getrandbits(32))
    print(f"\nchaos seed {seed} (TREADLE_CHAOS_SEED={seed} repeats it); logs in {tmp_path}")
    rng = random.Random(seed)
    fleet = Fleet(cluster.database("chaos"), tmp_path)
    counter = SideEffectCounter(fleet.callers)
    with counter.running():
        try:
            fleet.start()
            key = tenant_key(fleet.base, "chaos", {"egress_allow": ["127.0.0.1"]})
            with contextlib.closing(Api(fleet.base, key)) as api:
                for workflow in SOURCES:
                    api.put_workflow(workflow, source(workflow))
                plans = plan(rng, counter.url)
                chaos = Chaos(fleet, cluster, schedule(rng, CHAOS_SECONDS, fleet.names))
                driver = Driver(api, plans)
                counter.on_call, counter.on_answer = driver.called, driver.answered
                _play(chaos, driver)
                instances = _settled(api, fleet, plans, driver, chaos)
        finally:
            fleet.stop()
        calls = counter.snapshot()
    evidence = verdict.Evidence(
        {p.id: p for p in plans},
        instances,
        calls,
        chaos.disruptions,
        fleet.exits,
        driver.created,
        driver.sent,
        driver.pauses,
        chaos.ended,
    )
    _report(evidence, driver, fleet, api, seed, tmp_path)


def _play(chaos: Chaos, driver: Driver) -> None:
    """Run the workload during the chaos."""
    started = time.time() + 0.5
    chaos.start(started)
    try:
        driver.run(started, deadline=started + CHAOS_SECONDS + 30)
        chaos.join(CHAOS_SECONDS + 120)
    finally:
        chaos.stop()


def _settled(
    api: Api, fleet: Fleet, plans: list[InstancePlan], driver: Driver, chaos: Chaos
) -> dict[str, dict[str, Any]]:
    """Every instance created, once all have finished or the settling time is over."""
    fleet.wait_healthy()
    deadline = max(chaos.ended, driver.last_action) + SETTLE_SECONDS
    workflows = sorted({p.workflow for p in plans})
    while time.time() < deadline:
        if all(i["status"] in FINAL for w in workflows for i in api.instances(w)):
            break
        time.sleep(0.5)
    return {p.id: api.instance(p.workflow, p.id) for p in plans if p.id in driver.created}


def _report(
    e: verdict.Evidence, driver: Driver, fleet: Fleet, api: Api, seed: int, tmp: Path
) -> None:
    found = logs.tracebacks(fleet.logs)
    figures_of_run: dict[str, Any] = {
        "seed": seed,
        **figures(e),
        "client_retries": dict(api.troubles),
        "client_create_lag_s": round(driver.create_lag(), 2),
        "tracebacks": logs.summary(found),
        "log_errors": logs.errors(fleet.logs),
    }
    _dump(e, tmp / "chaos-evidence.json")
    path = tmp / "chaos-figures.json"
    path.write_text(json.dumps(figures_of_run, indent=2))
    print(json.dumps(figures_of_run, indent=2))
    print(f"figures written to {path}")
    findings = {
        "workload not sent": driver.unsent(),
        "unfinished instances": verdict.unfinished(e),
        "wrong outputs": verdict.wrong_outputs(e),
        "step bodies run again after their result was committed": verdict.reruns_after_commit(e),
        "finished bodies whose result was not committed": verdict.late_commits(e),
        "bodies run again without a crash": verdict.unexplained_reruns(e),
        "events lost": verdict.lost_events(e),
        "events late": verdict.late_events(e),
        "instances late": verdict.late_instances(e),
        "sleeps cut short": verdict.short_sleeps(e),
        "steps started while paused": verdict.paused_progress(e),
        "processes that ended on their own": verdict.self_exits(e),
        "tracebacks other than lost database connections": [
            f"{t.log}: {t.context}\n{t.text}" for t in found if not t.connection
        ],
    }
    failed = {title: lines for title, lines in findings.items() if lines}
    if failed:
        report = "\n\n".join(
            f"== {title} ({len(lines)}):\n" + "\n".join(lines) for title, lines in failed.items()
        )
        (tmp / "chaos-findings.txt").write_text(report)
        pytest.fail(f"seed {seed}; logs in {tmp}\n\n{report}", pytrace=False)


def _dump(e: verdict.Evidence, path: Path) -> None:
    """Everything the checks looked at, for a post-mortem."""
    path.write_text(json.dumps(dataclasses.asdict(e), indent=1, default=str))
