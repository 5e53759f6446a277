"""Claim due instances in batches and replay them on a pool of runner threads.

One claimer thread takes as many due instances as there are idle runners, in one transaction,
shared round-robin between the tenants with due work and within each tenant's cap of running
instances, each tenant's oldest due first; runner threads replay them; a heartbeat thread
extends the leases of everything held, and stops at once a replay whose instance was
terminated, restarted or deleted meanwhile (by this process or another: it looks twice a
second, and at once when this process changed an instance). The claimer sleeps until the next
due time, a local wake-up (a create, an event, a finished replay) or, on PostgreSQL, a NOTIFY
from another process, which the process's database session (``engine._presence``) receives.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from engine._budget import StorageExhausted
from engine._claims import Claimed
from engine._fencing import LeaseLost, PauseRequested
from engine._logcontext import logging_for
from engine._observe import Observer, Woken
from engine._presence import Presence
from engine._reads import Journal
from engine._replay import Counters, InstanceRef, LoadRunner, ReplayHost, Stopping, request_for
from engine._store import EngineStore
from sandbox import NotReady
from storage import Clock, GroupCommitter, reason, transient, unreachable
from treadle.errors import NotFound

_log = logging.getLogger("treadle.engine")
_RETRY_AFTER_FAILURE = 5.0
# A run whose sandbox is not ready (the Python-in-Wasm runtime building) is tried again this
# often, so it starts within seconds of the build's end; after a failed build, once a minute.
_RETRY_WHILE_BUILDING = 5.0
_RETRY_WITHOUT_SANDBOX = 60.0
# How often the heartbeat looks for replays to stop, and how long a replay runs before it is
# looked at (most end sooner, and their commits find out anyway).
_WATCH_SECONDS = 0.5


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
        per_tenant: int | None = None,
        shutdown_grace_seconds: float = 10.0,
        observer: Observer | None = None,
        tenant_name: Callable[[int], str] = str,
    ) -> None:
        self._store = store
        self._tenant_name = tenant_name  # for log lines
        self._observer = observer or Observer()
        self._committer = committer
        self._load_runner = load_runner
        self._clock = clock
        self._owner = owner
        self._running_cap = running_cap
        self._next_due: float | None = None
        self._concurrency = concurrency
        self._lease = lease_seconds
        self._poll = poll_seconds
        self._grace = shutdown_grace_seconds
        self._per_tenant = per_tenant or concurrency
        self.counters = Counters()
        self._work: queue.SimpleQueue[tuple[Claimed, Journal] | None] = queue.SimpleQueue()
        self._held: dict[int, Claimed] = {}
        self._held_lock = threading.Lock()
        self._replays: dict[int, tuple[Claimed, ReplayHost, float]] = {}  # under _held_lock
        self._look = threading.Event()  # look for replays to stop now
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
        """Stop claiming; give the replays in progress ``shutdown_grace_seconds`` to end, then
        stop them (their instances are given back) and wait for the threads."""
        self._stop.set()
        self._wake.set()
        for _ in range(self._concurrency):
            self._work.put(None)
        until = time.monotonic() + self._grace
        while self._replays and time.monotonic() < until:
            time.sleep(0.05)
        with self._held_lock:
            running = [host for _, host, _ in self._replays.values()]
        for host in running:
            host.stop(Stopping())
        for thread in self._threads:
            thread.join(timeout)

    def look(self) -> None:
        """An instance changed here: stop its replay now if it was running, not in a while."""
        self._look.set()

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
        with self._held_lock:
            busy = collections.Counter(c.tenant_id for c in self._held.values())
        # A tenant holds at most per_tenant of this process's runners (as many as it may have
        # sandbox workers): its instances stuck in slow steps cannot take the others' runners.
        due = {t: at for t, at in self._store.next_due_by_tenant().items()
               if busy[t] < self._per_tenant}  # fmt: skip
        caps = {t: self._running_cap(t) for t, at in due.items() if at <= now}
        if not caps:
            self._next_due = min(due.values(), default=None)
            return False
        room = {t: self._per_tenant - busy[t] for t in caps}
        claim = self._store.claim(self._owner, now, now + self._lease, free, due, caps, room)
        # Not queued behind step commits: on PostgreSQL a claim runs on this thread.
        result = self._committer.run_alone(claim)
        claimed, self._next_due = result.claimed, result.next_due
        if claimed:
            journals = result.journals
            if journals is None:
                journals = self._store.journals([c.pk for c in claimed])
            with self._held_lock:
                self._held.update((c.pk, c) for c in claimed)
            for c in claimed:
                self._work.put((c, journals[c.pk]))
            self._observer.claimed(
                [Woken(c.tenant_id, max(0.0, now - c.due_at), c.was == "waiting")
                 for c in claimed if c.due_at is not None]
            )  # fmt: skip
        return bool(claimed)

    def _idle(self) -> None:
        # Tenants at their cap are not waited for: a replay ending here sets the wake-up, one
        # ending in another process is seen at the next poll.
        next_due = self._next_due
        delay = self._poll if next_due is None else next_due - self._clock.now()
        self._wake.wait(min(self._poll, max(delay, 0.01)))
        self._wake.clear()

    def _beat(self) -> None:
        renew_at = 0.0
        while not self._stop.is_set():
            self._look.wait(_WATCH_SECONDS)
            looked_now = self._look.is_set()
            self._look.clear()
            try:
                self._stop_lost_replays(everyone=looked_now)
                # Instances whose release failed are given back within a second of the
                # database answering again.
                if time.monotonic() >= renew_at or self._orphans:
                    renew_at = time.monotonic() + self._lease / 3
                    with self._held_lock:
                        held = list(self._held.values())
                    self._store.heartbeat(held, self._clock.now() + self._lease)
                    self._release_orphans()
            except Exception as exc:
                self._outage.failed("lease heartbeat", exc)
            else:
                self._outage.recovered("lease heartbeat")

    def _stop_lost_replays(self, *, everyone: bool) -> None:
        """Stop the replays whose instance is no longer theirs: its step body is killed and its
        host calls are cut short, rather than running on until its next commit."""
        started_before = time.monotonic() - (0.0 if everyone else _WATCH_SECONDS)
        with self._held_lock:
            running = [(c, h) for c, h, at in self._replays.values() if at <= started_before]
        if not running:
            return
        still = self._store.still_held(c for c, _ in running)
        for claimed, host in running:
            if claimed.pk not in still:
                host.stop(LeaseLost())

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
            tenant = self._tenant_name(claimed.tenant_id)
            with logging_for(tenant=tenant, instance_id=claimed.id, trace_id=claimed.trace_id):
                self._run_one(claimed, journal)

    def _run_one(self, claimed: Claimed, journal: Journal) -> None:
        try:
            if self._stop.is_set():
                raise Stopping()  # claimed just before the stop: not started
            self._replay(claimed, journal)
        except PauseRequested:
            _log.info("instance %s paused after its running step", claimed.id)
        except StorageExhausted:
            _log.info("instance %s errored: its tenant's storage is used up", claimed.id)
        except LeaseLost:
            # Terminated, restarted or deleted meanwhile, or taken over after a stall.
            _log.info("instance %s changed hands; its replay was dropped", claimed.id)
        except Stopping:
            _log.info("instance %s given back: the process is stopping", claimed.id)
            self._release(claimed, at_once=True)
        except NotReady as exc:
            # Nothing ran: the run waits, holding no runner, instead of failing.
            _log.info("instance %s waits for its sandbox: %s", claimed.id, exc)
            self._release(claimed, after=_not_ready_delay(exc))
        except Exception as exc:
            if transient(exc):
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
            claimed.pk, claimed.tenant_id, claimed.workflow, claimed.version, claimed.id,
            claimed.trace,
        )  # fmt: skip
        host = ReplayHost(
            self._store,
            self._committer,
            self._clock,
            claimed,
            journal,
            self._lease,
            self.counters,
            self._observer,
        )
        try:
            runner = self._load_runner(ref)
        except NotFound as exc:
            # The code of this version is gone (its workflow was deleted): retrying cannot help.
            host.fail("WorkflowNotFound", exc.message)
            return
        request = request_for(claimed, journal, self._clock.now(), runner.vars)
        began = time.monotonic()
        with self._held_lock:
            self._replays[claimed.pk] = (claimed, host, began)
        try:
            outcome = runner.replay(request, host)
        finally:
            with self._held_lock:
                self._replays.pop(claimed.pk, None)
            self._observer.replayed(runner.sandbox, time.monotonic() - began)
        host.finish(outcome)
        self.counters.replays += 1

    def _release(
        self, claimed: Claimed, *, at_once: bool = False, after: float = _RETRY_AFTER_FAILURE
    ) -> None:
        try:
            retry_at = self._clock.now() + (0.0 if at_once else after)
            self._committer.run(self._store.release(claimed, retry_at))
        except Exception as exc:
            self._outage.failed("releasing an instance", exc)
            self._orphans.append(claimed)  # the heartbeat tries again


def _not_ready_delay(exc: NotReady) -> float:
    if exc.seconds_left is None:
        return _RETRY_WITHOUT_SANDBOX
    return min(exc.seconds_left, _RETRY_WHILE_BUILDING)


class Outage:
    """Logs a failing activity once, with a traceback only when the failure is not
    :func:`storage.transient` (the database unreachable, descriptors used up), and once more
    when it works again: an outage of the database is a few lines in the log, not a traceback
    a second."""

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
        elif transient(exc):
            if first:
                _log.warning("%s failed (%s); retrying", activity, reason(exc))
        else:
            _log.error("%s failed; retrying", activity, exc_info=exc)

    def recovered(self, activity: str) -> None:
        with self._lock:
            if activity not in self._failing:
                return
            self._failing.discard(activity)
        _log.info("%s works again", activity)
