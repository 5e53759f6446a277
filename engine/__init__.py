"""Durable execution: journal, replay, retries, timers, events, leases and scheduling."""

from __future__ import annotations

from engine._engine import CreatedItem, Engine, ItemError, NewInstance
from engine._fencing import LeaseLost
from engine._flow import Flow
from engine._hooks import Delivered, HookStore, check_idempotency_key
from engine._links import DEFAULT_TTL as DEFAULT_LINK_TTL
from engine._links import MAX_TTL as MAX_LINK_TTL
from engine._links import MAX_USES as MAX_LINK_USES
from engine._links import Links, LinkTarget, Minted
from engine._logcontext import log_context, logging_for
from engine._names import FINISHED, MAX_EVENT_TYPE, MAX_INSTANCE_ID, MAX_ROW_ID, STATUSES
from engine._observe import Attempt, Ended, Observer, Observers, RunTrace, Waited, Woken
from engine._quotas import Quota
from engine._reads import Stalled
from engine._replay import InstanceRef, LoadRunner, Recorder, Runner
from engine._rows import HistoryEvent, WatchedEvent
from engine._search import InstanceFilter, iso_seconds, not_iso
from engine._traces import TraceParent, parse_traceparent
from engine._usage import USAGE_FIELDS, StorageLimits, Usage, UsageReport
from engine._views import InstanceView, LogView, StepView

__all__ = [
    "DEFAULT_LINK_TTL",
    "FINISHED",
    "MAX_EVENT_TYPE",
    "MAX_INSTANCE_ID",
    "MAX_LINK_TTL",
    "MAX_LINK_USES",
    "MAX_ROW_ID",
    "STATUSES",
    "USAGE_FIELDS",
    "Attempt",
    "CreatedItem",
    "Delivered",
    "Ended",
    "Engine",
    "Flow",
    "HistoryEvent",
    "HookStore",
    "InstanceFilter",
    "InstanceRef",
    "InstanceView",
    "ItemError",
    "LeaseLost",
    "LinkTarget",
    "Links",
    "LoadRunner",
    "LogView",
    "Minted",
    "NewInstance",
    "Observer",
    "Observers",
    "Quota",
    "Recorder",
    "RunTrace",
    "Runner",
    "Stalled",
    "StepView",
    "StorageLimits",
    "TraceParent",
    "Usage",
    "UsageReport",
    "Waited",
    "WatchedEvent",
    "Woken",
    "check_idempotency_key",
    "iso_seconds",
    "log_context",
    "logging_for",
    "not_iso",
    "parse_traceparent",
]
