"""The two writers that meet on a waiting instance, forced into their worst interleaving.

An event (or a child's result) is stored by one transaction while another commits the
instance's move into its wait. Under READ COMMITTED neither sees what the other has not
committed; unless both lock the instance's row first, the event is stored and the instance
sleeps until its wait times out. Here the recording transaction is held open, with its
writes done, while the suspend commits; then it commits: the instance must be due at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from engine._commits import RecordWrite
from engine._engine import _new_row as new_row
from engine._store import Claimed, EngineStore, Final
from storage import Database, GroupCommitter, tables

I = tables.instances  # noqa: E741
DAY = 86400.0


@dataclass
class World:
    db: Database
    store: EngineStore
    committer: GroupCommitter
    tenant_id: int

    def running(self, instance_id: str, parent_pk: int | None = None) -> Claimed:
        """A new instance, claimed: running, as a replay would find it."""
        now = time.time()
        row = new_row(self.tenant_id, "wf", "v1", instance_id, None, now)
        row["parent_pk"] = parent_pk
        self.committer.run(self.store.create(self.tenant_id, [row], None, now))
        due = self.store.next_due_by_tenant()
        claim = self.store.claim("p", now, now + 30, 1, due, {self.tenant_id: 100})
        (claimed,) = self.committer.run(claim).claimed
        return claimed

    def suspend(self, claimed: Claimed, event_type: str) -> RecordWrite:
        now = time.time()
        final = Final("waiting", wake_at=None, event_type=event_type)
        return RecordWrite(self.store, claimed, now + 30, [], [], now, final)

    def due_in(self, pk: int) -> float:
        with self.db.connect() as conn:
            due = conn.execute(sa.select(I.c.due_at).where(I.c.pk == pk)).scalar_one()
        return float(due) - time.time()


@pytest.fixture
def world(database_url: str) -> Iterator[World]:
    db = Database(database_url)
    with db.begin() as conn:
        tenant_id = conn.execute(
            tables.tenants.insert()
            .values(name="w", policy={}, created_at=time.time())
            .returning(tables.tenants.c.id)
        ).scalar_one()
    committer = GroupCommitter(db)
    yield World(db, EngineStore(db), committer, tenant_id)
    committer.close()
    db.dispose()


def _held_open(db: Database, write: Callable[[sa.Connection], Any]) -> Callable[[], None]:
    """Run ``write`` in a transaction left open until the returned function is called, which
    commits it."""
    done, release = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def hold() -> None:
        try:
            with db.begin() as conn:
                write(conn)
                done.set()
                release.wait(30)
        except BaseException as exc:
            failure.append(exc)
            done.set()

    thread = threading.Thread(target=hold)
    thread.start()
    assert done.wait(30) and not failure, failure

    def commit() -> None:
        release.set()
        thread.join(30)
        assert not failure, failure

    return commit


def _race(world: World, commit_recording: Callable[[], None], suspend: RecordWrite) -> None:
    """Commit the suspend while the recording transaction is open; then commit that one."""
    future = world.committer.submit(suspend)
    time.sleep(0.3)  # the suspend has reached the database (and waits there, or not)
    commit_recording()
    future.result(30)


def test_an_event_stored_while_the_waiter_suspends_wakes_it(world: World) -> None:
    claimed = world.running("i1")
    send = world.store.send_event(world.tenant_id, "wf", "i1", "go", {"n": 1}, time.time())
    _race(world, _held_open(world.db, send), world.suspend(claimed, "go"))
    assert world.due_in(claimed.pk) < 5  # not at the wait's timeout, a day later


def test_an_event_of_another_type_does_not_wake_the_waiter(world: World) -> None:
    claimed = world.running("i1")
    send = world.store.send_event(world.tenant_id, "wf", "i1", "other", {}, time.time())
    _race(world, _held_open(world.db, send), world.suspend(claimed, "go"))
    assert world.due_in(claimed.pk) > DAY - 60


def test_a_child_finishing_while_its_parent_suspends_wakes_the_parent(world: World) -> None:
    parent = world.running("parent")
    child = world.running("child", parent_pk=parent.pk)
    now = time.time()
    finished = RecordWrite(
        world.store, child, now + 30, [], [], now, Final("complete", output={"ok": True})
    )
    commit = _held_open(world.db, lambda conn: RecordWrite.combine(conn, [finished]))
    _race(world, commit, world.suspend(parent, "child.child"))
    assert world.due_in(parent.pk) < 5
