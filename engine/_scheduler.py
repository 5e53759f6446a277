"""Claim due instances in batches and replay them on a pool of runner threads.

One claimer thread takes as many due instances as there are idle runners, in one transaction,
shared round-robin between the tenants with due work and within each tenant's cap of running
instances, each tenant's oldest due first; runner threads replay them; a heartbeat thread
extends the leases of everything held. The claimer sleeps until the next due time, a local
wake-up (a create, an event, a finished replay) or, on PostgreSQL, a NOTIFY from another
process, which the process's database session (``engine._presence``) receives.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from engine._presence import Presence
from engine._replay import Counters, InstanceRef, LoadRunner, ReplayHost, request_for
from engine._store import Claimed, EngineStore, Journal, LeaseLost, PauseRequested
from storage import Clock, GroupCommitter, unreachable
from treadle.errors import NotFound

_log = logging.getLogger("treadle.engine")
_RETRY_AFTER_FAILURE = 5.0


class Scheduler:
    def __init__(
        self,
        store: EngineStore,
        committer: GroupCommitter,
        load_runner: LoadRunner,
        clock: Clock,
        *,
        owner: str,
        running_cap: Callable[[int], int],
        concurrency: int,
        lease_seconds: float,
        poll_seconds: float,
    ) -> None:
        self._store = store
        self._committer = committer
        self._load_runner = load_runner
        self._clock = clock
        self._owner = owner
        self._running_cap = running_cap
        self._next_due: float | None = None
        self._concurrency = concurrency
        self._lease = lease_seconds
        self._poll = poll_seconds
        self.counters = Counters()
        self._work: queue.SimpleQueue[tuple[Claimed, Journal] | None] = queue.SimpleQueue()
        self._held: dict[int, Claimed] = {}
        self._held_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._orphans: list[Claimed] = []
        self._outage = Outage()

    def start(self) -> None:
        targets: list[tuple[str, Any]] = [("claimer", self._claim_loop), ("heartbeat", self._beat)]
        targets += [(f"runner-{i}", self._run_loop) for i in range(self._concurrency)]
        if self._store.db.dialect == "postgresql":
            presence = Presence(
                self._store.db, self._clock, self._owner, wake=self.wake, stop=self._stop
            )
            targets.append(("session", presence.run))
        for name, target in targets:
            thread = threading.Thread(target=target, name=f"treadle-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        for _ in range(self._concurrency):
            self._work.put(None)
        for thread in self._threads:
            thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    # -- claiming -------------------------------------------------------------------------------

    def _claim_loop(self) -> None:
        while not self._stop.is_set():
            try:
                progressed = self._claim_batch()
            except Exception as exc:
                self._outage.failed("claiming instances", exc)
                self._stop.wait(1.0)
                continue
            self._outage.recovered("claiming instances")
            if not progressed:
                self._idle()

    def _claim_batch(self) -> bool:
        """Claim for every idle runner; False when nothing was due."""
        with self._held_lock:
            free = self._concurrency - len(self._held)
        if free <= 0:
            # Every runner is busy: a finishing replay sets the wake-up.
            self._wake.wait(self._poll)
            self._wake.clear()
            return True
        now = self._clock.now()
        due = self._store.next_due_by_tenant()
        caps = {t: self._running_cap(t) for t, at in due.items() if at <= now}
        if not caps:
            self._next_due = min(due.values(), default=None)
            return False
        claim = self._store.claim(self._owner, now, now + self._lease, free, due, caps)
        result = self._committer.run(claim)
        claimed, self._next_due = result.claimed, result.next_due
        if claimed:
            journals = self._store.journals([c.pk for c in claimed])
            with self._held_lock:
                self._held.update((c.pk, c) for c in claimed)
            for c in claimed:
                self._work.put((c, journals[c.pk]))
        return bool(claimed)

    def _idle(self) -> None:
        # Tenants at their cap are not waited for: a replay ending here sets the wake-up, one
        # ending in another process is seen at the next poll.
        next_due = self._next_due
        delay = self._poll if next_due is None else next_due - self._clock.now()
        self._wake.wait(min(self._poll, max(delay, 0.01)))
        self._wake.clear()

    def _beat(self) -> None:
        # Instances whose release failed are given back within a second of the database
        # answering again.
        while not self._stop.wait(min(self._lease / 3, 1.0) if self._orphans else self._lease / 3):
            with self._held_lock:
                held = list(self._held.values())
            try:
                self._store.heartbeat(held, self._clock.now() + self._lease)
                self._release_orphans()
            except Exception as exc:
                self._outage.failed("lease heartbeat", exc)
            else:
                self._outage.recovered("lease heartbeat")

    def _release_orphans(self) -> None:
        """Give back the instances whose release failed (the database was unreachable), so
        that they do not wait out their lease."""
        while self._orphans:
            claimed = self._orphans[0]
            self._committer.run(self._store.release(claimed, self._clock.now()))
            self._orphans.pop(0)

    # -- replaying ------------------------------------------------------------------------------

    def _run_loop(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            claimed, journal = item
            try:
                self._replay(claimed, journal)
            except PauseRequested:
                _log.info("instance %s paused after its running step", claimed.id)
            except LeaseLost:
                # Terminated, restarted or deleted meanwhile, or taken over after a stall.
                _log.info("instance %s changed hands; its replay was dropped", claimed.id)
            except Exception as exc:
                if unreachable(exc):
                    self._outage.failed(f"replaying instance {claimed.id}", exc)
                else:
                    _log.exception("replay of instance %s failed; it will be retried", claimed.id)
                self._release(claimed)
            finally:
                with self._held_lock:
                    self._held.pop(claimed.pk, None)
                self._wake.set()

    def _replay(self, claimed: Claimed, journal: Journal) -> None:
        ref = InstanceRef(
            claimed.pk, claimed.tenant_id, claimed.workflow, claimed.version, claimed.id
        )
        host = ReplayHost(
            self._store, self._committer, self._clock, claimed, journal, self._lease, self.counters
        )
        try:
            runner = self._load_runner(ref)
        except NotFound as exc:
            # The code of this version is gone (its workflow was deleted): retrying cannot help.
            host.fail("WorkflowNotFound", exc.message)
            return
        request = request_for(claimed, journal, self._clock.now(), runner.vars)
        outcome = runner.replay(request, host)
        host.finish(outcome)
        self.counters.replays += 1

    def _release(self, claimed: Claimed) -> None:
        try:
            retry_at = self._clock.now() + _RETRY_AFTER_FAILURE
            self._committer.run(self._store.release(claimed, retry_at))
        except Exception as exc:
            self._outage.failed("releasing an instance", exc)
            self._orphans.append(claimed)  # the heartbeat tries again


class Outage:
    """Logs a failing activity once, with a traceback only when the failure is not the
    database being unreachable, and once more when it works again: an outage of the database
    is a few lines in the log, not a traceback a second."""

    def __init__(self) -> None:
        self._failing: set[str] = set()
        self._lock = threading.Lock()

    def failed(self, activity: str, exc: Exception) -> None:
        with self._lock:
            first = activity not in self._failing
            self._failing.add(activity)
        if unreachable(exc):
            if first:
                _log.warning("%s failed: the database is unreachable; retrying", activity)
        else:
            _log.error("%s failed; retrying", activity, exc_info=exc)

    def recovered(self, activity: str) -> None:
        with self._lock:
            if activity not in self._failing:
                return
            self._failing.discard(activity)
        _log.info("%s works again", activity)
