"""treadle: durable workflows that your customers write.

Three parts, by audience: :mod:`treadle.runtime` is what workflow code runs on inside a sandbox
(the step API, replay, records; no third-party packages), :mod:`treadle.testing` runs a workflow
in-process for unit tests, and :mod:`treadle.client` talks to a server over HTTP. The names a
workflow author or an API user needs are all here.

Sandboxes never import this module: tenant code's ``import treadle`` is answered by the
sandbox's own facade over :mod:`treadle.runtime`, so httpx and pydantic stay out of them.
"""

from __future__ import annotations

from treadle.client import (
    Admin,
    ApiKey,
    ApiKeyInfo,
    AsyncAdmin,
    AsyncClient,
    Attempt,
    AuditEntry,
    AuditPage,
    BatchResult,
    Client,
    Created,
    Instance,
    InstanceError,
    InstanceList,
    InstanceSummary,
    ItemError,
    LogLine,
    Policy,
    RotatedKey,
    Schedule,
    Step,
    StoredCode,
    StreamEvent,
    Tenant,
    UsageReport,
    Workflow,
    WorkflowSummary,
    WorkflowVersion,
)
from treadle.runtime import (
    MAX_DURATION_SECONDS,
    NonRetryableError,
    StepError,
    TreadleError,
    WaitTimeout,
    WorkflowEntrypoint,
    parse_duration,
    parse_instant,
)

__all__ = [
    "MAX_DURATION_SECONDS",
    "Admin",
    "ApiKey",
    "ApiKeyInfo",
    "AsyncAdmin",
    "AsyncClient",
    "Attempt",
    "AuditEntry",
    "AuditPage",
    "BatchResult",
    "Client",
    "Created",
    "Instance",
    "InstanceError",
    "InstanceList",
    "InstanceSummary",
    "ItemError",
    "LogLine",
    "NonRetryableError",
    "Policy",
    "RotatedKey",
    "Schedule",
    "Step",
    "StepError",
    "StoredCode",
    "StreamEvent",
    "Tenant",
    "TreadleError",
    "UsageReport",
    "WaitTimeout",
    "Workflow",
    "WorkflowEntrypoint",
    "WorkflowSummary",
    "WorkflowVersion",
    "parse_duration",
    "parse_instant",
]
