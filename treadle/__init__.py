"""treadle: the SDK that tenant workflow code imports, and the HTTP client.

The client (``Client``, ``AsyncClient`` and the models of the API's answers) is imported on
first use: tenant code imports ``treadle`` inside the sandboxes, where httpx and pydantic
have no business (and would slow every sandbox process's start).
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

from treadle._durations import MAX_DURATION_SECONDS, parse_duration, parse_instant
from treadle._entrypoint import WorkflowEntrypoint
from treadle.errors import NonRetryableError, StepError, TreadleError, WaitTimeout

if _typing.TYPE_CHECKING:
    from treadle._client import Admin, AsyncAdmin, AsyncClient, Client
    from treadle._models import (
        ApiKey,
        ApiKeyInfo,
        Attempt,
        AuditEntry,
        AuditPage,
        BatchResult,
        Created,
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
        Workflow,
        WorkflowSummary,
        WorkflowVersion,
    )

_LAZY = {
    "Admin": "treadle._client",
    "ApiKey": "treadle._models",
    "ApiKeyInfo": "treadle._models",
    "AsyncAdmin": "treadle._client",
    "AsyncClient": "treadle._client",
    "Attempt": "treadle._models",
    "AuditEntry": "treadle._models",
    "AuditPage": "treadle._models",
    "BatchResult": "treadle._models",
    "Client": "treadle._client",
    "Created": "treadle._models",
    "Instance": "treadle._models",
    "InstanceError": "treadle._models",
    "InstanceList": "treadle._models",
    "InstanceSummary": "treadle._models",
    "ItemError": "treadle._models",
    "LogLine": "treadle._models",
    "Policy": "treadle._models",
    "RotatedKey": "treadle._models",
    "Step": "treadle._models",
    "StoredCode": "treadle._models",
    "StreamEvent": "treadle._models",
    "Tenant": "treadle._models",
    "Workflow": "treadle._models",
    "WorkflowSummary": "treadle._models",
    "WorkflowVersion": "treadle._models",
}


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'treadle' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


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
    "Step",
    "StepError",
    "StoredCode",
    "StreamEvent",
    "Tenant",
    "TreadleError",
    "WaitTimeout",
    "Workflow",
    "WorkflowEntrypoint",
    "WorkflowSummary",
    "WorkflowVersion",
    "parse_duration",
    "parse_instant",
]
