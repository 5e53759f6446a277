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
import threading
import uuid
from collections.abc import Callable

from dispatcher import _egress as egress
from dispatcher import _tracing as tracing
from dispatcher._metrics import PlatformMetrics
from dispatcher._settings import Settings
from engine import (
    Engine,
    InstanceRef,
    Minted,
    Observers,
    Quota,
    Recorder,
    StorageLimits,
    Usage,
)
from loader import Loader, UploadLimits
from sandbox import (
    NOTHING_SPENT,
    Artifact,
    Deadline,
    Limits,
    Outcome,
    ReplayRequest,
    RuntimeBuild,
    SandboxPool,
    Spent,
    Wall,
)
from storage import Clock, Database, GroupCommitter, iso, migrate
from tenants import Policy, TenantStore
from treadle.errors import (
    AlreadyExists,
    InvalidInput,
    LimitExceeded,
    NonRetryableError,
    NotFound,
    Unavailable,
)
from treadle.runtime import JSONObject, LogLine, StepRecord

_log = logging.getLogger("treadle")


class TenantRunner:
    """One version of one tenant's code, with the limits and vars of the tenant's policy."""

    def __init__(
        self, platform: Platform, ref: InstanceRef, artifact: Artifact, policy: Policy
    ) -> None:
        self._platform = platform
        self._ref = ref
        self._tenant = platform.tenants.name(ref.tenant_id)
        self._artifact = artifact
        self._policy = policy
        self._limits = limits_of(policy)
        self.vars: JSONObject = dict(policy.vars)
        self.sandbox = artifact.sandbox

    def replay(self, request: ReplayRequest, host: Recorder) -> Outcome:
        tenant_host = TenantHost(self._platform, self._ref, self._policy, host)
        return self._platform.pool.replay(
            self._tenant, self._artifact, self._limits, request, tenant_host
        )


class TenantHost:
    """The engine's host plus the bindings a tenant's code may call: egress and children."""

    def __init__(
        self, platform: Platform, ref: InstanceRef, policy: Policy, host: Recorder
    ) -> None:
        self._platform = platform
        self._ref = ref
        self._policy = policy
        self._host = host

    def commit(
        self,
        records: list[StepRecord],
        logs: list[LogLine],
        *,
        running: bool = False,
        spent: Spent = NOTHING_SPENT,
    ) -> None:
        self._host.commit(records, logs, running=running, spent=spent)

    def on_stop(self, stop: Callable[[BaseException], None]) -> None:
        self._host.on_stop(stop)

    def call(self, method: str, args: JSONObject, deadline: Deadline) -> object:
        try:
            if method == "fetch":
                return self._fetch(args, deadline)
            if method == "workflows.create":
                return {"id": self._create_child(args)}
            if method == "links.create":
                return self._create_link(args)
            raise InvalidInput(f"unknown host call {method!r}")
        except (InvalidInput, LimitExceeded, NotFound, AlreadyExists) as exc:
            # Bad arguments, a missing workflow, an id taken: the same on every retry.
            raise NonRetryableError(exc.message) from exc

    def _fetch(self, args: JSONObject, deadline: Deadline) -> object:
        allow, http = list(self._policy.egress_allow), self._platform.http
        tracing, run = self._platform.tracing, self._ref.trace
        if tracing is None or run is None:
            return egress.fetch(args, allow, http, deadline=deadline, metered=self._egress)
        method, url = str(args.get("method") or "GET").upper(), str(args.get("url"))
        with tracing.fetch(run, method, url) as headers:
            return egress.fetch(
                args, allow, http, deadline=deadline, metered=self._egress, extra_headers=headers
            )

    def _egress(self, size: int) -> None:
        self._host.meter(Usage(egress_requests=1, egress_bytes=size))

    def _create_child(self, args: JSONObject) -> str:
        workflow, instance_id = args.get("workflow"), args.get("id")
        if not isinstance(workflow, str) or not isinstance(instance_id, str):
            raise InvalidInput("env.workflows.create needs a workflow name and an instance id")
        tenant_id = self._ref.tenant_id
        version = self._platform.loader.current(tenant_id, workflow)
        return self._platform.engine.create_child(
            tenant_id, workflow, version, instance_id, args.get("params"), self._ref.pk
        )

    def _create_link(self, args: JSONObject) -> JSONObject:
        """``step.approval_link``: a link to this instance, keyed by the step that mints it."""
        step, event_type = args.get("step"), args.get("type")
        ttl, uses = args.get("ttl"), args.get("uses")
        if not isinstance(step, str) or not isinstance(event_type, str):
            raise InvalidInput("approval_link needs a step key and an event type")
        if not isinstance(ttl, float | int) or not isinstance(uses, int):
            raise InvalidInput("approval_link needs a ttl and a number of uses")
        ref = self._ref
        minted = self._platform.engine.links.mint(
            ref.tenant_id, ref.workflow, ref.id, event_type, float(ttl), uses, step_key=step
        )
        return link_answer(self._platform.settings.link_base(), minted)


def link_answer(base: str, minted: Minted) -> JSONObject:
    """What minting a link answers: its absolute ``url`` and ``expires_at`` (ISO 8601)."""
    return {"url": f"{base}/v1/links/{minted.token}", "expires_at": iso(minted.expires_at)}


def limits_of(policy: Policy) -> Limits:
    return Limits(
        memory_mb=policy.memory_mb,
        step_cpu_ms=policy.step_cpu_ms,
        max_step_result_bytes=policy.max_step_result_bytes,
        max_steps_per_instance=policy.max_steps_per_instance,
    )


