"""What the HTTP API answers (docs/api.md), as pydantic models.

Every model keeps fields it does not know (``extra="allow"``): the API changes only by adding,
so a newer server must not break an older client. Times are timezone-aware datetimes (UTC).
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue
from pydantic.json_schema import SkipJsonSchema

from treadle.runtime import DEFAULT_LIMITS

FINISHED = frozenset({"complete", "errored", "terminated"})
"""The statuses an instance ends in; it changes again only if it is restarted."""


class Model(BaseModel):
    # The server sends every field, defaults too: the OpenAPI document says they are there.
    model_config = ConfigDict(
        extra="allow",
        frozen=True,
        populate_by_name=True,
        json_schema_serialization_defaults_required=True,
    )


# -- tenants (admin) ----------------------------------------------------------------------------


class Policy(Model):
    """A tenant's isolation policy; every field has the server's default when not set."""

    sandboxes: list[str] = Field(default_factory=lambda: ["restricted", "wasm"])
    max_running_instances: int = 1000
    max_queued_instances: int = 2_000_000
    creates_per_second: int = 300
    step_cpu_ms: int = DEFAULT_LIMITS.step_cpu_ms
    memory_mb: int = DEFAULT_LIMITS.memory_mb
    max_step_result_bytes: int = DEFAULT_LIMITS.max_step_result_bytes
    max_steps_per_instance: int = DEFAULT_LIMITS.max_steps_per_instance
    egress_allow: list[str] = Field(default_factory=list)
    retention_days: int = 7
    max_storage_mb: int = 1024
    max_log_bytes_per_instance: int = 1024 * 1024
    vars: dict[str, JsonValue] = Field(default_factory=dict)


class Tenant(Model):
    name: str
    policy: Policy
    created_at: _dt.datetime


class TenantList(Model):
    tenants: list[Tenant]


class ApiKey(Model):
    """A new API key of a tenant: ``key`` is the secret, shown only this once.

    ``expires_at`` is when it stops working (None: when it is deleted or rotated).
    """

    id: str
    key: str
    created_at: _dt.datetime | None = None
    expires_at: _dt.datetime | None = None


class RotatedKey(ApiKey):
    """The new key of a rotation: the old key ``rotated_from`` works until
    ``old_key_expires_at``."""

    rotated_from: str
    old_key_expires_at: _dt.datetime | None = None


class ApiKeyInfo(Model):
    """A key as the listing shows it (never its secret). ``last_used_at`` lags its latest use
    by less than a minute; an ``expired`` key answers 401 but stays listed until deleted."""

    id: str
    created_at: _dt.datetime
    last_used_at: _dt.datetime | None = None
    expires_at: _dt.datetime | None = None
    expired: bool = False
    rotated_from: str | None = None


class KeyList(Model):
    keys: list[ApiKeyInfo]


class AuditEntry(Model):
    """One admin change (or aggregated failed sign-ins) of the audit log.

    ``action`` is e.g. ``tenant.created``, ``policy.updated``, ``key.created``,
    ``key.rotated``, ``key.revoked`` or ``admin.auth_failed``; ``target`` the key or token id
    it is about, if any; ``details`` what changed (never a secret).
    """

    id: int
    time: _dt.datetime
    actor: str
    client: str | None = None
    action: str
    tenant: str | None = None
    target: str | None = None
    outcome: str
    details: dict[str, JsonValue] = Field(default_factory=dict)


class AuditPage(Model):
    """One page of the audit log, newest first; ``next_cursor`` asks for the next one."""

    entries: list[AuditEntry]
    next_cursor: str | None = None


class UsageCounts(Model):
    """What a tenant used, metered: instances created, committed step results, step attempts,
    the CPU and wall time its code took in sandbox workers (ms), egress requests and their
    bytes (request and response bodies), and its storage in bytes (at the end of the span or
    hour)."""

    instances_created: int
    steps: int
    step_attempts: int
    cpu_ms: float
    wall_ms: float
    egress_requests: int
    egress_bytes: int
    storage_bytes: int


class UsageHour(UsageCounts):
    """One hour of a tenant's usage; ``hour`` is when it began."""

    hour: _dt.datetime


class UsageReport(Model):
    """A tenant's usage from ``from`` to ``to``: the sums, and hour by hour (oldest first;
    hours without usage are left out)."""

    model_config = ConfigDict(populate_by_name=True)

    tenant: str
    from_: _dt.datetime = Field(alias="from")
    to: _dt.datetime
    totals: UsageCounts
    hours: list[UsageHour]


