"""The mixed workload: five workflows, and a seeded plan of instances and events.

Every step body calls the side-effect counter with its idempotency key as the tag and returns
the counter's answer ``{"tag", "seq", "v"}``. ``v`` is computed from the params and earlier
step results, so each workflow's output is a function of its params and event payloads only:
the plan knows it exactly. ``seq`` varies with re-runs and appears only in step results.

- ``sequence``: 3-5 steps of one name in a loop, each value built on the previous one; a
  third of them are paused while their second step (4 s long) runs, and resumed 1-3 s later;
- ``sleeper``: a step, ``step.sleep`` of 1-2 s, a step;
- ``waiter``: a step, a wait for ``first``, a step, a wait for ``second``, a step; each event
  is sent right after the create (buffered before its wait), after a random delay, as the
  wait begins (just after the body before it returned), or (the first) once the instance is
  seen waiting. Waits time out after an hour, so a lost wake-up shows as a stuck instance;
- ``flaky``: a step whose first 1-2 attempts fail on purpose, retried after 1 s;
- ``fanout``: three ``concurrent=True`` branches of different lengths (up to 5 s) and a step
  that depends on all three.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

HELPER = """
from treadle import WorkflowEntrypoint


def hit(env, base, ctx, value, seconds=0, fail=False):
    url = base + "/hit?tag=" + ctx.idempotency_key + "&v=" + str(value) + "&s=" + str(seconds)
    if fail:
        url = url + "&fail=1"
    return env.fetch(url).json()
"""

SOURCES = {
    "sequence": """
class Sequence(WorkflowEntrypoint):
    def run(self, event, step):
        p = event.payload
        values = [p["x"]]
        for i in range(p["n"]):
            seconds = p["second_step_s"] if i == 1 else p["s"]
            def add(ctx):
                return hit(self.env, p["base"], ctx, (values[-1] * 3 + i) % 1000, seconds)
            values.append(step.do("add", add)["v"])
        return {"values": values[1:]}
""",
    "sleeper": """
class Sleeper(WorkflowEntrypoint):
    def run(self, event, step):
        p = event.payload
        before = step.do("before", lambda ctx: hit(self.env, p["base"], ctx, p["x"], p["s"]))
        step.sleep("nap", p["nap"])
        after = step.do("after", lambda ctx: hit(self.env, p["base"], ctx, before["v"] + p["nap"]))
        return {"before": before["v"], "after": after["v"]}
""",
    "waiter": """
class Waiter(WorkflowEntrypoint):
    def run(self, event, step):
        p = event.payload
        opened = step.do("open", lambda ctx: hit(self.env, p["base"], ctx, p["x"], p["s"]))
        first = step.wait_for_event("first", type="first", timeout="1 hour")["payload"]
        middle = step.do(
            "middle", lambda ctx: hit(self.env, p["base"], ctx, opened["v"] + first["n"], p["s"])
        )
        second = step.wait_for_event("second", type="second", timeout="1 hour")["payload"]
        closed = step.do(
            "close", lambda ctx: hit(self.env, p["base"], ctx, middle["v"] + second["n"])
        )
        return {"first": first["token"], "second": second["token"], "total": closed["v"]}
""",
    "flaky": """
class Flaky(WorkflowEntrypoint):
    def run(self, event, step):
        p = event.payload
        prepared = step.do("prepare", lambda ctx: hit(self.env, p["base"], ctx, p["x"]))

        def charge(ctx):
            failing = ctx.attempt <= p["fails"]
            answer = hit(self.env, p["base"], ctx, prepared["v"] * 2, p["s"], failing)
            if failing:
                raise RuntimeError("planned failure of attempt " + str(ctx.attempt))
            answer["attempt"] = ctx.attempt
            return answer

        retries = {"limit": 8, "delay": "1 second", "backoff": "constant"}
        charged = step.do("charge", charge, retries=retries)
        done = step.do("finish", lambda ctx: hit(self.env, p["base"], ctx, charged["v"] + 1))
        return {"prepare": prepared["v"], "charge": charged["v"], "finish": done["v"]}
""",
    "fanout": """
class Fanout(WorkflowEntrypoint):
    def run(self, event, step):
        p = event.payload

        @step.do("quick", concurrent=True)
        def quick(ctx):
            return hit(self.env, p["base"], ctx, p["x"])

        @step.do("medium", concurrent=True)
        def medium(ctx):
            return hit(self.env, p["base"], ctx, p["x"] + 1, 1)

        @step.do("slow", concurrent=True)
        def slow(ctx):
            return hit(self.env, p["base"], ctx, p["x"] + 2, p["slow"])

        @step.do("join", depends=[quick, medium, slow])
        def join(ctx, quick, medium, slow):
            return hit(self.env, p["base"], ctx, quick["v"] + medium["v"] + slow["v"])

        total = join()["v"]
        return {"quick": quick()["v"], "medium": medium()["v"], "slow": slow()["v"], "join": total}
