"""Isolation of tenant workflow code: sandbox worker processes behind one interface.

Tenant code never runs in the engine or API process. :class:`SandboxPool` runs it in worker
processes forked from a pre-imported zygote, one tenant per process, under OS limits, and
speaks a small JSON protocol with them. See ``docs/sandbox.md``.
"""

from __future__ import annotations

from sandbox._deadline import Deadline
from sandbox._pool import SandboxPool
from sandbox._types import (
    NOTHING_SPENT,
    Artifact,
    Done,
    Failed,
    Host,
    Limits,
    NotReady,
    Outcome,
    ReplayRequest,
    Spent,
    Suspended,
)
from sandbox._wall import LAYERS, Wall
from sandbox.wasm._background import RuntimeBuild

__all__ = [
    "LAYERS",
    "NOTHING_SPENT",
    "Artifact",
    "Deadline",
    "Done",
    "Failed",
    "Host",
    "Limits",
    "NotReady",
    "Outcome",
    "ReplayRequest",
    "RuntimeBuild",
    "SandboxPool",
    "Spent",
    "Suspended",
    "Wall",
]
