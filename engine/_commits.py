"""Step commits: what a replay recorded, made durable for many instances at once.

A :class:`RecordWrite` carries one replay's step records, log lines and perhaps its final
state. The group committer combines all of them queued at a moment into one transaction: one
fencing ``UPDATE`` for all their instances (a replay whose lease moved on commits nothing),
then one ``executemany`` per table, and history events for the live stream alongside.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import sqlalchemy as sa

from engine._budget import StorageExhausted, bound, settle
from engine._fencing import lock_and_fence
from engine._flow import FlowStore
from engine._observe import Attempt, Waited
from engine._rows import HistoryRow
from engine._search import error_name
from engine._store import (
    Claimed,
    EngineStore,
    Final,
    H,
    I,
    LeaseLost,
    PauseRequested,
    step_record,
    workflow_event,
)
from engine._usage import Usage
from storage import BatchWrite, pipelined
from treadle.runtime import JSONValue, LogLine, StepRecord, as_json


class StepRow(StepRecord):
    """A step record as a commit writes it: the latest of its step in the batch, with its
    instance and its position among the instance's steps."""

    instance_pk: int
    seq: int


def step_row(instance_pk: int, seq: int, record: StepRecord) -> StepRow:
    return {
        "instance_pk": instance_pk,
        "seq": seq,
        "name": record["name"],
        "count": record["count"],
        "type": record["type"],
        "status": record["status"],
        "output": record.get("output"),
        "error": record.get("error"),
        "attempts": record.get("attempts") or [],
        "wake_at": record.get("wake_at"),
        "event_pk": record.get("event_pk"),
    }


class RecordWrite(BatchWrite):
    """Step records, log lines and maybe the final state of one replay, fenced by its lease.

    Many of these commit together: one fencing UPDATE for all their instances, then one
    ``executemany`` per table.
    """

    def __init__(
        self,
        store: EngineStore,
        claimed: Claimed,
        lease_until: float,
        steps: list[StepRow],
        logs: list[LogLine],
        now: float,
        final: Final | None,
        *,
        pausable: bool = True,
        usage: Usage | None = None,
    ) -> None:
        self.store = store
        self.claimed = claimed
        self.lease_until = lease_until
        self.steps = steps
        self.logs = logs
        self.now = now
        self.final = final
        # False while other step bodies of the replay still run: a pause waits for them.
        self.pausable = pausable
        self.usage = usage or Usage()  # metered with the write: steps, attempts, CPU, egress
        self.attempts: list[Attempt] = []  # the attempts it makes durable, for the observer
        self.waits: list[Waited] = []  # the sleeps and waits it ends, for the observer
        # Resolved here, on the replay's thread: a policy lookup inside the commit could wait
        # for the commit itself.
        self.limits = store.usage.limits(claimed.tenant_id)
        self.stored = 0  # bytes this write stores, once bounded
        self.log_bytes: int | None = None  # the instance's log bytes after it (None: no logs)
        self.refused = False  # it would have taken the tenant past max_storage_mb
        self.stops_replay = False  # refused while the replay was still running

    @staticmethod
    def combine(conn: sa.Connection, writes: Sequence[Any]) -> list[Any]:
        store: EngineStore = writes[0].store
        # Reads only, before any lock: writes of one instance never race each other, and a
        # refused write's final state decides which parents the fence locks.
        bound(conn, store, writes)
        pairs = [(w.claimed.pk, w.claimed.epoch) for w in writes]
        lease = max(w.lease_until for w in writes)
        # The fence locks the instance rows, and the parents that finishing children will
        # wake, before anything else; a wait that suspends is decided after that lock.
        locked = {pk for pk, _ in pairs} | {
            w.claimed.parent_pk
            for w in writes
            if w.final is not None and w.final.status != "waiting" and w.claimed.parent_pk
        }
        held = lock_and_fence(conn, locked, pairs, lease)
        live: list[RecordWrite] = [w for w in writes if w.claimed.pk in held]
        # The rest only writes: on PostgreSQL it is sent in one round trip, with the COMMIT
        # when these are the transaction's last writes.
        with pipelined(conn, last=True):
            _write(conn, store, live, held)
        return [_result(w, held.get(w.claimed.pk)) for w in writes]


def _write(
    conn: sa.Connection, store: EngineStore, live: list[RecordWrite], held: dict[int, str]
) -> None:
    steps = [row for w in live for row in w.steps]
    if steps:
        conn.execute(store.upsert_step, steps)
    consumed = [r["event_pk"] for r in steps if r.get("event_pk") and r["status"] == "complete"]
    if consumed:
        conn.execute(store.consume.values(consumed_at=live[0].now), {"pks": consumed})
    history = [_log_row(w.claimed.pk, x) for w in live for x in w.logs]
    history += [_step_event(row, w.now) for w in live for row in w.steps]
    history += [_final_event(w) for w in live if w.final is not None]
    if history:
        conn.execute(H.insert().inline(), history)
    _finish(conn, store, [w for w in live if w.final is not None])
    pausing = [w for w in live if held[w.claimed.pk] == "waitingForPause" and w.pausable]
    if pausing:
        _pause(conn, store, pausing)
    settle(conn, store, live)


