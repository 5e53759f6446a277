"""The composition root: one of everything, wired together.

Here the dispatcher is what a Worker Loader is to dynamic workflows: the engine, which knows
nothing of tenants or code, is handed :meth:`Platform.load_runner`, which finds the tenant's
policy and the exact version of its code, and returns a runner that replays the instance in
that tenant's sandbox with that policy's limits.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from typing import Any

from dispatcher._settings import Settings
from engine import Engine, InstanceRef
from loader import Loader
from sandbox import Artifact, Host, Limits, Outcome, ReplayRequest, SandboxPool
from storage import Clock, Database, GroupCommitter, migrate
from tenants import Policy, TenantStore

_log = logging.getLogger("treadle")


class TenantRunner:
    """One version of one tenant's code, with the limits and vars of the tenant's policy."""

    def __init__(self, pool: SandboxPool, tenant: str, artifact: Artifact, policy: Policy) -> None:
        self._pool = pool
        self._tenant = tenant
        self._artifact = artifact
        self._limits = limits_of(policy)
        self.vars: dict[str, Any] = dict(policy.vars)

    def replay(self, request: ReplayRequest, host: Host) -> Outcome:
        return self._pool.replay(self._tenant, self._artifact, self._limits, request, host)


def limits_of(policy: Policy) -> Limits:
    return Limits(
        memory_mb=policy.memory_mb,
        step_cpu_ms=policy.step_cpu_ms,
        max_step_result_bytes=policy.max_step_result_bytes,
        max_steps_per_instance=policy.max_steps_per_instance,
    )


class Platform:
    """Database, committer, sandbox pool, tenants, loader and engine of one process.

    Opening a platform applies pending migrations (``serve`` and ``worker`` both do); the
    engine starts with :meth:`start`; :meth:`close` releases everything.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or Clock()
        self.db = Database(settings.database_url)
        migrate(self.db, progress)
        self.committer = GroupCommitter(self.db)
        self.pool = SandboxPool(
            max_workers=settings.sandbox_processes, per_tenant=settings.sandbox_per_tenant
        )
        self.tenants = TenantStore(
            self.db,
            self.clock,
            admin_token=settings.admin_token_value(),
            policy_ttl=settings.policy_cache_seconds,
        )
        self.loader = Loader(
            self.db,
            self.pool,
            self.clock,
            sandboxes_of=lambda tenant_id: self.tenants.policy(tenant_id).sandboxes,
            on_delete=lambda tenant_id, name: self.engine.delete_workflow(tenant_id, name),
        )
        self.engine = Engine(
            self.db,
            self.committer,
            load_runner=self.load_runner,
            clock=self.clock,
            owner=_owner(),
            concurrency=settings.workers,
            lease_seconds=settings.lease_seconds,
        )
        self.running = False

    def load_runner(self, ref: InstanceRef) -> TenantRunner:
        policy = self.tenants.policy(ref.tenant_id)
        artifact = self.loader.artifact(ref.tenant_id, ref.workflow, ref.version)
        return TenantRunner(self.pool, self.tenants.name(ref.tenant_id), artifact, policy)

    def start(self) -> None:
        if not self.running:
            self.engine.start()
            self.running = True
            _log.info("engine started: replaying up to %d instances at once", self.settings.workers)

    def stop(self) -> None:
        if self.running:
            self.running = False
            self.engine.stop()
            _log.info("engine stopped")

    def close(self) -> None:
        self.stop()
        self.pool.close()
        self.committer.close()
        self.db.dispose()


def _owner() -> str:
    """A name for this process's leases, unique across machines and restarts."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
