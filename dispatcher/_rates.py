"""Per-tenant creation rate: a token bucket for the policy's ``creates_per_second``.

Each tenant's bucket holds up to one second's worth of creates and refills continuously, so a
tenant may burst to its rate and sustain it, never more. The buckets live in this process:
with several API processes the allowance applies per process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class CreateRate:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._buckets: dict[int, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, tenant_id: int, wanted: int, per_second: int) -> tuple[int, float]:
        """Take up to ``wanted`` creates; return how many were granted and, when fewer were,
        the seconds until the next one is allowed."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.setdefault(tenant_id, _Bucket(float(per_second), now))
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(per_second), bucket.tokens + elapsed * per_second)
            bucket.updated = now
            granted = min(wanted, int(bucket.tokens))
            bucket.tokens -= granted
            retry_after = (1.0 - bucket.tokens) / per_second if granted < wanted else 0.0
        return granted, retry_after
