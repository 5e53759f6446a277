"""The schema, declared once as SQLModel tables.

Timestamps are epoch seconds (double precision): they are compared on the hot path (due times,
leases) and rendered as ISO 8601 only at the API edge. JSON columns use JSONB on PostgreSQL
and TEXT affinity on SQLite (``storage._json``), holding the one JSON encoding of that module.
The schema of a live database changes only through migrations (``storage.migrations``);
``tests`` check that the migrated schema matches these declarations.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from storage._json import TextJSON

JSONType = TextJSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_RUNNING = "status IN ('running', 'waitingForPause')"
# An instance that has started and not finished: it holds a slot of its key's concurrency.
_LIVE_STARTED = "status IN ('running', 'waiting', 'waitingForPause', 'paused')"
_LIVE = "status IN ('queued', 'running', 'waiting', 'waitingForPause', 'paused')"


def _partial(name: str, *columns: Any, where: str, **kw: Any) -> sa.Index:
    condition = sa.text(where)
    return sa.Index(name, *columns, sqlite_where=condition, postgresql_where=condition, **kw)


def _json(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=sa.Column(JSONType, nullable=nullable))


class Tenant(SQLModel, table=True):
    __tablename__ = "tenants"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True)
    policy: dict[str, Any] = Field(sa_column=sa.Column(JSONType, nullable=False))
    created_at: float


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=32)
    tenant_id: int = Field(
        sa_column=sa.Column(
            sa.ForeignKey("tenants.id", ondelete="CASCADE"), index=True, nullable=False
        )
    )
    secret_hash: str = Field(max_length=128)
    created_at: float
    last_used_at: float | None = None
    # After ``expires_at`` the key fails like a deleted one; set by rotation (the overlap) or
    # at creation (a time to live). NULL: the key works until it is deleted.
    expires_at: float | None = None
    rotated_from: str | None = Field(default=None, max_length=32)


class AdminToken(SQLModel, table=True):
    __tablename__ = "admin_tokens"

    id: str = Field(primary_key=True, max_length=32)
    secret_hash: str = Field(max_length=128)
    created_at: float


class Workflow(SQLModel, table=True):
    __tablename__ = "workflows"

    tenant_id: int = Field(
        sa_column=sa.Column(
            sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
        )
    )
    name: str = Field(primary_key=True, max_length=64)
    version: str = Field(max_length=64)
    created_at: float
    updated_at: float
    # Per-key flow control (``engine._flow``): concurrency_per_key, rate_per_key, debounce,
    # singleton, as uploaded; NULL: none (migration m0010).
    flow: Any = _json()


class WorkflowVersion(SQLModel, table=True):
    __tablename__ = "workflow_versions"

    tenant_id: int = Field(primary_key=True)
    workflow: str = Field(primary_key=True, max_length=64)
    version: str = Field(primary_key=True, max_length=64)
    sandbox: str = Field(max_length=16)
    class_name: str | None = Field(default=None, max_length=256)
    source: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    wasm: bytes | None = Field(default=None, sa_column=sa.Column(sa.LargeBinary, nullable=True))
    created_at: float


class Instance(SQLModel, table=True):
    """A workflow instance. ``due_at`` drives scheduling: for queued and waiting instances it is
    when they become runnable, for running ones when their lease expires; NULL when nothing is
    due (paused, finished)."""

    __tablename__ = "instances"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "workflow", "id", name="uq_instances_tenant_workflow_id"),
        # Led by status: a lookup by key (tenant_id, workflow, id) must not match it, or
        # PostgreSQL may scan a workflow's instances for one id (migration m0007).
        sa.Index("ix_instances_listing", "status", "tenant_id", "workflow", "pk"),
        # Fair claiming takes each tenant's started work that is due (woken, retried, its lease
        # expired) from here, tenant by tenant; queued instances come from the next two.
        _partial(
            "ix_instances_tenant_due",
            "tenant_id",
            "due_at",
            where="due_at IS NOT NULL AND (status <> 'queued' OR waiting_reason IS NOT NULL)",
        ),
        # A key's instances holding one of its concurrency slots, counted by the claim.
        _partial(
            "ix_instances_key_live",
            "tenant_id",
            "workflow",
            "flow_key",
            where=f"flow_key IS NOT NULL AND {_LIVE_STARTED}",
        ),
        # A key's starts within its rate period, counted by the claim.
        _partial(
            "ix_instances_key_started",
            "tenant_id",
            "workflow",
            "flow_key",
            "started_at",
            where="flow_key IS NOT NULL AND started_at IS NOT NULL",
        ),
        # At most one live instance per key of a singleton workflow, and one pending instance
        # per key of a debounced one: what holds them under concurrent creates.
        _partial(
            "uq_instances_singleton",
            "tenant_id",
            "workflow",
            "flow_key",
            where=f"flow_mode = 'singleton' AND {_LIVE}",
            unique=True,
        ),
        _partial(
            "uq_instances_debounce",
            "tenant_id",
            "workflow",
            "flow_key",
            where="flow_mode = 'debounce' AND status = 'queued' AND started_at IS NULL",
            unique=True,
        ),
        # The instances holding a worker, counted against max_running_instances.
        sa.Index(
            "ix_instances_running",
            "tenant_id",
            "due_at",
            sqlite_where=sa.text(_RUNNING),
            postgresql_where=sa.text(_RUNNING),
        ),
        # Search (``engine._search``, migration m0013): a tenant's instances newest first, by
        # status, by id prefix, by creation time, by key, by error name and (PostgreSQL) by tag.
        sa.Index("ix_instances_tenant_pk", "tenant_id", "pk"),
        sa.Index("ix_instances_tenant_status", "tenant_id", "status", "pk"),
        sa.Index("ix_instances_tenant_id", "tenant_id", "id"),
        sa.Index("ix_instances_tenant_created", "tenant_id", "created_at"),
        _partial(
            "ix_instances_tenant_key", "tenant_id", "flow_key", "pk", where="flow_key IS NOT NULL"
        ),
        _partial(
            "ix_instances_error_name",
            "tenant_id",
            "error_name",
            "pk",
            where="error_name IS NOT NULL",
        ),
        sa.Index(
            "ix_instances_tags",
            "tags",
            postgresql_using="gin",
            postgresql_ops={"tags": "jsonb_path_ops"},
            postgresql_where=sa.text("tags IS NOT NULL"),
        ).ddl_if(dialect="postgresql"),
        # Counted against max_queued_instances, only when a tenant nears it.
        sa.Index(
            "ix_instances_queued",
            "tenant_id",
            sqlite_where=sa.text("status = 'queued'"),
            postgresql_where=sa.text("status = 'queued'"),
        ),
    )

    pk: int | None = Field(default=None, sa_column=sa.Column(BigId, primary_key=True))
    tenant_id: int = Field(
        sa_column=sa.Column(sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False)
    )
    workflow: str = Field(max_length=64)
    id: str = Field(max_length=100)
    version: str = Field(max_length=64)
    status: str = Field(max_length=20)
    params: Any = _json()
    output: Any = _json()
    error: Any = _json()
    created_at: float
    started_at: float | None = None
    ended_at: float | None = None
    due_at: float | None = None
    lease_owner: str | None = Field(default=None, max_length=64)
    epoch: int = 0
    paused_at: float | None = None
    paused_due_at: float | None = None
    parent_pk: int | None = Field(default=None, sa_column=sa.Column(BigId, nullable=True))
    rollback: Any = _json()
    # The bytes written for the instance (what the tenant's storage gives back when it goes),
    # and those of the log lines kept (a value past the cap: truncated).
    stored_bytes: int = Field(
        default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0")
    )
    log_bytes: int = Field(
        default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0")
    )
    # The OpenTelemetry context of the instance's trace (migration m0009).
    trace_id: str | None = Field(default=None, max_length=32)
    span_id: str | None = Field(default=None, max_length=16)
    parent_span_id: str | None = Field(default=None, max_length=16)
    # Flow control (migration m0010): the instance's key, its priority (0-9, higher first),
    # the mode it was created under ("debounce" or "singleton", NULL otherwise) and why it
    # waits when that is stored ("start_at", "debounce"; the other reasons are worked out).
    flow_key: str | None = Field(default=None, max_length=128)
    priority: int = Field(
        default=5, sa_column=sa.Column(sa.SmallInteger, nullable=False, server_default="5")
    )
    flow_mode: str | None = Field(default=None, max_length=16)
    waiting_reason: str | None = Field(default=None, max_length=16)
    # The tags given at create (NULL: none) and the name of the error it ended with, for
    # search (migration m0013).
    tags: Any = _json()
    error_name: str | None = Field(default=None, max_length=256)


class TenantQuota(SQLModel, table=True):
    """A tenant's admission state, shared by every API process: its create token bucket
    (``tokens`` as of ``refilled_at``) and an upper bound of its queued instances (exact when
    counted, raised by every create since; NULL: not counted yet) and ``full_at``, when a count
    last found the queue full (0: not since it had room)."""

    __tablename__ = "tenant_quotas"

    tenant_id: int = Field(
        sa_column=sa.Column(
            sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
        )
    )
    tokens: float
    refilled_at: float
    queued_bound: int | None = None
    full_at: float


class FlowKey(SQLModel, table=True):
    """A key of a workflow with flow control: its limits (copied from the workflow's ``flow``
    at each create and upload) and ``ready_at``, when a claim should next look at it: NULL
    while it is full or has nothing queued, until a create or a ``flow_wakeups`` row reopens
    it (``engine._flow``)."""

    __tablename__ = "flow_keys"
    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "workflow"],
            ["workflows.tenant_id", "workflows.name"],
            ondelete="CASCADE",
        ),
        _partial("ix_flow_keys_ready", "tenant_id", "ready_at", where="ready_at IS NOT NULL"),
    )

    tenant_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    workflow: str = Field(primary_key=True, max_length=64)
    flow_key: str = Field(primary_key=True, max_length=128)
    concurrency: int | None = None
    rate_limit: int | None = None
    rate_period: float | None = None
    ready_at: float | None = None


class FlowWakeup(SQLModel, table=True):
    """A key one of whose slots was freed or that got an instance queued again (an instance
    ended, was restarted, resumed or deleted): the next claim of its tenant reopens the key.
    Appended without locking the key row, so that a commit never waits for a create."""

    __tablename__ = "flow_wakeups"
    __table_args__ = (sa.Index("ix_flow_wakeups_tenant", "tenant_id"),)

    pk: int | None = Field(default=None, sa_column=sa.Column(BigId, primary_key=True))
    tenant_id: int = Field(
        sa_column=sa.Column(sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False)
    )
    workflow: str = Field(max_length=64)
    flow_key: str = Field(max_length=128)


class Schedule(SQLModel, table=True):
    """A schedule of a workflow: its ``spec`` as put (cron or every, timezone, params, overlap,
    catch_up), when it fires next and last, and the lease of the process firing it."""

    __tablename__ = "schedules"
    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "workflow"],
            ["workflows.tenant_id", "workflows.name"],
            ondelete="CASCADE",
        ),
        _partial("ix_schedules_next", "next_fire_at", where="next_fire_at IS NOT NULL"),
        _partial("ix_schedules_held", "held_fire_at", where="held_fire_at IS NOT NULL"),
    )

    tenant_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    workflow: str = Field(primary_key=True, max_length=64)
    id: str = Field(primary_key=True, max_length=64)
    spec: Any = _json(nullable=False)
    paused: bool
    next_fire_at: float | None = None
    last_fire_at: float | None = None
    last_instance: str | None = Field(default=None, max_length=100)
    held_fire_at: float | None = None
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: float | None = None
    created_at: float
    updated_at: float


class StorageUsage(SQLModel, table=True):
    """A ledger of each tenant's storage: every write that stores data for a tenant appends
    its bytes, every deletion a negative row; the sum is what the tenant stores. Appending
    locks nothing, so a commit charges a tenant without waiting for another's."""

    __tablename__ = "storage_usage"
    __table_args__ = (sa.Index("ix_storage_usage_tenant", "tenant_id"),)

    pk: int | None = Field(default=None, sa_column=sa.Column(BigId, primary_key=True))
    tenant_id: int = Field(
        sa_column=sa.Column(sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False)
    )
    bytes: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))


