"""``/metrics``: what the engine reports becomes Prometheus series, and the listener that
serves them without credentials. (Every series against a real workload: tests/integration.)"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import httpx
import psycopg
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from dispatcher._exporter import MetricsListener
from dispatcher._metrics import MAX_WORKFLOWS_PER_TENANT, OTHER, PlatformMetrics
from engine import Attempt, Woken


def _samples(text: str) -> dict[str, str]:
    return dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))


def _metrics() -> PlatformMetrics:
    return PlatformMetrics({1: "acme", 2: "globex"}.__getitem__)


def test_attempts_claims_and_replays_become_series_with_bounded_labels() -> None:
    metrics = _metrics()
    metrics.attempted([Attempt(1, "checkout", True, 0.002), Attempt(1, "checkout", False, 0.3)])
    metrics.attempted([Attempt(2, "billing", True, 0.004)])
    metrics.claimed([Woken(1, 0.02, False), Woken(2, 0.4, True)])
    metrics.replayed("restricted", 0.01)
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    attempts = {(s.labels["tenant"], s.labels["outcome"]): s.value
                for s in families["treadle_step_attempts"].samples}  # fmt: skip
    assert attempts == {("acme", "success"): 1, ("acme", "failure"): 1, ("globex", "success"): 1}
    samples = _samples(metrics.render().decode())
    count = 'treadle_step_duration_seconds_count{tenant="acme",workflow="checkout"}'
    assert samples[count] == "2.0"
    assert samples['treadle_queue_wait_seconds_count{tenant="acme"}'] == "1.0"
    assert samples["treadle_timer_lateness_seconds_count"] == "1.0"  # the one woken from a wait
    assert samples['treadle_replay_duration_seconds_count{sandbox="restricted"}'] == "1.0"
    assert not any(name.endswith("_created") for name in samples)
    # A tenant's workflows beyond the bound share one label value.
    for n in range(MAX_WORKFLOWS_PER_TENANT + 5):
        metrics.attempted([Attempt(2, f"w{n}", True, 0.001)])
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    workflows = {s.labels["workflow"] for s in families["treadle_step_attempts"].samples}
    assert OTHER in workflows and len(workflows) <= 2 + MAX_WORKFLOWS_PER_TENANT


# -- the listener of --metrics-port -------------------------------------------------------------


@contextlib.contextmanager
def _listening(render: Callable[[], bytes]) -> Iterator[str]:
    listener = MetricsListener(render, "127.0.0.1", 0)
    listener.start()
    try:
        yield f"http://127.0.0.1:{listener.port}"
    finally:
        listener.close()


def test_the_metrics_port_serves_the_metrics_without_credentials() -> None:
    metrics = _metrics()
    metrics.replayed("wasm", 0.5)
    with _listening(metrics.render) as base:
        reply = httpx.get(f"{base}/metrics")
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/plain; version=")
        samples = _samples(reply.text)
        assert samples['treadle_replay_duration_seconds_count{sandbox="wasm"}'] == "1.0"
        assert httpx.get(f"{base}/v1/admin/tenants").status_code == 404  # nothing else


def test_the_metrics_port_answers_503_while_the_database_is_down() -> None:
    def down() -> bytes:
        refused = psycopg.OperationalError("connection refused")
        raise sa.exc.OperationalError("SELECT", {}, refused)

    with _listening(down) as base:
        reply = httpx.get(f"{base}/metrics")
    assert reply.status_code == 503 and reply.headers["retry-after"] == "2"
