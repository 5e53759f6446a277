"""The checks made after the chaos. Each returns its findings, one readable line (or block)
each; the test fails on any. Why each is sound is argued in ``test_chaos``'s docstring."""

from __future__ import annotations

import dataclasses
import datetime
import itertools
from typing import Any

from tests.chaos.chaos import POSTGRES, Disruption
from tests.chaos.counter import UNKNOWN_CALLER, Call
from tests.chaos.driver import Pause, SentEvent
from tests.chaos.fleet import LEASE_SECONDS, Exit
from tests.chaos.workload import InstancePlan

# Every instance completes within this long after the chaos ended (or after the test's last
# create, event or resume for it, if later): ten leases, for a takeover and a replay or two.
COMPLETION_BOUND = 30.0
# An event is consumed within this long of arriving at a waiting instance (or of the instance
# starting to wait, if the event came first), however many crashes happen meanwhile.
EVENT_BOUND = 30.0
# A body's result is durable within a lease of the body's end: a commit slower than a lease
# could be fenced out by a takeover, so the engine must not be that slow with the database up.
COMMIT_GRACE = float(LEASE_SECONDS)
# After PostgreSQL accepts connections again, pools may take this long to find out.
RECONNECT_GRACE = 2.0
# After PostgreSQL accepts connections again, the processes may take this long to settle who
# holds what: sessions reconnect with a backoff, liveness locks are retaken, leases run out.
TAKEOVER_GRACE = 10.0
# Stored times have millisecond resolution.
CLOCK_SLACK = 0.002