def _count() -> Any:
    return Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0"))


class TenantUsage(SQLModel, table=True):
    """A ledger of what each tenant used, by hour (``hour``: epoch seconds of its start).

    Every write that counts appends a row, in the transaction of what it counts (a step's
    attempts and CPU time commit with its result); rows of one tenant and hour are folded into
    one now and then. ``storage_bytes`` is the change of the tenant's storage in the hour."""

    __tablename__ = "tenant_usage"
    __table_args__ = (sa.Index("ix_tenant_usage_tenant_hour", "tenant_id", "hour"),)

    pk: int | None = Field(default=None, sa_column=sa.Column(BigId, primary_key=True))
    tenant_id: int = Field(
        sa_column=sa.Column(sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False)
    )
    hour: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    instances_created: int = _count()
    steps: int = _count()
    step_attempts: int = _count()
    cpu_us: int = _count()
    wall_us: int = _count()
    egress_requests: int = _count()
    egress_bytes: int = _count()
    storage_bytes: int = _count()


class Step(SQLModel, table=True):
    """One step of an instance, keyed by (name, occurrence count)."""

    __tablename__ = "steps"

    instance_pk: int = Field(
        sa_column=sa.Column(
            BigId,
            sa.ForeignKey("instances.pk", ondelete="CASCADE"),
            primary_key=True,
            autoincrement=False,
        )
    )
    name: str = Field(primary_key=True, max_length=256)
    count: int = Field(primary_key=True)
    seq: int
    type: str = Field(max_length=16)
    status: str = Field(max_length=16)
    output: Any = _json()
    error: Any = _json()
    attempts: Any = _json()
    wake_at: float | None = None
    event_pk: int | None = Field(default=None, sa_column=sa.Column(BigId, nullable=True))


