"""``GET /metrics`` in the Prometheus text format, from :meth:`engine.Engine.stats`."""

from __future__ import annotations

from engine import STATUSES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_HELP = {
    "commits": "Write transactions this process committed to the database.",
    "replays": "Replays of workflow instances this process ran.",
    "steps": "Step results this process committed.",
}


def render(stats: dict[str, int | float]) -> str:
    """Counters of this process as ``treadle_<name>_total``; instances of the whole database
    by status as the gauge ``treadle_instances{status=...}``."""
    lines: list[str] = []
    for name, value in sorted(stats.items()):
        if name.startswith("instances_"):
            continue
        metric = f"treadle_{name}_total"
        lines += [
            f"# HELP {metric} {_HELP.get(name, name.replace('_', ' ').capitalize() + '.')}",
            f"# TYPE {metric} counter",
            f"{metric} {_number(value)}",
        ]
    lines += [
        "# HELP treadle_instances Workflow instances in the database, by status.",
        "# TYPE treadle_instances gauge",
    ]
    statuses = list(STATUSES) + sorted(
        s
        for s in (k.removeprefix("instances_") for k in stats if k.startswith("instances_"))
        if s not in STATUSES
    )
    for status in statuses:
        value = stats.get(f"instances_{status}", 0)
        lines.append(f'treadle_instances{{status="{status}"}} {_number(value)}')
    return "\n".join(lines) + "\n"


def _number(value: int | float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
