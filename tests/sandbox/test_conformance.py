"""One set of workflows, run on every backend: the same statuses, outputs, steps and logs.

Each workflow exists as Python source (run by ``restricted`` and by ``wasm``, CPython in
Wasm) and as a core module (``wasm-module``: ``sandbox/wasm/guest/examples/conformance.c``, built
with Zig, the instance's params choosing the workflow). Every backend replays through a real
pool until the instance settles, with a clock that jumps to each wake-up time.
"""

from __future__ import annotations

from typing import Any

import pytest

from sandbox import Artifact, Done, Failed, SandboxPool, Suspended
from tests.sandbox.harness import SMALL, FakeHost, Instance, artifact, source
from tests.wasm_guests import conformance_module, module_artifact, python_artifact, python_runtime

WORKFLOWS = {
    "steps": """
        from treadle import WorkflowEntrypoint

        class Steps(WorkflowEntrypoint):
            def run(self, event, step):
                print("start")
                a = step.do("a", lambda: 41)

                def add():
                    print("adding one to", a)
                    return a + 1

                b = step.do("b", add)
                return {"b": b}
        """,
    "sleep_and_event": """
        from treadle import WorkflowEntrypoint

        class SleepAndEvent(WorkflowEntrypoint):
            def run(self, event, step):
                step.sleep("nap", 10)
                print("awake")
                got = step.wait_for_event("approval", type="approved", timeout=3600)
                return {"event": got}
        """,
    "wait_timeout": """
        from treadle import WorkflowEntrypoint, WaitTimeout

        class WaitTimeoutWorkflow(WorkflowEntrypoint):
            def run(self, event, step):
                try:
                    step.wait_for_event("approval", type="approved", timeout=60)
                except WaitTimeout:
                    return {"timed_out": True}
                return {"timed_out": False}
        """,
    "failing": """
        from treadle import WorkflowEntrypoint

        class Failing(WorkflowEntrypoint):
            def run(self, event, step):
                def flaky():
                    print("trying")
                    raise ValueError("boom")

                step.do("flaky", flaky)
        """,
    "non_retryable": """
        from treadle import WorkflowEntrypoint, NonRetryableError

        class NonRetryable(WorkflowEntrypoint):
            def run(self, event, step):
                def once():
                    raise NonRetryableError("nope")

                step.do("once", once)
        """,
    "loop": """
        from treadle import WorkflowEntrypoint

        class Loop(WorkflowEntrypoint):
            def run(self, event, step):
                total = 0
                for i in range(3):
                    total += step.do("item", lambda: i * i)
                return {"total": total}
        """,
    # Python only: a core module has no env.fetch in its ABI.
    "fetch": """
        from treadle import WorkflowEntrypoint, StepError

        class Fetch(WorkflowEntrypoint):
            def run(self, event, step):
                def get():
                    return self.env.fetch("https://x/echo", method="POST", body="hi").json()

                echo = step.do("get", get)

                def denied():
                    return self.env.fetch("https://x/refuse/EgressDenied").status

                try:
                    step.do("denied", denied)
                except StepError as exc:
                    return {"echo": echo, "denied": [exc.name, str(exc)]}
        """,
    # Python only: a core module has no env.workflows in its ABI.
    "children": """
        from treadle import WorkflowEntrypoint, StepError

        class Parent(WorkflowEntrypoint):
            def run(self, event, step):
                child = self.env.workflows.create("resize", params={"w": 10})
                named = self.env.workflows.create("resize", id="fixed-id")
                try:
                    self.env.workflows.create("bad name!")
                except ValueError as exc:
                    bad = str(exc)
                try:
                    step.do("nested", lambda: self.env.workflows.create("inner").id)
                except StepError as exc:
                    nested = [exc.name, str(exc)]
                output = child.result()
                try:
                    named.result("named result", timeout=60)
                except StepError as exc:
                    failed = [exc.name, str(exc)]
                try:
                    named.result()
                except StepError as exc:  # kept: no second wait
                    again = str(exc)
                return {
                    "ids": [child.id, named.id], "output": output, "failed": failed,
                    "again": again, "bad": bad, "nested": nested,
                }
        """,
    # Python only: a core module has no rollback handlers in its ABI.
    "saga": """
        from treadle import WorkflowEntrypoint, NonRetryableError

        class Saga(WorkflowEntrypoint):
            def run(self, event, step):
                def unsend():
                    raise NonRetryableError("cannot unsend")

                step.do("notify", lambda: "sent", rollback=unsend)

                def release(ctx):
                    try:
                        step.do("inner", lambda: 1)
                    except Exception as exc:
                        print("inner refused:", exc)
                    return [ctx.step.name, ctx.step.count, ctx.error, ctx.output, ctx.attempt]

                step.do("reserve", lambda: {"seat": 7}, rollback=release)

                def refund(ctx):
                    print("refunding", ctx.output)
                    if ctx.attempt == 1:
                        raise ValueError("busy")
                    return "refunded"

                retry_once = {"retries": {"limit": 1, "delay": "1 second"}}
                step.do("charge", lambda: 30, rollback=refund, rollback_config=retry_once)

                def pay():
                    raise ValueError("declined")

                step.do("pay", pay, retries={"limit": 0})
        """,
    # Terminated with rollback while it sleeps (settle() switches the mode).
    "terminate": """
        from treadle import WorkflowEntrypoint

        class Term(WorkflowEntrypoint):
            def run(self, event, step):
                step.do("a", lambda: 1, rollback=lambda ctx: ["undo", ctx.step.name, ctx.error])
                step.do("b", lambda: 2, rollback=lambda: "undo b")
                try:
                    step.sleep("nap", "1 hour")
                except BaseException:  # the stop comes again from every later step call
                    pass
                step.do("c", lambda: 3, rollback=lambda: "undo c")
                return "done"
        """,
}
PYTHON_ONLY = {"fetch", "children", "saga", "terminate"}
BACKENDS = ("restricted", "wasm", "wasm-module")
EVENT = {"by": "ann"}
CHILD_OUTCOMES = {
    "child.inst-1-resize-1": {"status": "complete", "output": 20, "error": None},
    "child.fixed-id": {
        "status": "errored",
        "output": None,
        "error": {"name": "Boom", "message": "it broke"},
    },
}