class Event(SQLModel, table=True):
    """An event sent to an instance; buffered until a wait consumes it."""

    __tablename__ = "events"
    __table_args__ = (sa.Index("ix_events_instance", "instance_pk", "type", "pk"),)

    pk: int | None = Field(default=None, sa_column=sa.Column(BigId, primary_key=True))
    instance_pk: int = Field(
        sa_column=sa.Column(
            BigId, sa.ForeignKey("instances.pk", ondelete="CASCADE"), nullable=False
        )
    )
    # Public event types are at most 100 characters; internal ones ("child.<instance id>",
    # which the public API cannot send: it refuses dots) need a little more.
    type: str = Field(max_length=120)
    payload: Any = _json()
    created_at: float
    consumed_at: float | None = None


class History(SQLModel, table=True):
    """What happened to an instance, in order: log lines and (for the live stream) workflow,
    step, attempt, sleep and wait events. ``pk`` is the monotonic event id."""

    __tablename__ = "history"
    __table_args__ = (sa.Index("ix_history_instance", "instance_pk", "pk"),)

    pk: int | None = Field(default=None, sa_column=sa.Column(BigId, primary_key=True))
    instance_pk: int = Field(
        sa_column=sa.Column(
            BigId, sa.ForeignKey("instances.pk", ondelete="CASCADE"), nullable=False
        )
    )
    ts: float
    type: str = Field(max_length=32)
    step: str | None = Field(default=None, max_length=256)
    data: Any = _json()