""",
}

# Instances of each workflow: about 200 in all, created over CREATE_SECONDS.
COUNTS = {"sequence": 50, "sleeper": 35, "waiter": 50, "flaky": 30, "fanout": 35}
CREATE_SECONDS = 56.0
EVENT_DELAY_SECONDS = 8.0
WHEN_WAITING = "when waiting"
# Sent within 0.1 s of the answer to the body before the wait: while the instance commits its
# move into the wait, the moment a lost wake-up would happen.
AS_WAIT_BEGINS = "as the wait begins"
# The list of instances does not say which event a waiting instance waits for, so only the
# first event is sent on seeing the instance wait.
_FIRST_MODES = ["right after create", "after", WHEN_WAITING, AS_WAIT_BEGINS]
_SECOND_MODES = ["right after create", "after", AS_WAIT_BEGINS]
_BEFORE = {"first": "open", "second": "middle"}


@dataclasses.dataclass(frozen=True)
class EventPlan:
    """When the event is sent (``mode`` says it in words): ``delay`` seconds after the create,
    or after the first answer to ``after_step``'s body (the step before the wait), or (mode
    ``when waiting``) once the instance is listed as waiting."""

    type: str
    payload: dict[str, Any]
    mode: str
    delay: float = 0.0
    after_step: str | None = None


@dataclasses.dataclass(frozen=True)
class PausePlan:
    """Pause the instance as soon as the body of step ``tag_step`` calls the counter; resume
    it ``resume_after`` seconds later."""

    tag_step: str
    resume_after: float


@dataclasses.dataclass(frozen=True)
class InstancePlan:
    workflow: str
    id: str
    params: dict[str, Any]
    expected: dict[str, Any]
    create_at: float  # seconds after the workload starts
    events: tuple[EventPlan, ...] = ()
    pause: PausePlan | None = None


def plan(rng: random.Random, base: str) -> list[InstancePlan]:
    """The instances, in creation order."""
    made = [
        _PLANNERS[workflow](rng, f"{workflow}-{i:03d}", {"base": base, "x": rng.randrange(1000)})
        for workflow, count in COUNTS.items()
        for i in range(count)
    ]
    rng.shuffle(made)
    step = CREATE_SECONDS / len(made)
    return [dataclasses.replace(p, create_at=i * step) for i, p in enumerate(made)]


def _sequence(rng: random.Random, name: str, params: dict[str, Any]) -> InstancePlan:
    params |= {"n": rng.randint(3, 5), "s": rng.choice([0, 0, 0.2, 0.5])}
    pause = None
    if rng.random() < 1 / 3:
        pause = PausePlan("add:2", round(rng.uniform(1.0, 3.0), 2))
    params["second_step_s"] = 4 if pause else params["s"]
    values = [params["x"]]
    for i in range(params["n"]):
        values.append((values[-1] * 3 + i) % 1000)
    return InstancePlan("sequence", name, params, {"values": values[1:]}, 0.0, pause=pause)


def _sleeper(rng: random.Random, name: str, params: dict[str, Any]) -> InstancePlan:
    params |= {"nap": rng.choice([1, 2]), "s": rng.choice([0, 0.3])}
    expected = {"before": params["x"], "after": params["x"] + params["nap"]}
    return InstancePlan("sleeper", name, params, expected, 0.0)


def _waiter(rng: random.Random, name: str, params: dict[str, Any]) -> InstancePlan:
    params |= {"s": rng.choice([0, 0.2, 0.5])}
    events = (_event(rng, name, "first", _FIRST_MODES), _event(rng, name, "second", _SECOND_MODES))
    total = params["x"] + events[0].payload["n"] + events[1].payload["n"]
    expected = {
        "first": events[0].payload["token"],
        "second": events[1].payload["token"],
        "total": total,
    }
    return InstancePlan("waiter", name, params, expected, 0.0, events)


def _event(rng: random.Random, name: str, kind: str, modes: list[str]) -> EventPlan:
    payload = {"token": f"{name}-{kind}-{rng.getrandbits(32):08x}", "n": rng.randrange(1000)}
    mode = rng.choice(modes)
    if mode == "after":
        delay = round(rng.uniform(0.0, EVENT_DELAY_SECONDS), 2)
        return EventPlan(kind, payload, f"{delay} s after the create", delay)
    if mode == AS_WAIT_BEGINS:
        delay, before = round(rng.uniform(0.0, 0.1), 3), _BEFORE[kind]
        label = f"{mode}: {delay * 1000:.0f} ms after {before} answered"
        return EventPlan(kind, payload, label, delay, before)
    return EventPlan(kind, payload, mode)


def _flaky(rng: random.Random, name: str, params: dict[str, Any]) -> InstancePlan:
    params |= {"fails": rng.randint(1, 2), "s": rng.choice([0, 0.3])}
    x = params["x"]
    return InstancePlan(
        "flaky", name, params, {"prepare": x, "charge": 2 * x, "finish": 2 * x + 1}, 0
    )


def _fanout(rng: random.Random, name: str, params: dict[str, Any]) -> InstancePlan:
    params |= {"slow": rng.choice([3, 4, 5])}
    x = params["x"]
    expected = {"quick": x, "medium": x + 1, "slow": x + 2, "join": 3 * x + 3}
    return InstancePlan("fanout", name, params, expected, 0.0)


_PLANNERS = {
    "sequence": _sequence,
    "sleeper": _sleeper,
    "waiter": _waiter,
    "flaky": _flaky,
    "fanout": _fanout,
}


def source(workflow: str) -> str:
    return HELPER + SOURCES[workflow]