@dataclasses.dataclass
class Evidence:
    """What the run left behind."""

    plans: dict[str, InstancePlan]
    instances: dict[str, dict[str, Any]]
    calls: dict[str, list[Call]]
    disruptions: list[Disruption]
    exits: list[Exit]
    created: dict[str, float]
    sent: list[SentEvent]
    pauses: list[Pause]
    chaos_ended: float

    def last_action(self, instance: str) -> float:
        own = [e.at for e in self.sent if e.instance == instance]
        own += [p.resumed or p.paused for p in self.pauses if p.instance == instance]
        return max([self.chaos_ended, self.created.get(instance, 0.0), *own])

    def committed(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """The committed ``do`` steps of every instance: tag → (instance id, step)."""
        return {
            f"{i}:{s['name']}:{s['count']}": (i, s)
            for i, instance in self.instances.items()
            for s in instance["steps"]
            if s["type"] == "do" and s["status"] == "complete"
        }

    def killed_at(self, incarnation: str) -> float | None:
        return next((d.at for d in self.disruptions if d.target == incarnation), None)

    def database_down_between(
        self, start: float, end: float, grace: float = RECONNECT_GRACE
    ) -> bool:
        return any(
            d.at <= end and d.done + grace >= start
            for d in self.disruptions
            if d.target == POSTGRES
        )

    def relative(self, when: float) -> str:
        """A time as seconds from the end of the chaos, for reading failures."""
        return f"{when - self.chaos_ended:+.2f}s"


def unfinished(e: Evidence) -> list[str]:
    """Instances not ``complete``: their status, steps, side-effect calls and events."""
    return [
        _describe(e, i) for i, instance in e.instances.items() if instance["status"] != "complete"
    ]


def wrong_outputs(e: Evidence) -> list[str]:
    return [
        f"{i}: output {instance['output']} != expected {e.plans[i].expected}"
        for i, instance in e.instances.items()
        if instance["status"] == "complete" and instance["output"] != e.plans[i].expected
    ]


def reruns_after_commit(e: Evidence) -> list[str]:
    """A committed step whose result is not from the last call of its tag: a body ran after
    the call whose result was committed; and calls of tags no committed step explains."""
    found, committed = [], e.committed()
    for tag, (_, step) in committed.items():
        calls, output = e.calls.get(tag, []), step["output"]
        if not isinstance(output, dict) or output.get("tag") != tag:
            found.append(f"{tag}: the committed result {output} is not an answer for this tag")
        elif output["seq"] != len(calls):
            found.append(
                f"{tag}: the committed result is call {output['seq']} of {len(calls)}: the body"
                f" ran again after the call whose result was committed; {_calls(e, calls)}"
            )
    for tag in sorted(set(e.calls) - set(committed)):
        instance = tag.split(":")[0]
        if e.instances.get(instance, {}).get("status") == "complete":
            found.append(
                f"{tag}: called, but no such step was committed; {_calls(e, e.calls[tag])}"
            )
    return found


def late_commits(e: Evidence) -> list[str]:
    """A body that had finished (its call answered) long before its process was killed, with
    the database up all along, must have had its result committed: it must not run again.

    "All along" starts when the body started: a commit of another branch of its fan-out that
    failed during an outage ends the replay, and a body still running then cannot be recorded
    by it (it runs again, as any body in flight at a crash may)."""
    found = []
    for tag, calls in e.calls.items():
        for call, after in itertools.pairwise(calls):
            killed = e.killed_at(call.caller)
            if call.failing or call.answered is None or killed is None:
                continue
            waited = killed - call.answered
            if (
                waited >= COMMIT_GRACE
                and after.started > killed
                and not e.database_down_between(call.started, killed)
            ):
                found.append(
                    f"{tag}: the body of call {call.seq} ended {waited:.1f}s before {call.caller}"
                    f" was killed, the database up, yet its result was not committed and the"
                    f" body ran again; {_calls(e, calls)}"
                )
    return found


def unexplained_reruns(e: Evidence) -> list[str]:
    """Bodies run again although their process was not killed and the database was up (and
    had been for 10 s): the instance was taken from a live, healthy process, which happens
    only if it stopped renewing its lease (renewed every second, 3 s long), e.g. while a
    pause waits for the running step."""
    found = []
    for tag, calls in e.calls.items():
        for call, after in itertools.pairwise(calls):
            killed = e.killed_at(call.caller)
            if (
                call.failing
                or call.caller == UNKNOWN_CALLER
                or (killed is not None and killed <= after.started)
                or e.database_down_between(call.started, after.started, TAKEOVER_GRACE)
            ):
                continue
            found.append(f"{tag}: call {after.seq} without a crash; {_calls(e, calls)}")
    return found


def paused_progress(e: Evidence) -> list[str]:
    """No step body starts while its instance is paused: between the answer that accepted the
    pause and the resume (the step that was running when the pause came may finish)."""
    found = []
    for pause in e.pauses:
        end = pause.resumed if pause.resumed is not None else float("inf")
        for tag, calls in e.calls.items():
            if tag.split(":")[0] == pause.instance and pause.paused < calls[0].started < end:
                found.append(
                    f"{tag}: started at {e.relative(calls[0].started)} while paused (pause"
                    f" accepted at {e.relative(pause.paused)}, {pause.status}; resumed at"
                    f" {pause.resumed and e.relative(pause.resumed)})"
                )
    return found


def short_sleeps(e: Evidence) -> list[str]:
    """``sleeper``: the step after the nap starts no sooner than ``nap`` seconds after the
    body before it was answered (the sleep cannot begin before that body returned)."""
    found = []
    for i, p in e.plans.items():
        before, after = e.calls.get(f"{i}:before:1"), e.calls.get(f"{i}:after:1")
        if p.workflow != "sleeper" or not before or not after:
            continue
        ended = before[-1].answered
        if ended is not None and after[0].started + CLOCK_SLACK < ended + p.params["nap"]:
            slept = after[0].started - ended
            found.append(f"{i}: slept {slept:.3f}s of a {p.params['nap']}s nap")
    return found


def lost_events(e: Evidence) -> list[str]:
    """Every event sent to a completed waiter is the one its wait returned."""
    found = []
    for i, p in e.plans.items():
        instance = e.instances.get(i, {})
        if p.workflow != "waiter" or instance.get("status") != "complete":
            continue
        for event in p.events:
            got = _step(instance, event.type)
            if got is None or got["output"] is None or got["output"]["payload"] != event.payload:
                found.append(
                    f"{i}: the wait for {event.type} returned {got and got['output']}, not the"
                    f" event sent ({event.mode}): {event.payload}"
                )
    return found


def event_latencies(e: Evidence) -> dict[str, float]:
    """``<instance>:<wait>`` → seconds from the moment both the event and the waiting
    instance were there to the first call of the step after the wait."""
    found = {}
    for i, p in e.plans.items():
        instance = e.instances.get(i, {})
        if p.workflow != "waiter" or instance.get("status") != "complete":
            continue
        for wait, before, after in (("first", "open", "middle"), ("second", "middle", "close")):
            step = _step(instance, wait)
            ran, woke = e.calls.get(f"{i}:{before}:1"), e.calls.get(f"{i}:{after}:1")
            if step is None or not step["output"] or not ran or not woke:
                continue  # reported by the checks of outputs and side effects
            began = max(epoch(step["output"]["timestamp"]), ran[-1].answered or 0.0)
            found[f"{i}:{wait}"] = woke[0].started - began
    return found


def late_events(e: Evidence) -> list[str]:
    return [
        f"{wait}: the event was consumed {seconds:.1f}s after it could have been (bound"
        f" {EVENT_BOUND:.0f}s); {_describe(e, wait.split(':')[0])}"
        for wait, seconds in event_latencies(e).items()
        if seconds > EVENT_BOUND
    ]


def late_instances(e: Evidence) -> list[str]:
    found = []
    for i, instance in e.instances.items():
        if instance["status"] != "complete":
            continue
        late = epoch(instance["ended_at"]) - e.last_action(i)
        if late > COMPLETION_BOUND:
            found.append(
                f"{i}: completed {late:.1f}s after the chaos ended or its last create, event or"
                f" resume"
                f" (bound {COMPLETION_BOUND:.0f}s); {_describe(e, i)}"
            )
    return found


def self_exits(e: Evidence) -> list[str]:
    return [
        f"{x.incarnation} exited on its own with code {x.code} at {e.relative(x.at)}"
        for x in e.exits
        if not x.killed
    ]


def _describe(e: Evidence, i: str) -> str:
    instance, p = e.instances[i], e.plans[i]
    lines = [
        f"{i} ({p.workflow}) status={instance['status']} error={instance['error']}"
        f" created={e.relative(e.created.get(i, 0.0))}"
        f" ended={instance['ended_at'] and e.relative(epoch(instance['ended_at']))}"
        f" params={ {k: v for k, v in p.params.items() if k != 'base'} }"
    ]
    for s in instance["steps"]:
        tag = f"{i}:{s['name']}:{s['count']}"
        wake = s["wake_at"] and e.relative(epoch(s["wake_at"]))
        attempts = [
            f"{'ok' if a['success'] else a['error'] and a['error'].get('message')}"
            for a in s["attempts"]
        ]
        lines.append(
            f"    step {s['name']}#{s['count']} {s['type']} {s['status']} wake_at={wake}"
            f" attempts={attempts} output={s['output']}"
            + (f"; {_calls(e, e.calls[tag])}" if tag in e.calls else "")
        )
    lines += [
        f"    event {x.type} ({x.mode}) accepted at {e.relative(x.at)}"
        for x in e.sent
        if x.instance == i
    ]
    lines += [
        f"    pause accepted at {e.relative(x.paused)} ({x.status}), resume sent at"
        f" {x.resumed and e.relative(x.resumed)}"
        for x in e.pauses
        if x.instance == i
    ]
    return "\n".join(lines)


def _calls(e: Evidence, calls: list[Call]) -> str:
    shown = [
        f"#{c.seq} {c.caller} {e.relative(c.started)}"
        f"..{'gone' if c.answered is None else e.relative(c.answered)}"
        + (" (planned failure)" if c.failing else "")
        for c in calls
    ]
    return "calls: " + ", ".join(shown)


def _step(instance: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((s for s in instance["steps"] if s["name"] == name), None)


def epoch(iso: str) -> float:
    """An ISO 8601 time of the API as epoch seconds."""
    return datetime.datetime.fromisoformat(iso).timestamp()
