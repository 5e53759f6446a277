"""Durable execution: journal, replay, retries, timers, events, leases and scheduling."""

from __future__ import annotations

from engine._engine import Engine, NewInstance
from engine._names import FINISHED, MAX_EVENT_TYPE, MAX_INSTANCE_ID, MAX_ROW_ID, STATUSES
from engine._quotas import Quota
from engine._replay import InstanceRef, LoadRunner, Recorder, Runner
from engine._store import LeaseLost
from engine._usage import StorageLimits

__all__ = [
    "FINISHED",
    "MAX_EVENT_TYPE",
    "MAX_INSTANCE_ID",
    "MAX_ROW_ID",
    "STATUSES",
    "Engine",
    "InstanceRef",
    "LeaseLost",
    "LoadRunner",
    "NewInstance",
    "Quota",
    "Recorder",
    "Runner",
    "StorageLimits",
]
