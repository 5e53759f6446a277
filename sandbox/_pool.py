"""The pool of sandbox worker processes, keyed by tenant.

A worker serves one tenant for its whole life. Idle workers of a tenant are reused (most
recently used first, for warm caches); a tenant has at most ``per_tenant`` processes and the
pool at most ``max_workers``; when full, the least recently used idle worker of any tenant is
evicted, and callers otherwise wait for a worker to come back.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from sandbox._backends import SANDBOXES
from sandbox._compile import problem
from sandbox._driver import ReplayDriver
from sandbox._hostcalls import CALL_SECONDS
from sandbox._spawner import Spawner
from sandbox._types import Artifact, Host, Limits, NotReady, Outcome, ReplayRequest
from sandbox._wall import Wall
from sandbox._worker import Worker, WorkerGone
from sandbox.wasm._background import RuntimeBuild, process_build
from sandbox.wasm._build import prepare
from treadle.runtime import CodeInvalid

# A worker's memory fragments and its caches grow; a fresh fork is cheap.
_MAX_REPLAYS_PER_WORKER = 5000


class SandboxPool:
    """Runs tenant workflow code in sandbox worker processes. Thread-safe."""

    def __init__(
        self,
        *,
        max_workers: int = 16,
        per_tenant: int = 4,
        idle_seconds: float = 300.0,
        acquire_timeout: float = 60.0,
        call_seconds: float = CALL_SECONDS,
        wall: Wall | None = None,
        wasm_build: RuntimeBuild | None = None,
    ) -> None:
        if max_workers < 1 or per_tenant < 1:
            raise ValueError("max_workers and per_tenant must be at least 1")
        self._wall = wall or Wall()
        self._layers: dict[str, bool] | None = None  # as the latest zygote reported them
        self._max_workers = max_workers
        self._per_tenant = per_tenant
        self._call_seconds = call_seconds  # the platform's deadline of one host call
        self._idle_seconds = idle_seconds
        self._acquire_timeout = acquire_timeout
        self._lock = threading.Condition()
        self._idle: OrderedDict[int, Worker] = OrderedDict()  # least recently used first
        self._counts: dict[str, int] = {}
        self._total = 0
        self._live: dict[int, Worker] = {}  # every started worker, idle or busy
        self._spawner: Spawner | None = None
        self._spawner_lock = threading.Lock()
        self._closed = threading.Event()
        self._reaper = threading.Thread(target=self._reap_idle, name="treadle-sandbox-reaper")
        self._reaper.daemon = True
        self._reaper.start()
        # The first start on a machine builds the Python-in-Wasm runtime (once, cached), in the
        # background: wasm uploads and replays are told to come back meanwhile (NotReady).
        self.wasm_build = wasm_build or process_build()
        self.wasm_build.start()

    def validate(
        self,
        tenant: str,
        artifact: Artifact,
        limits: Limits | None = None,
        *,
        timeout: float | None = None,
    ) -> str:
        """Check ``artifact`` in a sandbox process; return the entry class name.

        Raises :class:`~treadle.runtime.CodeInvalid` listing every problem found, or saying that
        the module did not finish loading within ``timeout`` seconds (its worker is killed).
        Without ``limits`` any idle worker of the tenant does, or a new one with default limits.

        A validation never waits for a worker: when the tenant (or the pool) has none to spare,
        it runs in a worker of its own, outside ``per_tenant`` and ``max_workers``, stopped
        afterwards. Callers bound how many validations run at once. Nor does it wait for the
        Python-in-Wasm runtime: :class:`~sandbox.NotReady` while it builds or after it failed.

        A worker that died before it took the request (while idle, say) is not the code's
        fault: the check runs again in another worker, once; after that, ``WorkerGone``.
        """
        if artifact.sandbox not in SANDBOXES:
            available = ", ".join(SANDBOXES)
            message = f"sandbox {artifact.sandbox!r} is not available (available: {available})"
            raise CodeInvalid(message, problems=[problem(1, 1, message)])
        try:
            limits = prepare(artifact, limits, self.wasm_build.require, timeout)
        except NotReady:
            raise  # not the code's fault: the upload is answered "come back in N s"
        except RuntimeError as exc:
            raise CodeInvalid(str(exc), problems=[problem(1, 1, str(exc)[:1000])]) from None
        for tries_left in (1, 0):
            try:
                return self._validate_in_a_worker(tenant, artifact, limits, timeout)
            except WorkerGone:
                if not tries_left:
                    raise
        raise AssertionError("unreachable")

    def _validate_in_a_worker(
        self, tenant: str, artifact: Artifact, limits: Limits | None, timeout: float | None
    ) -> str:
        try:
            worker = self._acquire(tenant, limits, wait=0.0)
        except TimeoutError:
            # Every worker the tenant may have is replaying: checking an upload must not wait
            # for its instances (a step body may hold one for minutes).
            spare = Worker(self._running_spawner(), tenant, limits or Limits())
            try:
                return spare.validate(artifact, timeout)
            finally:
                spare.close()
        try:
            return worker.validate(artifact, timeout)
        finally:
            self._release(worker)

    def replay(
        self,
        tenant: str,
        artifact: Artifact,
        limits: Limits,
        request: ReplayRequest,
        host: Host,
    ) -> Outcome:
        """Replay one instance in one of ``tenant``'s workers; see ``docs/sandbox.md``.

        Raises :class:`~sandbox.NotReady` at once, before anything runs, while the
        Python-in-Wasm runtime that a ``wasm`` artifact needs is being built, or after its
        build failed."""
        if artifact.sandbox not in SANDBOXES:
            raise ValueError(f"sandbox {artifact.sandbox!r} is not available")
        asked = time.monotonic()
        limits = prepare(artifact, limits, self.wasm_build.require) or limits
        for tries_left in (1, 0):
            with self._worker(tenant, limits) as worker:
                worker.sandbox = artifact.sandbox
                # ``request.now`` was read when the replay was asked for: the wait for a worker
                # must not leave the replay's clock behind (a sleep would end early by as much).
                waited = time.monotonic() - asked
                started = dataclasses.replace(request, now=request.now + waited)
                try:
                    outcome = ReplayDriver(worker, started, host, self._call_seconds).run(artifact)
                except WorkerGone:
                    # It died before it took the request (while idle, or just after it was
                    # handed out): nothing ran, another worker may take it.
                    if tries_left:
                        continue
                    raise
                worker.replays += 1
                return outcome
        raise AssertionError("unreachable")

    def workers(self) -> dict[str, int]:
        """The worker processes running now, by the sandbox of the replay each ran last
        (``"none"``: none yet)."""
        with self._lock:
            live = list(self._live.values())
        counts: dict[str, int] = {}
        for worker in live:
            counts[worker.sandbox] = counts.get(worker.sandbox, 0) + 1
        return counts

    def wall_layers(self, *, start: bool = True) -> dict[str, bool] | None:
        """Which layers of the second wall confine the workers (``sandbox._wall``), as the
        latest zygote reported them; None if none started yet. With ``start``, starts the
        zygote if none runs, and raises ``RuntimeError`` if it cannot start, or if the wall is
        required and a layer is off."""
        if start:
            self._running_spawner()
        return None if self._layers is None else dict(self._layers)

    def close(self) -> None:
        """Stop every worker and the zygote. Replays still running fail."""
        with self._lock:
            self._closed.set()
            idle = list(self._idle.values())
            self._idle.clear()
            self._lock.notify_all()
        for worker in idle:
            self._forget(worker)
        with self._spawner_lock:
            if self._spawner is not None:
                self._spawner.close()
                self._spawner = None

    # -- leasing workers ------------------------------------------------------------------------

    @contextmanager
    def _worker(self, tenant: str, limits: Limits | None) -> Iterator[Worker]:
        worker = self._acquire(tenant, limits)
        try:
            yield worker
        finally:
            self._release(worker)

    def _acquire(self, tenant: str, limits: Limits | None, wait: float | None = None) -> Worker:
        """An idle worker of ``tenant`` (with ``limits``, if given), or a new one; raises
        TimeoutError when none comes free within ``wait`` (by default ``acquire_timeout``)."""
        deadline = time.monotonic() + (self._acquire_timeout if wait is None else wait)
        retired: list[Worker] = []
        with self._lock:
            while True:
                if self._closed.is_set():
                    raise RuntimeError("the sandbox pool is closed")
                worker = self._take_idle(tenant, limits, retired)
                if worker is not None:
                    break
                if self._make_room(tenant, retired):
                    self._counts[tenant] = self._counts.get(tenant, 0) + 1
                    self._total += 1
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"no sandbox worker for tenant {tenant!r} became free within "
                        f"{self._acquire_timeout:g} s (max_workers={self._max_workers}, "
                        f"per_tenant={self._per_tenant})"
                    )
                self._lock.wait(remaining)
        for old in retired:
            old.close()
        if worker is None:
            return self._spawn(tenant, limits or Limits())
        return worker

    def _take_idle(
        self, tenant: str, limits: Limits | None, retired: list[Worker]
    ) -> Worker | None:
        for key in reversed(self._idle):
            worker = self._idle[key]
            if worker.tenant == tenant and (limits is None or worker.limits == limits):
                del self._idle[key]
                if worker.idle_and_alive():
                    return worker
                # It died while idle (killed, or its zygote went away): not the tenant's fault.
                self._uncount(worker)
                retired.append(worker)
        return None

    def _make_room(self, tenant: str, retired: list[Worker]) -> bool:
        """Free a slot for a new worker of ``tenant`` if possible (caller holds the lock)."""
        if self._counts.get(tenant, 0) >= self._per_tenant:
            # The tenant's own idle workers here all have other limits: recycle one.
            victim = next((w for w in self._idle.values() if w.tenant == tenant), None)
        elif self._total >= self._max_workers:
            victim = next(iter(self._idle.values()), None)
        else:
            return True
        if victim is None:
            return False
        del self._idle[id(victim)]
        self._uncount(victim)
        retired.append(victim)
        return True

    def _spawn(self, tenant: str, limits: Limits) -> Worker:
        try:
            worker = Worker(self._running_spawner(), tenant, limits)
            with self._lock:
                self._live[id(worker)] = worker
            return worker
        except BaseException:
            with self._lock:
                self._counts[tenant] -= 1
                self._total -= 1
                self._lock.notify_all()
            raise

    def _running_spawner(self) -> Spawner:
        with self._spawner_lock:
            if self._spawner is None or not self._spawner.alive:
                if self._spawner is not None:
                    self._spawner.close()
                self._spawner = Spawner(self._wall)
                self._layers = self._spawner.wall
            return self._spawner

    def _release(self, worker: Worker) -> None:
        worker.last_used = time.monotonic()
        keep = worker.usable and worker.replays < _MAX_REPLAYS_PER_WORKER
        with self._lock:
            if keep and not self._closed.is_set():
                self._idle[id(worker)] = worker
            else:
                self._uncount(worker)
                keep = False
            self._lock.notify_all()
        if not keep:
            worker.close()

    def _uncount(self, worker: Worker) -> None:
        self._live.pop(id(worker), None)
        self._counts[worker.tenant] -= 1
        if not self._counts[worker.tenant]:
            del self._counts[worker.tenant]
        self._total -= 1

    def _forget(self, worker: Worker) -> None:
        with self._lock:
            self._uncount(worker)
        worker.close()

    def _reap_idle(self) -> None:
        interval = max(0.05, min(self._idle_seconds / 2, 30.0))
        while not self._closed.wait(interval):
            cutoff = time.monotonic() - self._idle_seconds
            with self._lock:
                stale = [w for w in self._idle.values() if w.last_used < cutoff]
                for worker in stale:
                    del self._idle[id(worker)]
                    self._uncount(worker)
                if stale:
                    self._lock.notify_all()
            for worker in stale:
                worker.close()