class AuditEntry(SQLModel, table=True):
    """One admin action (or a window of failed admin sign-ins). ``tenant`` is the tenant's
    name, not a foreign key: the record of what happened to a tenant outlives the tenant."""

    __tablename__ = "audit_log"
    __table_args__ = (
        sa.Index("ix_audit_log_tenant", "tenant", "pk"),
        sa.Index("ix_audit_log_action", "action", "pk"),
    )

    pk: int | None = Field(default=None, sa_column=sa.Column(BigId, primary_key=True))
    ts: float
    actor: str = Field(max_length=64)
    client: str | None = Field(default=None, max_length=64)
    action: str = Field(max_length=32)
    tenant: str | None = Field(default=None, max_length=64)
    target: str | None = Field(default=None, max_length=64)
    outcome: str = Field(max_length=16)
    details: Any = _json()


class Process(SQLModel, table=True):
    """An engine process sharing the database (PostgreSQL): alive while the session-level
    advisory lock ``lock_key`` is held; its running instances are taken over once it is not."""

    __tablename__ = "processes"

    owner: str = Field(primary_key=True, max_length=64)
    lock_key: int
    started_at: float


metadata = SQLModel.metadata
tenants: sa.Table = Tenant.__table__  # type: ignore[attr-defined]
api_keys: sa.Table = ApiKey.__table__  # type: ignore[attr-defined]
admin_tokens: sa.Table = AdminToken.__table__  # type: ignore[attr-defined]
workflows: sa.Table = Workflow.__table__  # type: ignore[attr-defined]
workflow_versions: sa.Table = WorkflowVersion.__table__  # type: ignore[attr-defined]
instances: sa.Table = Instance.__table__  # type: ignore[attr-defined]
tenant_quotas: sa.Table = TenantQuota.__table__  # type: ignore[attr-defined]
storage_usage: sa.Table = StorageUsage.__table__  # type: ignore[attr-defined]
tenant_usage: sa.Table = TenantUsage.__table__  # type: ignore[attr-defined]
steps: sa.Table = Step.__table__  # type: ignore[attr-defined]
events: sa.Table = Event.__table__  # type: ignore[attr-defined]
history: sa.Table = History.__table__  # type: ignore[attr-defined]
audit_log: sa.Table = AuditEntry.__table__  # type: ignore[attr-defined]
processes: sa.Table = Process.__table__  # type: ignore[attr-defined]
flow_keys: sa.Table = FlowKey.__table__  # type: ignore[attr-defined]
flow_wakeups: sa.Table = FlowWakeup.__table__  # type: ignore[attr-defined]
schedules: sa.Table = Schedule.__table__  # type: ignore[attr-defined]