def artifact_for(backend: str, scenario: str) -> Artifact:
    text = WORKFLOWS[scenario]
    if backend == "restricted":
        return artifact(text)
    if backend == "wasm":
        python_runtime()
        return python_artifact(source(text))
    return module_artifact(conformance_module())


def settle(pool: SandboxPool, backend: str, scenario: str) -> dict[str, Any]:
    """Replay until the instance settles; what a user sees of it, without timestamps."""
    wf = Instance("", params={"scenario": scenario}, limits=SMALL)
    wf.artifact = artifact_for(backend, scenario)
    logs: list[dict[str, Any]] = []
    for _ in range(20):
        host = FakeHost()
        outcome = pool.replay(backend, wf.artifact, wf.limits, wf.request(), host)
        for records, committed_logs in host.commits:
            wf.apply(records)
            logs += committed_logs
        wf.apply(outcome.records)
        logs += outcome.logs
        if not isinstance(outcome, Suspended):
            break
        if scenario == "terminate" and wf.mode == "run":
            wf.mode = "rollback"
        elif outcome.event_type and scenario == "sleep_and_event":
            wf.send_event(outcome.event_type, EVENT)
        elif outcome.event_type and outcome.event_type.startswith("child."):
            wf.send_event(outcome.event_type, CHILD_OUTCOMES[outcome.event_type])
        elif outcome.wake_at is not None:
            wf.now = max(wf.now, outcome.wake_at)
    else:
        raise AssertionError("the instance did not settle")
    output = outcome.output if isinstance(outcome, Done) else None
    if isinstance(output, dict) and isinstance(output.get("event"), dict):
        output = {"event": {**output["event"], "timestamp": "<time>"}}
    return {
        "status": "complete" if isinstance(outcome, Done) else "errored",
        "output": output,
        "error": outcome.error if isinstance(outcome, Failed) else None,
        "rollback": outcome.rollback if isinstance(outcome, Failed) else None,
        "steps": [_step(record) for record in wf.journal.values()],
        "logs": [(line["step"], line["message"]) for line in logs],
    }


def _step(record: dict[str, Any]) -> dict[str, Any]:
    output = record["output"]
    if isinstance(output, dict) and "timestamp" in output:
        output = {**output, "timestamp": "<time>"}
    return {
        "name": record["name"],
        "count": record["count"],
        "type": record["type"],
        "status": record["status"],
        "output": output,
        "error": record["error"],
        "attempts": [(a["success"], a["error"]) for a in record["attempts"]],
    }


_seen: dict[tuple[str, str], dict[str, Any]] = {}


def untraced(value: Any) -> Any:
    """``value`` without the tracebacks of its errors: a core module's errors have none."""
    if isinstance(value, dict):
        return {k: untraced(v) for k, v in value.items() if k != "traceback"}
    if isinstance(value, list | tuple):
        return type(value)(untraced(v) for v in value)
    return value


def seen(pool: SandboxPool, backend: str, scenario: str) -> dict[str, Any]:
    if (backend, scenario) not in _seen:
        _seen[backend, scenario] = settle(pool, backend, scenario)
    return _seen[backend, scenario]


