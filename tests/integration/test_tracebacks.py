"""Where tenant code failed, through the HTTP API on SQLite and PostgreSQL: the frames of the
workflow's own source (and none of the platform's) on the instance's error, on each failed
attempt and on the live stream's events, for Python on the restricted and the wasm sandbox; a
core Wasm module's own message; and what a hostile guest can make the platform keep."""

from __future__ import annotations

import base64
import json
import textwrap
from typing import Any

import pytest
from httpx import Client

from tests.integration.app import new_tenant, wait_status
from tests.wasm_guests import conformance_module, python_runtime
from treadle.runtime import MAX_FRAMES

BASE = "/v1/workflows"
PRICING = textwrap.dedent(
    """\
    from treadle import WorkflowEntrypoint


    class Pricing(WorkflowEntrypoint):
        def run(self, event, step):
            def price():
                total = event.payload["missing"]
                return total

            return step.do("price", price, retries={"limit": 1, "delay": 0})
    """
)
BODY = {
    "file": "workflow.py",
    "line": 7,
    "function": "price",
    "source": 'total = event.payload["missing"]',
}
CALL = {
    "file": "workflow.py",
    "line": 10,
    "function": "run",
    "source": 'return step.do("price", price, retries={"limit": 1, "delay": 0})',
}
MISSING = {"name": "KeyError", "message": "'missing'"}
# Names of the platform's own files, which no frame may show.
PLATFORM_FILES = ("treadle", "sandbox", "_journal", "_step", "_policy", "_runtime", "<workflow>")


@pytest.fixture
def acme(client: Client) -> dict[str, str]:
    return new_tenant(client, "acme")


def upload(client: Client, headers: dict[str, str], name: str, body: dict[str, str]) -> None:
    reply = client.put(f"{BASE}/{name}", json=body, headers=headers)
    assert reply.status_code == 201, reply.text


def run(client: Client, headers: dict[str, str], name: str, params: Any = None) -> dict[str, Any]:
    body = {"id": "i1", "params": params if params is not None else {}}
    reply = client.post(f"{BASE}/{name}/instances", json=body, headers=headers)
    assert reply.status_code == 201, reply.text
    return wait_status(client, headers, f"{BASE}/{name}/instances/i1", "errored")


def stream(client: Client, headers: dict[str, str], name: str) -> list[dict[str, Any]]:
    """The events of a finished instance's stream (it ends once everything is sent)."""
    body = client.get(f"{BASE}/{name}/instances/i1/stream", headers=headers).text
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


def of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [event["data"] for event in events if event["type"] == kind]


@pytest.mark.parametrize("sandbox", ["restricted", "wasm"])
def test_an_error_in_a_step_shows_the_lines_of_the_workflow_that_raised_it(
    client: Client, acme: dict[str, str], sandbox: str
) -> None:
    if sandbox == "wasm":
        python_runtime()
    upload(client, acme, "pricing", {"source": PRICING, "sandbox": sandbox})
    instance = run(client, acme, "pricing")

    # As Python shows it: where run() called the step, then where the body raised.
    assert instance["error"] == {**MISSING, "traceback": [CALL, BODY]}
    (step,) = instance["steps"]
    assert step["error"] == {**MISSING, "traceback": [BODY]}
    assert [a["error"] for a in step["attempts"]] == [{**MISSING, "traceback": [BODY]}] * 2
    files = json.dumps(instance)
    assert not any(f'"file": "{name}' in files for name in PLATFORM_FILES)

    events = stream(client, acme, "pricing")
    (failed,) = of(events, "attempt.failed")
    assert failed["error"] == {**MISSING, "traceback": [BODY]} and failed["attempts"] == 1
    assert of(events, "step.errored")[0]["error"] == {**MISSING, "traceback": [BODY]}
    assert of(events, "workflow.errored")[0]["error"] == instance["error"]


def test_an_error_in_run_itself_and_a_rollback_attempt_carry_their_frames(
    client: Client, acme: dict[str, str]
) -> None:
    source = textwrap.dedent(
        """\
        from treadle import WorkflowEntrypoint


        class Booking(WorkflowEntrypoint):
            def run(self, event, step):
                def undo():
                    raise RuntimeError("undo failed")

                step.do("book", lambda: 1, rollback=undo, rollback_config={"retries": {"limit": 0}})
                return [0][event.payload["at"]]
        """
    )
    upload(client, acme, "booking", {"source": source, "sandbox": "restricted"})
    instance = run(client, acme, "booking", {"at": 3})
    assert instance["error"] == {
        "name": "IndexError",
        "message": "list index out of range",
        "traceback": [
            {
                "file": "workflow.py",
                "line": 10,
                "function": "run",
                "source": 'return [0][event.payload["at"]]',
            }
        ],
    }
    undo = {
        "name": "RuntimeError",
        "message": "undo failed",
        "traceback": [
            {
                "file": "workflow.py",
                "line": 7,
                "function": "undo",
                "source": 'raise RuntimeError("undo failed")',
            }
        ],
    }
    assert instance["rollback"] == {"outcome": "failed", "error": undo}
    assert of(stream(client, acme, "booking"), "rollback.errored")[0]["error"] == undo


def test_a_core_module_reports_its_own_message_without_frames(
    client: Client, acme: dict[str, str]
) -> None:
    wasm = base64.b64encode(conformance_module()).decode()
    upload(client, acme, "conf", {"wasm_base64": wasm, "sandbox": "wasm"})
    instance = run(client, acme, "conf", {"scenario": "non_retryable"})
    nope = {"name": "NonRetryableError", "message": "nope"}
    assert instance["error"] == nope
    assert [a["error"] for a in instance["steps"][0]["attempts"]] == [nope]
    assert of(stream(client, acme, "conf"), "step.errored")[0]["error"] == nope


HOSTILE = textwrap.dedent(
    """\
    import json
    from treadle import WorkflowEntrypoint
    from treadle_guest import _host


    class Hostile(WorkflowEntrypoint):
        def run(self, event, step):
            def forge():
                frame = {"file": "x" * 5000, "line": 10**15, "function": "f" * 5000,
                         "source": "s" * 20000}
                frames = [frame] * 200 + ["junk", {"file": "a", "line": "7"}]
                failure = {"kind": "Forged", "message": "m", "final": True, "traceback": frames}
                _host.raw("step-fail", json.dumps(failure))
                return 1

            step.do("forge", forge)
    """
)


def test_a_guest_that_forges_a_huge_traceback_gets_it_clipped(
    client: Client, acme: dict[str, str]
) -> None:
    python_runtime()
    upload(client, acme, "hostile", {"source": HOSTILE, "sandbox": "wasm"})
    instance = run(client, acme, "hostile")
    (attempt,) = instance["steps"][0]["attempts"]
    frames = attempt["error"]["traceback"]
    assert attempt["error"]["name"] == "Forged"
    # The last MAX_FRAMES items, of which 2 are not frames; every text cut to its bound.
    assert len(frames) == MAX_FRAMES - 2
    assert frames[0] == {
        "file": "x" * 200,
        "line": 10**7,
        "function": "f" * 200,
        "source": "s" * 199 + "…",
    }
