"""Durable execution: journal, replay, retries, timers, events, leases and scheduling."""

from __future__ import annotations

from engine._engine import CreatedItem, Engine, ItemError, NewInstance
from engine._fencing import LeaseLost
from engine._logcontext import log_context, logging_for
from engine._names import FINISHED, MAX_EVENT_TYPE, MAX_INSTANCE_ID, MAX_ROW_ID, STATUSES
from engine._observe import Attempt, Observer, Woken
from engine._quotas import Quota
from engine._reads import Stalled
from engine._replay import InstanceRef, LoadRunner, Recorder, Runner
from engine._rows import HistoryEvent, WatchedEvent
from engine._usage import USAGE_FIELDS, StorageLimits, Usage, UsageReport
from engine._views import InstanceView, LogView, StepView

__all__ = [
    "FINISHED",
    "MAX_EVENT_TYPE",
    "MAX_INSTANCE_ID",
    "MAX_ROW_ID",
    "STATUSES",
    "USAGE_FIELDS",
    "Attempt",
    "CreatedItem",
    "Engine",
    "HistoryEvent",
    "InstanceRef",
    "InstanceView",
    "ItemError",
    "LeaseLost",
    "LoadRunner",
    "LogView",
    "NewInstance",
    "Observer",
    "Quota",
    "Recorder",
    "Runner",
    "Stalled",
    "StepView",
    "StorageLimits",
    "Usage",
    "UsageReport",
    "WatchedEvent",
    "Woken",
    "log_context",
    "logging_for",
]
