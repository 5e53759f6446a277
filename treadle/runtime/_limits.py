"""The limits a replay runs under, with the platform's defaults: the one place they are set.

A tenant's policy (``tenants.Policy``) may change each of them; the sandbox's limits
(``sandbox.Limits``), the local test harness and the client's model of a policy all default to
:data:`DEFAULT_LIMITS`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepLimits:
    """What one instance's replays may use: memory, CPU per step body, result size, steps."""

    memory_mb: int = 256
    step_cpu_ms: int = 30_000
    max_step_result_bytes: int = 1024 * 1024
    max_steps_per_instance: int = 10_000


DEFAULT_LIMITS = StepLimits()