class TenantOverview(Model):
    """One tenant as the operator's overview shows it: its instances by status (only the
    statuses it has), and how many of its runs are stalled."""

    tenant: str
    instances: dict[str, int]
    stalled: int


class StalledRun(Model):
    """A run holding a worker whose lease ran out at ``since`` and that no process took over."""

    tenant: str
    workflow: str
    id: str
    since: _dt.datetime


class Overview(Model):
    """Every tenant's instances by status, and the stalled runs (the 100 longest stalled)."""

    tenants: list[TenantOverview]
    stalled: list[StalledRun]


# -- workflows ----------------------------------------------------------------------------------


class RatePerKey(Model):
    """At most ``limit`` instances of a key start per ``period`` seconds."""

    limit: int
    period: float


class FlowControl(Model):
    """A workflow's per-key flow control (docs/flow-control.md), durations in seconds; a
    limit not set is None."""

    concurrency_per_key: int | None = None
    rate_per_key: RatePerKey | None = None
    debounce: float | None = None
    singleton: bool = False


class StoredCode(Model):
    """What ``deploy`` stored: the workflow's current version (a hash of its code) and its
    flow control (None: none)."""

    name: str
    version: str
    sandbox: str
    flow: FlowControl | None = None


class Building(Model):
    """The answer to an upload of Python for the ``wasm`` sandbox while the server builds the
    Python-in-Wasm runtime (``202``, first start only): nothing was stored; send the same
    upload again after ``retry_after`` seconds (also the ``Retry-After`` header)."""

    status: str
    message: str
    retry_after: int


class WorkflowVersion(Model):
    version: str
    sandbox: str
    created_at: _dt.datetime
    class_name: str | None = None


class WorkflowSummary(Model):
    name: str
    version: str
    sandbox: str
    created_at: _dt.datetime
    updated_at: _dt.datetime
    flow: FlowControl | None = None


class Workflow(WorkflowSummary):
    """A workflow with every version of its code, newest first."""

    versions: list[WorkflowVersion] = Field(default_factory=list)


class WorkflowList(Model):
    workflows: list[WorkflowSummary]


# -- instances ----------------------------------------------------------------------------------


class Created(Model):
    """A created instance. ``debounced``: the create was merged into the key's instance that
    was queued already (``id`` is that one's), with the new params and a later start."""

    id: str
    status: str = "queued"
    version: str | None = None
    debounced: bool = False


class ItemError(Model):
    """Why one item of a batch was not created (``index`` is its place in the request)."""

    index: int
    id: str | None = None
    code: str
    message: str
    existing_id: str | None = None  # instance.singleton: the key's live instance


class BatchResult(Model):
    """What a batch created, and why the other items were not. ``retry_after`` is the
    seconds to wait before sending again items refused as ``quota.rate_limited`` (the
    server's ``Retry-After``; None when none was)."""

    created: list[Created]
    errors: list[ItemError]
    retry_after: SkipJsonSchema[float | None] = None  # from the header, not the body


class Accepted(Model):
    """The answer to an event sent: an empty object."""


class ApprovalLink(Model):
    """An approval link (docs/approval-links.md): a ``POST`` of JSON to ``url``, without an API
    key, sends the event; it works until its uses are spent or ``expires_at``."""

    url: str
    expires_at: _dt.datetime


class Frame(Model):
    """One frame of the workflow's code that an error went through: ``file``
    (``workflow.py``), 1-based ``line``, ``function`` and that line of ``source``."""

    file: str = "workflow.py"
    line: int = 1
    function: str = ""
    source: str = ""


class InstanceError(Model):
    """Why an instance (or a step) failed: the error's type name and message, and the frames
    of the workflow's code it was raised in, outermost first (empty for the platform's own
    errors)."""

    name: str = "Error"
    message: str = ""
    traceback: list[Frame] = Field(default_factory=list)


class Attempt(Model):
    started_at: _dt.datetime | None = None
    ended_at: _dt.datetime | None = None
    success: bool
    error: Any = None


class Step(Model):
    name: str
    count: int
    type: str
    status: str
    output: Any = None
    error: Any = None
    wake_at: _dt.datetime | None = None
    attempts: list[Attempt] = Field(default_factory=list)


class Stalled(Model):
    """Why a run is stalled: since when its lease ran out, and what that means."""

    since: _dt.datetime
    reason: str


