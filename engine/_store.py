"""The engine's stores behind one object, as the scheduler, the commits and the API use them.

The SQL lives with its concern: claims, leases and the heartbeat in ``engine._claims``;
creates, events and deletions in ``engine._instances``; reads in ``engine._reads``; the
statements of a step commit, fenced by the lease epoch, in ``engine._fencing``; row shapes in
``engine._rows``. Writes are returned as functions of a connection so that the group
committer can run many of them, from many instances, in one transaction.
"""

from __future__ import annotations

from engine import _fencing
from engine._claims import Claim, Claimed, Claims
from engine._fencing import LeaseLost, PauseRequested
from engine._instances import Created, CreateWrite, InstanceWrites
from engine._quotas import QuotaStore
from engine._reads import Journal, Page, Reads
from engine._rows import (
    WAKE_CHANNEL,
    E,
    Final,
    H,
    I,
    S,
    T,
    Write,
    instance_key,
    lock_row,
    not_found,
    step_record,
    storage_full,
    workflow_event,
)
from engine._usage import UsageLedger
from storage import Database

__all__ = [
    "WAKE_CHANNEL",
    "Claim",
    "Claimed",
    "CreateWrite",
    "Created",
    "E",
    "EngineStore",
    "Final",
    "H",
    "I",
    "Journal",
    "LeaseLost",
    "Page",
    "PauseRequested",
    "S",
    "T",
    "Write",
    "instance_key",
    "lock_row",
    "not_found",
    "step_record",
    "storage_full",
    "workflow_event",
]


class EngineStore:
    """Claims (:class:`Claims`), creates and events (:class:`InstanceWrites`) and reads
    (:class:`Reads`) on one database, with its quotas and storage ledger; each verb is the one
    of the store that implements it. The statements of step commits are its attributes."""

    pause = _fencing.PAUSE
    child_done = _fencing.CHILD_DONE
    wake_parent = _fencing.WAKE_PARENT
    end = _fencing.END
    suspend = _fencing.SUSPEND
    consume = _fencing.CONSUME

    def __init__(self, db: Database) -> None:
        self.db = db
        self.quotas = QuotaStore(db.dialect)
        self.usage = UsageLedger()
        self.upsert_step = _fencing.UPSERT_STEP[db.dialect]
        self.claims = Claims(db)
        self.writes = InstanceWrites(db, self.quotas, self.usage)
        self.reads = Reads(db)
        claims, writes, reads = self.claims, self.writes, self.reads
        self.claim, self.next_due_by_tenant = claims.claim, claims.next_due_by_tenant
        self.release, self.recover_all = claims.release, claims.recover_all
        self.heartbeat, self.still_held = claims.heartbeat, claims.still_held
        self.create, self.send_event = writes.create, writes.send_event
        self.delete_workflow = writes.delete_workflow
        self.journals, self.instance, self.steps = reads.journals, reads.instance, reads.steps
        self.instances, self.logs, self.parent_of = reads.instances, reads.logs, reads.parent_of
        self.history, self.instance_history = reads.history, reads.instance_history
        self.watched_history = reads.watched_history
        self.counts = reads.counts
        self.stalled, self.stalled_count = reads.stalled, reads.stalled_count
        self.event_time = reads.event_time