def quota_of(policy: Policy) -> Quota:
    """What a create of the tenant is admitted under (a schedule's fires too)."""
    max_storage = policy.max_storage_mb * 1024 * 1024
    return Quota(policy.creates_per_second, policy.max_queued_instances, max_storage)


def storage_limits(policy: Policy) -> StorageLimits:
    return StorageLimits(policy.max_storage_mb * 1024 * 1024, policy.max_log_bytes_per_instance)


class Platform:
    """Database, committer, sandbox pool, tenants, loader and engine of one process.

    Opening a platform applies pending migrations (``serve`` and ``worker`` both do) and
    starts building the Python-in-Wasm runtime in the background if this machine has not built
    it yet (``wasm_build``: the process's, unless given); the engine starts with :meth:`start`;
    :meth:`close` releases everything.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        progress: Callable[[str], None] | None = None,
        wasm_build: RuntimeBuild | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or Clock()
        self.db = Database(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=0,
            pool_timeout=settings.db_pool_timeout,
        )
        migrate(self.db, progress)
        self.committer = GroupCommitter(self.db)
        self.pool = SandboxPool(
            max_workers=settings.sandbox_processes,
            per_tenant=settings.sandbox_per_tenant,
            call_seconds=settings.host_call_seconds,
            wall=Wall(
                uid_base=settings.sandbox_uid_base,
                uid_count=settings.sandbox_uid_count,
                required=settings.sandbox_wall_required,
            ),
            wasm_build=wasm_build,
        )
        # At start-up, not at the first replay: a layer that is off is said now (or refused).
        self._start_sandbox()
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
            uploads=_upload_limits(settings),
        )
        self.metrics = PlatformMetrics(self.tenants.name)
        self.tracing = tracing.from_environment(self.metrics.tenant)
        observer = self.metrics if self.tracing is None else Observers(self.metrics, self.tracing)
        self.engine = Engine(
            self.db,
            self.committer,
            load_runner=self.load_runner,
            clock=self.clock,
            owner=_owner(),
            running_cap=lambda tenant_id: self.tenants.policy(tenant_id).max_running_instances,
            storage=lambda tenant_id: storage_limits(self.tenants.policy(tenant_id)),
            concurrency=settings.workers,
            per_tenant=settings.sandbox_per_tenant,
            lease_seconds=settings.lease_seconds,
            shutdown_grace_seconds=settings.shutdown_grace_seconds,
            observer=observer,
            tenant_name=self.metrics.tenant,
            quota=lambda tenant_id: quota_of(self.tenants.policy(tenant_id)),
        )
        self.metrics.attach(self.engine, self.pool)
        if self.tracing is not None:
            self.tracing.attach(self.engine)
        self.http = egress.new_client()
        self.running = False
        self._stopping = threading.Event()
        self._retention = threading.Thread()

    def _start_sandbox(self) -> None:
        """Start the sandbox's zygote, which reports the layers of its second wall (a warning
        names those that are off). Raises :class:`Unavailable` when the settings require the
        whole wall and it is not up; any other failure is retried at the next replay."""
        try:
            self.pool.wall_layers(start=True)
        except RuntimeError as exc:
            if self.settings.sandbox_wall_required:
                self.pool.close()
                raise Unavailable(str(exc)) from None
            _log.error("the sandbox did not start: %s", exc)

    def load_runner(self, ref: InstanceRef) -> TenantRunner:
        policy = self.tenants.policy(ref.tenant_id)
        artifact = self.loader.artifact(ref.tenant_id, ref.workflow, ref.version)
        return TenantRunner(self, ref, artifact, policy)

    def start(self) -> None:
        if not self.running:
            self.engine.start()
            self.running = True
            self._stopping.clear()
            self._retention = threading.Thread(
                target=self._retain, name="treadle-retention", daemon=True
            )
            self._retention.start()
            _log.info("engine started: replaying up to %d instances at once", self.settings.workers)

    def stop(self) -> None:
        if self.running:
            self.running = False
            self._stopping.set()
            self._retention.join(30)
            self.engine.stop()
            _log.info("engine stopped")

    def purge_expired(self) -> int:
        """Delete every tenant's instances that finished longer ago than its retention."""
        purged = 0
        for tenant in self.tenants.tenants():
            policy = self.tenants.policy(tenant.id)
            purged += self.engine.purge_finished(tenant.id, policy.retention_days)
        return purged

    def _retain(self) -> None:
        while not self._stopping.wait(self.settings.retention_interval_seconds):
            try:
                if purged := self.purge_expired():
                    _log.info("retention: purged %d finished instances", purged)
            except Exception:
                _log.exception("retention purge failed; trying again later")

    def close(self) -> None:
        self.stop()
        if self.tracing is not None:
            self.tracing.close()  # sends the spans still buffered
        self.loader.close()
        self.pool.close()
        self.http.close()
        self.committer.close()
        self.db.dispose()


def _upload_limits(settings: Settings) -> UploadLimits:
    return UploadLimits(
        checks=min(settings.upload_checks, settings.sandbox_processes),
        per_tenant=settings.upload_checks_per_tenant,
        queued_per_tenant=settings.upload_queue_per_tenant,
        wait_seconds=settings.upload_queue_seconds,
        check_seconds=settings.upload_check_seconds,
    )


def _owner() -> str:
    """A name for this process's leases, unique across machines and restarts."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