EXPECTED: dict[str, dict[str, Any]] = {
    "steps": {
        "status": "complete",
        "output": {"b": 42},
        "logs": [(None, "start"), ("b", "adding one to 41")],
    },
    "sleep_and_event": {
        "status": "complete",
        "output": {"event": {"type": "approved", "payload": EVENT, "timestamp": "<time>"}},
    },
    "wait_timeout": {"status": "complete", "output": {"timed_out": True}},
    "failing": {"status": "errored", "error": {"name": "ValueError", "message": "boom"}},
    "non_retryable": {
        "status": "errored",
        "error": {"name": "NonRetryableError", "message": "nope"},
    },
    "loop": {"status": "complete", "output": {"total": 5}},
    "fetch": {
        "status": "complete",
        "output": {
            "echo": {"url": "https://x/echo", "method": "POST", "body": "hi"},
            "denied": ["EgressDenied", "EgressDenied happened"],
        },
    },
    "children": {
        "status": "complete",
        "output": {
            "ids": ["inst-1-resize-1", "fixed-id"],
            "output": 20,
            "failed": ["Boom", "it broke"],
            "again": "it broke",
            "bad": "workflows.create: the workflow name must be at most 64 letters, digits, "
            "'_' and '-', not starting with '-'",
            "nested": [
                "NonRetryableError",
                "steps cannot be nested: env.workflows.create('inner') was called inside the "
                "body of step 'nested'",
            ],
        },
    },
    "saga": {
        "status": "errored",
        "error": {"name": "ValueError", "message": "declined"},
        "rollback": {
            "outcome": "failed",
            "error": {"name": "NonRetryableError", "message": "cannot unsend"},
        },
        "rollbacks": [
            ("rollback:charge", "complete", "refunded", 2),
            (
                "rollback:reserve",
                "complete",
                ["reserve", 1, {"name": "ValueError", "message": "declined"}, {"seat": 7}, 1],
                1,
            ),
            ("rollback:notify", "errored", None, 1),
        ],
    },
    "terminate": {
        "status": "errored",
        "error": {"name": "Terminated", "message": "terminated with rollback"},
        "rollback": {"outcome": "complete", "error": None},
        "rollbacks": [
            ("rollback:b", "complete", "undo b", 1),
            (
                "rollback:a",
                "complete",
                ["undo", "a", {"name": "Terminated", "message": "terminated with rollback"}],
                1,
            ),
        ],
    },
}


@pytest.mark.parametrize("scenario", WORKFLOWS)
def test_the_restricted_backend_does_what_the_workflow_says(
    pool: SandboxPool, scenario: str
) -> None:
    result = untraced(seen(pool, "restricted", scenario))
    expected = EXPECTED[scenario]
    assert result["status"] == expected["status"], result
    if "output" in expected:
        assert result["output"] == expected["output"]
    if "error" in expected:
        assert result["error"] == expected["error"]
    if "rollback" in expected:
        assert result["rollback"] == expected["rollback"]
        rollbacks = [
            (step["name"], step["status"], step["output"], len(step["attempts"]))
            for step in result["steps"]
            if step["type"] == "rollback"
        ]
        assert rollbacks == expected["rollbacks"]
    if scenario == "steps":
        assert result["logs"] == expected["logs"]
    if scenario == "failing":
        # The default retries: 5 after the first attempt, then the step fails for good.
        assert result["steps"][0]["attempts"] == [(False, expected["error"])] * 6
        assert [line for line in result["logs"] if line[1] == "trying"] == [("flaky", "trying")] * 6
        # Python backends (the wasm one is held to the same by the test below) show the frames.
        assert seen(pool, "restricted", scenario)["error"]["traceback"] == [
            {
                "file": "workflow.py",
                "line": 9,
                "function": "run",
                "source": 'step.do("flaky", flaky)',
            },
            {
                "file": "workflow.py",
                "line": 7,
                "function": "flaky",
                "source": 'raise ValueError("boom")',
            },
        ]


@pytest.mark.parametrize(
    ("scenario", "backend"),
    [
        (scenario, backend)
        for scenario in WORKFLOWS
        for backend in ("wasm", "wasm-module")
        if not (backend == "wasm-module" and scenario in PYTHON_ONLY)
    ],
)
def test_every_backend_matches_the_restricted_one(
    pool: SandboxPool, backend: str, scenario: str
) -> None:
    reference = seen(pool, "restricted", scenario)
    result = seen(pool, backend, scenario)
    if backend == "wasm-module":  # the guest's own message, and no frames of Python code
        reference = untraced(reference)
    assert result["status"] == reference["status"]
    assert result["output"] == reference["output"]
    assert result["error"] == reference["error"]
    assert result["rollback"] == reference["rollback"]
    assert result["steps"] == reference["steps"]
    assert result["logs"] == reference["logs"]
