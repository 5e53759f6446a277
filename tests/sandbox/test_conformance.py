"""One set of workflows, run on every backend: the same statuses, outputs, steps and logs.

Each workflow exists as Python source (run by ``restricted`` and by ``wasm``, CPython in
Wasm) and as a core module (``wasm-module``: ``sandbox/guest/examples/conformance.c``, built
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
}
PYTHON_ONLY = {"fetch"}
BACKENDS = ("restricted", "wasm", "wasm-module")
EVENT = {"by": "ann"}


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
        if outcome.event_type and scenario == "sleep_and_event":
            wf.send_event(outcome.event_type, EVENT)
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
}


@pytest.mark.parametrize("scenario", WORKFLOWS)
def test_the_restricted_backend_does_what_the_workflow_says(
    pool: SandboxPool, scenario: str
) -> None:
    result = seen(pool, "restricted", scenario)
    expected = EXPECTED[scenario]
    assert result["status"] == expected["status"], result
    if "output" in expected:
        assert result["output"] == expected["output"]
    if "error" in expected:
        assert result["error"] == expected["error"]
    if scenario == "steps":
        assert result["logs"] == expected["logs"]
    if scenario == "failing":
        # The default retries: 5 after the first attempt, then the step fails for good.
        assert result["steps"][0]["attempts"] == [(False, expected["error"])] * 6
        assert [line for line in result["logs"] if line[1] == "trying"] == [("flaky", "trying")] * 6


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
    assert result["status"] == reference["status"]
    assert result["output"] == reference["output"]
    assert result["error"] == reference["error"]
    assert result["steps"] == reference["steps"]
    assert result["logs"] == reference["logs"]