# Ordered by priority descending (highest first), then due time: declared here, where the
# columns exist to be ordered.
_q = instances.c
# Queued instances without a key, highest priority first, then oldest.
_partial(
    "ix_instances_queue",
    _q.tenant_id,
    _q.priority.desc(),
    _q.due_at,
    where="status = 'queued' AND flow_key IS NULL AND waiting_reason IS NULL",
)
# A key's queued instances, in the same order, reached through its flow_keys row.
_partial(
    "ix_instances_key_queue",
    _q.tenant_id,
    _q.workflow,
    _q.flow_key,
    _q.priority.desc(),
    _q.due_at,
    where="status = 'queued' AND flow_key IS NOT NULL AND waiting_reason IS NULL",
)


class ApprovalLink(SQLModel, table=True):
    """A link that sends one event to one instance without an API key (``engine._links``):
    only its token's SHA-256 is kept. ``step_key``: the step of the workflow that minted it."""

    __tablename__ = "approval_links"
    __table_args__ = (
        sa.Index("uq_approval_links_token", "token_hash", unique=True),
        sa.Index("uq_approval_links_step", "instance_pk", "step_key", unique=True),
    )

    pk: int | None = Field(default=None, sa_column=sa.Column(BigId, primary_key=True))
    instance_pk: int = Field(
        sa_column=sa.Column(
            BigId, sa.ForeignKey("instances.pk", ondelete="CASCADE"), nullable=False
        )
    )
    token_hash: str = Field(max_length=64)
    event_type: str = Field(max_length=100)
    step_key: str | None = Field(default=None, max_length=300)
    uses: int
    uses_left: int
    expires_at: float
    created_at: float


approval_links: sa.Table = ApprovalLink.__table__  # type: ignore[attr-defined]


class Hook(SQLModel, table=True):
    """A signed webhook of a workflow (``engine._hooks``): ``id`` (``hk_...``, unguessable)
    is its public address, ``name`` the tenant's name for it. ``secret`` is kept as it is,
    since an HMAC needs it; after a rotation ``previous_secret`` verifies too until
    ``previous_expires_at`` (migration m0011)."""

    __tablename__ = "hooks"
    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "workflow"],
            ["workflows.tenant_id", "workflows.name"],
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("tenant_id", "workflow", "name", name="uq_hooks_name"),
    )

    id: str = Field(primary_key=True, max_length=64)
    tenant_id: int
    workflow: str = Field(max_length=64)
    name: str = Field(max_length=64)
    secret: str = Field(max_length=128)
    previous_secret: str | None = Field(default=None, max_length=128)
    previous_expires_at: float | None = None
    created_at: float
    updated_at: float


class HookDelivery(SQLModel, table=True):
    """The ``Idempotency-Key`` of a delivery to a hook and the instance it created, inserted
    in the transaction of that create."""

    __tablename__ = "hook_deliveries"
    __table_args__ = (sa.Index("ix_hook_deliveries_created", "created_at"),)

    hook_id: str = Field(
        sa_column=sa.Column(
            sa.String(64), sa.ForeignKey("hooks.id", ondelete="CASCADE"), primary_key=True
        )
    )
    idempotency_key: str = Field(primary_key=True, max_length=255)
    instance_id: str = Field(max_length=100)
    created_at: float


hooks: sa.Table = Hook.__table__  # type: ignore[attr-defined]
hook_deliveries: sa.Table = HookDelivery.__table__  # type: ignore[attr-defined]


class BulkJob(SQLModel, table=True):
    """A bulk action over the instances of a tenant that a filter matched (``engine._bulk``):
    ``matched`` counted when it was created, up to ``high_pk``; batches walk the pks after
    ``cursor_pk`` under a short lease and count each instance ``done`` or ``failed``
    (``failures``: how many failed, by error code)."""

    __tablename__ = "bulk_jobs"
    __table_args__ = (
        sa.Index("ix_bulk_jobs_tenant", "tenant_id", "created_at"),
        _partial("ix_bulk_jobs_running", "lease_until", where="status = 'running'"),
    )

    id: str = Field(primary_key=True, max_length=32)
    tenant_id: int = Field(
        sa_column=sa.Column(sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False)
    )
    filter: Any = _json(nullable=False)
    action: str = Field(max_length=16)
    status: str = Field(max_length=16)
    matched: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    done: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    failed: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    failures: Any = _json()
    high_pk: int = Field(sa_column=sa.Column(BigId, nullable=False))
    cursor_pk: int = Field(sa_column=sa.Column(BigId, nullable=False))
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: float | None = None
    created_at: float
    ended_at: float | None = None


bulk_jobs: sa.Table = BulkJob.__table__  # type: ignore[attr-defined]
