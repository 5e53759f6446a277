"""The figures of a chaos run, for ``bench/RESULTS.md``: what was done to the platform and how
quickly it recovered."""

from __future__ import annotations

import collections
import itertools
import statistics
from typing import Any

from tests.chaos.chaos import POSTGRES
from tests.chaos.verdict import Evidence, epoch, event_latencies


def figures(e: Evidence) -> dict[str, Any]:
    kills = [d for d in e.disruptions if d.target != POSTGRES]
    outages = [d.done - d.at for d in e.disruptions if d.target == POSTGRES]
    ended = [epoch(i["ended_at"]) for i in e.instances.values() if i["ended_at"]]
    latencies = event_latencies(e)
    takeovers = _takeovers(e)
    return {
        "instances": len(e.instances),
        "instances_by_workflow": dict(collections.Counter(p.workflow for p in e.plans.values())),
        "complete": sum(i["status"] == "complete" for i in e.instances.values()),
        "steps_committed": _steps(e),
        "side_effect_calls": sum(len(c) for c in e.calls.values()),
        "planned_failed_attempts": sum(c.failing for calls in e.calls.values() for c in calls),
        "reruns_of_in_flight_bodies": _reruns(e),
        "kills": len(kills),
        "kills_by_process": dict(collections.Counter(d.target.split("#")[0] for d in kills)),
        "postgres_restarts": len(outages),
        "postgres_outage_seconds": [round(s, 2) for s in outages],
        "exits_on_their_own": sum(not x.killed for x in e.exits),
        "events_sent": len(e.sent),
        "pauses": len(e.pauses),
        "chaos_seconds": round(e.chaos_ended - min(d.at for d in e.disruptions), 1),
        "last_completion_after_chaos_ended_s": round(max(ended) - e.chaos_ended, 2)
        if ended
        else None,
        "takeover_after_kill_s": _spread(takeovers),
        "slowest_recovery_s": round(max(takeovers), 2) if takeovers else None,
        "event_delivery_s": _spread(list(latencies.values())),
    }


def _steps(e: Evidence) -> dict[str, int]:
    kinds = collections.Counter(
        s["type"] for i in e.instances.values() for s in i["steps"] if s["status"] == "complete"
    )
    return dict(sorted(kinds.items()))


def _reruns(e: Evidence) -> int:
    """Calls beyond the committed one and the planned failures: bodies that were in flight
    (or finished but not yet committed) when their process or the database went down."""
    planned = {p.id: p.params.get("fails", 0) for p in e.plans.values()}
    total = 0
    for tag, calls in e.calls.items():
        failing = sum(c.failing for c in calls)
        total += len(calls) - 1 - min(failing, planned[tag.split(":")[0]])
    return total


def _takeovers(e: Evidence) -> list[float]:
    """For each body interrupted by a kill of its process: seconds from the kill to the next
    run of the body, by whichever process took the instance over."""
    found = []
    for calls in e.calls.values():
        for call, after in itertools.pairwise(calls):
            killed = e.killed_at(call.caller)
            if not call.failing and killed is not None and call.started <= killed < after.started:
                found.append(after.started - killed)
    return found


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "median": round(statistics.median(values), 2),
        "max": round(max(values), 2),
        "count": len(values),
    }
