"""Per-key flow control (docs/flow-control.md) through the engine and a real sandbox, on SQLite
and PostgreSQL: concurrency and rate per key, debounce, singleton, priority, delayed starts,
and why a queued instance waits."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from engine import Flow, NewInstance
from storage import tables
from tests.integration.engine_harness import Harness

I = tables.instances  # noqa: E741

SLEEPER = """
    from treadle import WorkflowEntrypoint

    class Sleeper(WorkflowEntrypoint):
        def run(self, event, step):
            step.sleep("nap", (event.payload or {}).get("nap", 0))
            return event.payload
"""


@pytest.fixture
def h(database_url: str) -> Iterator[Harness]:
    harness = Harness(database_url, concurrency=8, per_tenant=4)
    with harness.db.begin() as conn:
        now = time.time()
        conn.execute(
            tables.workflows.insert().values(
                tenant_id=harness.tenant_id, name="wf", version="-", created_at=now, updated_at=now
            )
        )
    yield harness
    harness.close()


def _create(
    h: Harness, version: str, items: list[NewInstance], flow: Flow | None = None
) -> tuple[list[Any], list[Any]]:
    return h.engine.create_instances(h.tenant_id, "wf", version, items, flow=flow)


def _one(h: Harness, version: str, item: NewInstance, flow: Flow | None = None) -> str:
    created, errors = _create(h, version, [item], flow)
    assert not errors, errors
    return str(created[0]["id"])


_ALL = sa.true()


def _rows(h: Harness, *columns: Any, where: Any = _ALL) -> list[Any]:
    with h.db.connect() as conn:
        return list(conn.execute(sa.select(*columns).where(I.c.tenant_id == h.tenant_id, where)))


def _wait_all(h: Harness, ids: list[str], timeout: float = 60.0) -> None:
    for instance_id in ids:
        h.wait(instance_id, "complete", timeout=timeout)


class _Sampler(threading.Thread):
    """Counts, every few milliseconds, the instances of a key holding a slot (started, not
    finished) in the database, and keeps the most seen at once."""

    def __init__(self, h: Harness, key: str) -> None:
        super().__init__(daemon=True)
        self.h, self.key, self.most, self.samples = h, key, 0, 0
        self.done = threading.Event()

    def run(self) -> None:
        live = I.c.status.in_(("running", "waiting", "waitingForPause"))
        query = sa.select(sa.func.count()).where(
            I.c.tenant_id == self.h.tenant_id, I.c.flow_key == self.key, live
        )
        while not self.done.is_set():
            with self.h.db.connect() as conn:
                self.most = max(self.most, int(conn.execute(query).scalar_one()))
            self.samples += 1
            time.sleep(0.005)


def test_a_key_never_runs_more_than_its_concurrency_and_another_key_is_not_held_up(
    h: Harness,
) -> None:
    version = h.deploy(SLEEPER)
    flow = Flow(concurrency_per_key=2)
    sampler = _Sampler(h, "hot")
    sampler.start()
    hot = [f"hot-{n}" for n in range(20)]
    created, errors = _create(
        h, version, [NewInstance(i, {"nap": 0.15}, key="hot") for i in hot], flow
    )
    assert not errors and len(created) == 20
    time.sleep(0.3)  # the hot key's backlog is well under way
    cold = _one(h, version, NewInstance("cold", {"nap": 0}, key="cold"), flow)
    asked = time.time()
    done = h.wait(cold, "complete", timeout=10)
    started = _rows(h, I.c.started_at, where=I.c.id == cold)[0][0]
    assert started - asked < 1.0, done
    waiting = [h.get(i) for i in hot]
    assert any(w["waiting_reason"] == "concurrency_key" for w in waiting if w["status"] == "queued")
    _wait_all(h, hot)
    sampler.done.set()
    sampler.join()
    assert sampler.samples > 50
    assert sampler.most == 2
    assert {h.get(i)["key"] for i in hot} == {"hot"}


def test_a_key_starts_no_more_than_its_rate(h: Harness) -> None:
    version = h.deploy(SLEEPER)
    flow = Flow(rate_limit=5, rate_period=2.0)
    ids = [f"r{n}" for n in range(20)]
    created, errors = _create(h, version, [NewInstance(i, key="k") for i in ids], flow)
    assert not errors and len(created) == 20
    time.sleep(0.5)
    queued = [h.get(i) for i in ids if h.get(i)["status"] == "queued"]
    assert queued and all(q["waiting_reason"] == "rate_limit" for q in queued)
    _wait_all(h, ids)
    starts = sorted(s for (s,) in _rows(h, I.c.started_at, where=I.c.flow_key == "k"))
    assert len(starts) == 20
    # Any five starts later than the first of them: the sixth is at least a period after it.
    for first, sixth in zip(starts, starts[5:], strict=False):
        assert sixth - first >= 2.0 - 1e-6, starts
    # It did not hold back more than it had to: 20 starts at 5 per 2 s take about 6 s.
    assert starts[-1] - starts[0] < 9.0, starts


def test_a_burst_of_debounced_creates_leaves_one_run_with_the_last_params(h: Harness) -> None:
    version = h.deploy(SLEEPER)
    flow = Flow(debounce=0.5)
    answers = []
    for n in range(10):
        last_create = time.time()
        created, errors = _create(h, version, [NewInstance(f"d{n}", {"n": n}, key="doc")], flow)
        assert not errors, errors
        answers.append(created[0])
        time.sleep(0.02)
    assert {a["id"] for a in answers} == {"d0"}
    assert [bool(a.get("debounced")) for a in answers] == [False] + [True] * 9
    pending = h.get("d0")
    assert pending["status"] == "queued" and pending["waiting_reason"] == "debounce"
    done = h.wait("d0", "complete", timeout=10)
    assert done["output"] == {"n": 9} and done["params"] == {"n": 9}
    # Pushed back by every create: it started a debounce after the last one, not the first.
    started = _rows(h, I.c.started_at, where=I.c.id == "d0")[0][0]
    assert started >= last_create + 0.5 - 0.01
    assert len(_rows(h, I.c.pk, where=I.c.flow_key == "doc")) == 1
    # Once it started, the next create makes a new pending instance.
    again = _one(h, version, NewInstance("d10", {"n": 10}, key="doc"), flow)
    assert again == "d10"


def test_a_singleton_key_refuses_a_second_live_instance_with_its_id(h: Harness) -> None:
    version = h.deploy(SLEEPER)
    flow = Flow(singleton=True)
    first = _one(h, version, NewInstance("s1", {"nap": 0.5}, key="acct"), flow)
    created, errors = _create(h, version, [NewInstance("s2", key="acct")], flow)
    assert created == []
    assert [(e["code"], e["existing_id"]) for e in errors] == [("instance.singleton", "s1")]
    # Another key is not affected.
    assert _one(h, version, NewInstance("t1", key="other"), flow) == "t1"
    h.wait(first, "complete", timeout=10)
    assert _one(h, version, NewInstance("s3", key="acct"), flow) == "s3"
    assert not _rows(h, I.c.pk, where=I.c.id == "s2")


def test_priority_nine_overtakes_a_queued_backlog_of_priority_five(database_url: str) -> None:
    # The tenant may run nothing while the backlog and then the urgent instance are queued;
    # once it may run one at a time, the urgent one starts first, though it is the newest.
    cap = [0]
    h = Harness(database_url, concurrency=1, per_tenant=1, running_cap=lambda t: cap[0])
    try:
        version = h.deploy(SLEEPER)
        backlog = [f"b{n}" for n in range(30)]
        created, errors = _create(h, version, [NewInstance(i) for i in backlog])
        assert not errors and len(created) == 30
        time.sleep(0.05)
        urgent = _one(h, version, NewInstance("urgent", priority=9))
        time.sleep(0.3)
        assert h.get(urgent)["waiting_reason"] == "tenant_limit"
        assert not _rows(h, I.c.pk, where=I.c.started_at.is_not(None))
        cap[0] = 1
        _wait_all(h, [urgent, *backlog])
        order = [i for (i, _) in sorted(_rows(h, I.c.id, I.c.started_at), key=lambda r: r[1])]
        assert order[0] == "urgent", order
        assert order[1:] == backlog  # the rest oldest first
        assert h.get(urgent)["priority"] == 9 and h.get("b0")["priority"] == 5
    finally:
        h.close()


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_a_delayed_instance_starts_no_earlier_than_asked(h: Harness) -> None:
    version = h.deploy(SLEEPER)
    asked = time.time()
    late = _one(h, version, NewInstance("late", delay=1.0))
    at = _one(h, version, NewInstance("at", start_at=asked + 1.2, key="k"))
    now = _one(h, version, NewInstance("now"))
    assert h.get(late)["waiting_reason"] == "start_at"
    assert h.get(at)["waiting_reason"] == "start_at"
    assert h.get(at)["start_at"] == _iso(asked + 1.2)
    h.wait(now, "complete", timeout=10)
    assert h.get(late)["status"] == "queued"
    for instance_id, earliest in ((late, asked + 1.0), (at, asked + 1.2)):
        h.wait(instance_id, "complete", timeout=10)
        started = _rows(h, I.c.started_at, where=I.c.id == instance_id)[0][0]
        assert started >= earliest - 0.01
        assert h.get(instance_id)["waiting_reason"] is None


def test_a_freed_slot_starts_the_next_of_its_key_at_once(h: Harness) -> None:
    version = h.deploy(
        """
        from treadle import WorkflowEntrypoint

        class Gate(WorkflowEntrypoint):
            def run(self, event, step):
                return step.wait_for_event("go", type="go", timeout="1 hour")
        """
    )
    flow = Flow(concurrency_per_key=1)
    _one(h, version, NewInstance("g1", key="k"), flow)
    _one(h, version, NewInstance("g2", key="k"), flow)
    h.wait("g1", "waiting", timeout=10)
    time.sleep(0.3)
    assert h.get("g2")["status"] == "queued"
    assert h.get("g2")["waiting_reason"] == "concurrency_key"
    listed, _ = h.engine.list_instances(h.tenant_id, "wf")
    assert {i["id"]: i["waiting_reason"] for i in listed} == {"g1": None, "g2": "concurrency_key"}
    h.event("g1", "go", 1)
    h.wait("g1", "complete", timeout=10)
    h.wait("g2", "waiting", timeout=3)
    h.engine.change_status(h.tenant_id, "wf", "g2", "terminate")
    assert h.get("g2")["status"] == "terminated"
