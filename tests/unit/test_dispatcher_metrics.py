"""``/metrics`` text, from engine statistics."""

from __future__ import annotations

from dispatcher import render_metrics
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