class InstanceSummary(Model):
    """An instance as lists show it: everything but its steps. ``stalled`` is set while it
    holds a worker whose lease ran out over 5 s ago and no process has taken it over."""

    id: str
    workflow: str
    version: str
    status: str
    params: Any = None
    output: Any = None
    error: InstanceError | None = None
    created_at: _dt.datetime
    started_at: _dt.datetime | None = None
    ended_at: _dt.datetime | None = None
    stalled: Stalled | None = None
    trace_id: str | None = None  # its OpenTelemetry trace (32 hex digits)
    key: str | None = None  # its flow control key (docs/flow-control.md)
    priority: int = 5  # 0-9, higher first within the tenant
    # Why a queued instance waits: concurrency_key, rate_limit, debounce, tenant_limit or
    # start_at; None when it does not (or is not queued).
    waiting_reason: str | None = None
    # When a queued instance held back by start_at, delay or debounce may start.
    start_at: _dt.datetime | None = None
    tags: dict[str, str] = Field(default_factory=dict)  # as given at create

    @property
    def finished(self) -> bool:
        """Whether the instance has ended: ``complete``, ``errored`` or ``terminated``."""
        return self.status in FINISHED


class Instance(InstanceSummary):
    """An instance with its steps. The clients read every page of a long list of steps, so
    ``steps_next_cursor`` (where the server's embedded list stopped) is None in what they
    return."""

    steps: list[Step] = Field(default_factory=list)
    steps_next_cursor: str | None = None


class StepPage(Model):
    steps: list[Step]
    next_cursor: str | None = None


class InstanceList(Model):
    instances: list[InstanceSummary]
    next_cursor: str | None = None


class LogLine(Model):
    ts: _dt.datetime
    step: str | None = None
    message: str


class LogPage(Model):
    logs: list[LogLine]
    next_cursor: str | None = None


class StreamEvent(Model):
    """One event of an instance's live stream.

    ``id`` increases monotonically (resume after it); ``type`` is e.g. ``workflow.running``,
    ``step.completed``, ``attempt.failed`` or ``log``; ``step`` names the step it is about,
    if any; ``data`` is the event's detail (a step's record, a log line's ``message``, a
    finished workflow's ``output`` or ``error``).
    """

    id: int
    type: str
    ts: _dt.datetime
    step: str | None = None
    data: Any = None

    @property
    def final(self) -> bool:
        """Whether this event says the instance ended (it may still be restarted later)."""
        return self.type in {f"workflow.{status}" for status in FINISHED}


# -- schedules ------------------------------------------------------------------------------------


class Schedule(Model):
    """A schedule of a workflow (docs/schedules.md): ``cron`` (5 fields, in ``timezone``) or
    ``every`` (seconds), each fire creating the instance ``{id}-YYYYMMDDTHHMMSSZ`` of its
    time with ``params``. ``next_fire_at`` is None while it is paused."""

    id: str
    workflow: str
    cron: str | None = None
    every: float | None = None
    timezone: str = "UTC"
    params: Any = None
    overlap: str = "skip"
    catch_up: str = "latest"
    paused: bool = False
    next_fire_at: _dt.datetime | None = None
    last_fire_at: _dt.datetime | None = None
    created_at: _dt.datetime
    updated_at: _dt.datetime


class ScheduleList(Model):
    schedules: list[Schedule]


class HookSecret(Model):
    """A webhook just put (docs/webhooks.md): ``url`` takes signed ``POST``\\ s without an API
    key; ``secret`` signs them, and is shown this once."""

    hook: str
    url: str
    secret: str


class Hook(Model):
    """A webhook of a workflow (never its secret). ``previous_expires_at``: after a rotation,
    until when the previous secret still verifies (None: only the current one does)."""

    hook: str
    workflow: str
    url: str
    created_at: _dt.datetime
    updated_at: _dt.datetime
    previous_expires_at: _dt.datetime | None = None


class HookList(Model):
    hooks: list[Hook]


class BulkStarted(Model):
    """A bulk action accepted (docs/bulk.md): its ``job`` id and how many instances its filter
    matched, all of which it will count ``done`` or ``failed``."""

    job: str
    matched: int


class BulkJob(Model):
    """A bulk action and how far it got: ``status`` is ``running``, then ``done`` (or
    ``canceled``, ``failed``); ``failures`` counts the failed instances by error code."""

    job: str
    action: str
    filter: dict[str, Any] = Field(default_factory=dict)
    status: str
    matched: int
    done: int = 0
    failed: int = 0
    failures: dict[str, int] = Field(default_factory=dict)
    created_at: _dt.datetime | None = None
    ended_at: _dt.datetime | None = None

    @property
    def finished(self) -> bool:
        """Whether the job is over (nothing more will change)."""
        return self.status != "running"


class BulkJobList(Model):
    jobs: list[BulkJob]
