"""``/metrics`` text, from engine statistics, and the listener that serves it without
credentials."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import httpx
import psycopg
import sqlalchemy as sa

from dispatcher import render_metrics
from dispatcher._exporter import MetricsListener
from engine import STATUSES


def _samples(text: str) -> dict[str, str]:
    return dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))


def test_counters_and_instances_by_status() -> None:
    text = render_metrics({"commits": 12, "steps": 30, "replays": 7, "instances_complete": 3})
    samples = _samples(text)
    assert samples["treadle_commits_total"] == "12"
    assert samples["treadle_steps_total"] == "30"
    assert samples["treadle_replays_total"] == "7"
    assert samples['treadle_instances{status="complete"}'] == "3"
    for status in STATUSES:  # every status is there, zero or not
        assert f'treadle_instances{{status="{status}"}}' in samples
    assert "# TYPE treadle_commits_total counter" in text
    assert "# TYPE treadle_instances gauge" in text
    assert text.endswith("\n")


def test_fractional_values_keep_their_fraction() -> None:
    assert _samples(render_metrics({"busy_seconds": 1.5}))["treadle_busy_seconds_total"] == "1.5"


# -- the listener of --metrics-port -------------------------------------------------------------


@contextlib.contextmanager
def _listening(stats: Callable[[], dict[str, int | float]]) -> Iterator[str]:
    listener = MetricsListener(stats, "127.0.0.1", 0)
    listener.start()
    try:
        yield f"http://127.0.0.1:{listener.port}"
    finally:
        listener.close()


def test_the_metrics_port_serves_the_metrics_without_credentials() -> None:
    with _listening(lambda: {"commits": 4, "instances_running": 2}) as base:
        reply = httpx.get(f"{base}/metrics")
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert _samples(reply.text)["treadle_commits_total"] == "4"
        assert _samples(reply.text)['treadle_instances{status="running"}'] == "2"
        assert httpx.get(f"{base}/v1/admin/tenants").status_code == 404  # nothing else


def test_the_metrics_port_answers_503_while_the_database_is_down() -> None:
    def down() -> dict[str, int | float]:
        refused = psycopg.OperationalError("connection refused")
        raise sa.exc.OperationalError("SELECT", {}, refused)

    with _listening(down) as base:
        reply = httpx.get(f"{base}/metrics")
    assert reply.status_code == 503 and reply.headers["retry-after"] == "2"