def _result(write: RecordWrite, status: str | None) -> BaseException | None:
    if status is None:
        return LeaseLost()
    if write.refused:
        return StorageExhausted() if write.stops_replay else None
    if status == "waitingForPause" and write.final is None and write.pausable:
        return PauseRequested()
    return None


def _pause(conn: sa.Connection, store: EngineStore, writes: list[RecordWrite]) -> None:
    """Turn instances asked to pause into paused ones: a suspended replay keeps its wake time
    for when it is resumed; an interrupted one is due again at once."""
    now = writes[0].now
    suspended = [w.claimed.pk for w in writes if w.final and w.final.status == "waiting"]
    stopped = [w.claimed.pk for w in writes if w.final is None]
    if suspended:
        conn.execute(
            store.pause.where(I.c.status == "waiting"), {"pks": suspended, "now": now, "due": None}
        )
    if stopped:
        conn.execute(store.pause, {"pks": stopped, "now": now, "due": now})


def _finish(conn: sa.Connection, store: EngineStore, writes: list[RecordWrite]) -> None:
    ended, suspended = [], []
    for w in writes:
        final = w.final
        assert final is not None
        if final.status == "waiting":
            due = final.wake_at if final.wake_at is not None else w.now + 86400.0
            suspended.append(
                {"b_pk": w.claimed.pk, "b_type": final.event_type, "b_now": w.now, "b_due": due}
            )
        else:
            ended.append(
                {
                    "b_pk": w.claimed.pk,
                    "b_status": final.status,
                    "b_output": final.output,
                    "b_error": final.error,
                    "b_error_name": error_name(final.error),
                    "b_rollback": final.rollback,
                    "b_now": w.now,
                }
            )
    if ended:
        conn.execute(store.end, ended)
        notify_parents(conn, store, [w for w in writes if w.final and w.final.status != "waiting"])
        # A keyed instance that ends frees a slot of its key.
        FlowStore.wake(conn, [
            (w.claimed.tenant_id, w.claimed.workflow, w.claimed.flow_key)
            for w in writes
            if w.claimed.flow_key is not None and w.final and w.final.status != "waiting"
        ], writes[0].now)  # fmt: skip
    if suspended:
        conn.execute(store.suspend, suspended)


def notify_parents(conn: sa.Connection, store: EngineStore, writes: list[RecordWrite]) -> None:
    """A finished child's outcome becomes an event of its parent, waking it if it waits."""
    events = []
    for w in writes:
        if w.claimed.parent_pk is None or w.final is None:
            continue
        payload = {"status": w.final.status, "output": w.final.output, "error": w.final.error}
        events.append(
            {
                "parent": w.claimed.parent_pk,
                "type": f"child.{w.claimed.id}",
                "payload": payload,
                "now": w.now,
            }
        )
    if events:
        conn.execute(store.child_done, events)
        conn.execute(store.wake_parent, [{"parent": e["parent"], "now": e["now"]} for e in events])


_STEP_EVENTS = {
    ("do", "complete"): "step.completed",
    ("do", "errored"): "step.errored",
    ("do", "waiting"): "attempt.failed",
    ("sleep", "waiting"): "sleep.started",
    ("sleep", "complete"): "sleep.completed",
    ("wait_for_event", "waiting"): "wait.started",
    ("wait_for_event", "complete"): "wait.completed",
    ("wait_for_event", "errored"): "wait.timed_out",
    ("rollback", "complete"): "rollback.completed",
    ("rollback", "errored"): "rollback.errored",
    ("rollback", "waiting"): "rollback.attempt_failed",
}


_ATTEMPT_FAILED = ("attempt.failed", "rollback.attempt_failed")


def _latest_error(row: StepRow) -> JSONValue:
    attempts = row["attempts"] or []
    return cast("JSONValue", attempts[-1]["error"]) if attempts else None


def _step_event(row: StepRow, now: float) -> HistoryRow:
    kind = _STEP_EVENTS.get((row["type"], row["status"]), f"step.{row['status']}")
    data = {**as_json(step_record(row)), "attempts": len(row["attempts"] or [])}
    if kind in _ATTEMPT_FAILED:
        # The record waits for its retry and has no error of its own: the event says why the
        # attempt failed, which is what someone following the run wants to see.
        data["error"] = _latest_error(row)
    return {
        "instance_pk": row["instance_pk"],
        "ts": now,
        "type": kind,
        "step": row["name"],
        "data": data,
    }


def _final_event(w: RecordWrite) -> HistoryRow:
    final = w.final
    assert final is not None
    # A wait for an event names its type, so that a client can offer to send it.
    waits_for = {"event_type": final.event_type} if final.event_type is not None else {}
    return workflow_event(
        w.claimed.pk,
        w.now,
        final.status,
        output=final.output,
        error=final.error,
        wake_at=final.wake_at,
        **waits_for,
    )


def _log_row(instance_pk: int, line: LogLine) -> HistoryRow:
    return {
        "instance_pk": instance_pk,
        "ts": line["ts"],
        "type": "log",
        "step": line["step"],
        "data": {"message": line["message"]},
    }
