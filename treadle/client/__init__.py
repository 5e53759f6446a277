"""The HTTP client of a treadle server: ``Client``, ``AsyncClient``, the admin clients, the
models of the API's answers, the table of the API's operations (which the server serves), and
the ``treadle`` command line built on them."""

from __future__ import annotations

from treadle.client._client import Admin, AsyncAdmin, AsyncClient, Client
from treadle.client._errors import (
    ConnectionFailed,
    InstanceFailed,
    NotFinished,
    ServerError,
    WasmBuilding,
    WasmUnavailable,
)
from treadle.client._main import main
from treadle.client._models import (
    ApiKey,
    ApiKeyInfo,
    Attempt,
    AuditEntry,
    AuditPage,
    BatchResult,
    Created,
    Frame,
    Instance,
    InstanceError,
    InstanceList,
    InstanceSummary,
    ItemError,
    LogLine,
    Policy,
    RotatedKey,
    Step,
    StoredCode,
    StreamEvent,
    Tenant,
    UsageReport,
    Workflow,
    WorkflowSummary,
    WorkflowVersion,
)
from treadle.client._operations import MAX_BATCH, OPERATIONS, Operation

__all__ = [
    "MAX_BATCH",
    "OPERATIONS",
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
    "ConnectionFailed",
    "Created",
    "Frame",
    "Instance",
    "InstanceError",
    "InstanceFailed",
    "InstanceList",
    "InstanceSummary",
    "ItemError",
    "LogLine",
    "NotFinished",
    "Operation",
    "Policy",
    "RotatedKey",
    "ServerError",
    "Step",
    "StoredCode",
    "StreamEvent",
    "Tenant",
    "UsageReport",
    "WasmBuilding",
    "WasmUnavailable",
    "Workflow",
    "WorkflowSummary",
    "WorkflowVersion",
    "main",
]
