"""The platform's metrics in the Prometheus format, built on ``prometheus_client``.

Each process (``serve`` or ``worker``) has its own registry. What happens in the process is
counted as it happens: step attempts and their durations, replays, claims (how long instances
waited in the queue, how late timers woke), HTTP requests. What is in the database is read at
scrape time, at most once every :data:`DB_READ_SECONDS` however often scrapers ask: instances
by tenant, workflow and status, and stalled instances. Every process reports the database's
gauges; sum the per-process series (attempts, durations, requests) over processes.

Label values are bounded: ``tenant`` is a tenant's name (the operator creates tenants),
``workflow`` one of the first :data:`MAX_WORKFLOWS_PER_TENANT` workflows a tenant's instances
showed this process (the rest are counted as ``_other``), ``route`` the route's template
(``/v1/workflows/{name}/instances/{id}``), never a raw path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from engine import STATUSES, Attempt, Engine, Observer, Woken
from sandbox import SandboxPool

CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST
DB_READ_SECONDS = 2.0
MAX_WORKFLOWS_PER_TENANT = 100
OTHER = "_other"
_log = logging.getLogger("treadle")
# Durations from a no-op step (a millisecond) to a long one (minutes).
_STEP_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)
_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_HTTP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

# No `_created` series beside every counter and histogram.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


class PlatformMetrics(Observer):
    """The metrics of one process: the engine's observer, and what ``GET /metrics`` renders.

    ``tenant_name`` gives a tenant's name from its id; ``attach`` hands it the engine and the
    sandbox pool, whose state is read at scrape time.
    """

    def __init__(self, tenant_name: Callable[[int], str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._tenant_name = tenant_name
        self._names: dict[int, str] = {}
        self._workflows: dict[int, set[str]] = {}
        self._lock = threading.Lock()
        r = self.registry
        self.attempts = Counter(
            "treadle_step_attempts",
            "Step attempts that ended and were committed, by outcome (success or failure).",
            ["tenant", "workflow", "outcome"],
            registry=r,
        )
        self.step_seconds = Histogram(
            "treadle_step_duration_seconds",
            "How long step attempts ran, in seconds.",
            ["tenant", "workflow"],
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        self.replay_seconds = Histogram(
            "treadle_replay_duration_seconds",
            "How long replays of instances took in their sandbox, commits included, in seconds.",
            ["sandbox"],
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "treadle_queue_wait_seconds",
            "From when an instance was due (created, woken, retried) to its claim, in seconds.",
            ["tenant"],
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.timer_lateness = Histogram(
            "treadle_timer_lateness_seconds",
            "From when a waiting instance was due (its timer, an event) to its claim, in seconds.",
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.http_requests = Counter(
            "treadle_http_requests",
            "HTTP requests answered, by route template and status code.",
            ["route", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "treadle_http_request_duration_seconds",
            "How long HTTP requests took to answer (a stream: to its end), in seconds.",
            ["route"],
            buckets=_HTTP_BUCKETS,
            registry=r,
        )
        self._state: _State | None = None

    def attach(self, engine: Engine, pool: SandboxPool) -> None:
        """Report ``engine``'s counters and the database's gauges, and ``pool``'s workers."""
        self._state = _State(self, engine, pool)
        self.registry.register(self._state)

    def render(self) -> bytes:
        """The text format of every metric (reads the database, at most every 2 s)."""
        return prometheus_client.generate_latest(self.registry)

    # -- the engine's observer ------------------------------------------------------------------

    def claimed(self, woken: Sequence[Woken]) -> None:
        for w in woken:
            self.queue_wait.labels(self.tenant(w.tenant_id)).observe(w.waited)
            if w.from_wait:
                self.timer_lateness.observe(w.waited)

    def attempted(self, attempts: Sequence[Attempt]) -> None:
        for a in attempts:
            tenant, workflow = self.tenant(a.tenant_id), self.workflow(a.tenant_id, a.workflow)
            outcome = "success" if a.success else "failure"
            self.attempts.labels(tenant, workflow, outcome).inc()
            self.step_seconds.labels(tenant, workflow).observe(a.seconds)

    def replayed(self, sandbox: str, seconds: float) -> None:
        self.replay_seconds.labels(sandbox).observe(seconds)

    # -- label values ---------------------------------------------------------------------------

    def tenant(self, tenant_id: int) -> str:
        name = self._names.get(tenant_id)
        if name is None:
            try:
                name = self._tenant_name(tenant_id)
            except Exception:  # deleted meanwhile: its id will do
                name = str(tenant_id)
            self._names[tenant_id] = name
        return name

    def workflow(self, tenant_id: int, workflow: str) -> str:
        with self._lock:
            seen = self._workflows.setdefault(tenant_id, set())
            if workflow in seen:
                return workflow
            if len(seen) < MAX_WORKFLOWS_PER_TENANT:
                seen.add(workflow)
                return workflow
        return OTHER


class _State(Collector):
    """What is read at scrape time: the engine's counters, the database, the sandbox pool."""

    def __init__(self, metrics: PlatformMetrics, engine: Engine, pool: SandboxPool) -> None:
        self._metrics = metrics
        self._engine = engine
        self._pool = pool
        self._lock = threading.Lock()
        self._read_at = -DB_READ_SECONDS
        self._counts: dict[tuple[int, str, str], int] = {}
        self._stalled = 0

    def describe(self) -> list[Metric]:
        return []  # read from the database only when scraped, never at registration

    def collect(self) -> Iterator[Metric]:
        counters = self._engine.counters()
        for name, text in (
            ("commits", "Write transactions this process committed to the database."),
            ("replays", "Replays of workflow instances this process ran."),
            ("steps", "Step results this process committed."),
        ):
            yield CounterMetricFamily(f"treadle_{name}", text, value=counters[name])
        counts, stalled = self._database()
        instances = GaugeMetricFamily(
            "treadle_instances",
            "Workflow instances in the database, by tenant, workflow and status.",
            labels=["tenant", "workflow", "status"],
        )
        by_label: dict[tuple[str, str, str], int] = {}
        for (tenant_id, workflow, status), n in sorted(counts.items()):
            labels = (
                self._metrics.tenant(tenant_id),
                self._metrics.workflow(tenant_id, workflow),
                status if status in STATUSES else OTHER,
            )
            by_label[labels] = by_label.get(labels, 0) + n
        for labels, n in by_label.items():
            instances.add_metric(list(labels), n)
        yield instances
        yield GaugeMetricFamily(
            "treadle_stalled_instances",
            "Instances holding a worker whose lease ran out over 5 s ago: no process is "
            "running them (their process died or hangs, and none could take them over).",
            value=stalled,
        )
        workers = GaugeMetricFamily(
            "treadle_sandbox_workers",
            "Sandbox worker processes of this process, by the sandbox they ran last.",
            labels=["sandbox"],
        )
        for sandbox, n in sorted(self._pool.workers().items()):
            workers.add_metric([sandbox], n)
        yield workers

    def _database(self) -> tuple[dict[tuple[int, str, str], int], int]:
        with self._lock:
            if time.monotonic() - self._read_at >= DB_READ_SECONDS:
                self._counts = self._engine.instance_counts()
                self._stalled = self._engine.stalled_count()
                self._read_at = time.monotonic()
            return self._counts, self._stalled
