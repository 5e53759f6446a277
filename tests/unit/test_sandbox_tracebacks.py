"""Tracebacks of tenant code: the frames of the tenant's source, bounded, and none of the
platform's (restricted backend in-process, the harness, and what a worker may send)."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox import Failed
from tests.sandbox.harness import Instance, source
from tests.unit.test_sandbox_driver import begin, drive
from treadle.runtime import MAX_FRAMES, MAX_TRACED_ATTEMPTS, clipped_traceback
from treadle.testing import WorkflowTest

ORDER = """
from treadle import WorkflowEntrypoint

class Order(WorkflowEntrypoint):
    def run(self, event, step):
        def price():
            total = event.payload['missing']
            return total
        step.do("price", price, retries={"limit": 1, "delay": 0})
        return "unreachable"
"""
BODY = {
    "file": "workflow.py",
    "line": 6,
    "function": "price",
    "source": "total = event.payload['missing']",
}
CALL = {
    "file": "workflow.py",
    "line": 8,
    "function": "run",
    "source": 'step.do("price", price, retries={"limit": 1, "delay": 0})',
}


def test_a_failed_attempt_and_the_instance_carry_the_tenants_frames_only() -> None:
    wf = Instance(ORDER, params={"items": []})
    result = wf.settle_inline()
    assert result.outcome["t"] == "failed"
    # run() called the step at line 8; the body raised at line 6; no frame of the platform.
    assert result.outcome["error"] == {
        "name": "KeyError",
        "message": "'missing'",
        "traceback": [CALL, BODY],
    }
    attempts = wf.journal[("price", 1)]["attempts"]
    assert [a["error"]["traceback"] for a in attempts] == [[BODY], [BODY]]


def test_the_harness_shows_the_same_frames() -> None:
    result = WorkflowTest.from_source(source(ORDER)).run({"items": []})
    assert result.error is not None and result.error["traceback"] == [CALL, BODY]


def test_a_lambda_is_a_frame_of_the_tenant_and_run_itself_too() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Lam(WorkflowEntrypoint):
            def run(self, event, step):
                step.do("ok", lambda: 1)
                return [1][event.payload]
        """,
        params=5,
    )
    assert wf.inline().outcome["error"]["traceback"] == [
        {"file": "workflow.py", "line": 6, "function": "run", "source": "return [1][event.payload]"}
    ]
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Lam(WorkflowEntrypoint):
            def run(self, event, step):
                return step.do("div", lambda: 1 / 0, retries={"limit": 0})
        """
    )
    frames = wf.settle_inline().outcome["error"]["traceback"]
    assert [(f["line"], f["function"]) for f in frames] == [(5, "run"), (5, "<lambda>")]


def test_deep_recursion_keeps_the_innermost_frames_and_long_lines_are_cut() -> None:
    wf = Instance(
        f"""
        from treadle import WorkflowEntrypoint

        def down(n):
            if n == 0:
                raise ValueError("bottom {"x" * 400}")
            return down(n - 1)

        class Deep(WorkflowEntrypoint):
            def run(self, event, step):
                return down(50)
        """
    )
    frames = wf.inline().outcome["error"]["traceback"]
    assert len(frames) == MAX_FRAMES
    assert frames[-1]["line"] == 5 and frames[-1]["function"] == "down"
    assert len(frames[-1]["source"]) == 200 and frames[-1]["source"].endswith("…")


def test_only_the_latest_attempts_keep_their_traceback() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Flaky(WorkflowEntrypoint):
            def run(self, event, step):
                return step.do("f", lambda: 1 / 0, retries={"limit": 14, "delay": 0})
        """
    )
    wf.settle_inline(max_replays=40)
    attempts = wf.journal[("f", 1)]["attempts"]
    traced = ["traceback" in a["error"] for a in attempts]
    assert len(attempts) == 15 and traced == [False] * 5 + [True] * MAX_TRACED_ATTEMPTS
    assert all(a["error"]["name"] == "ZeroDivisionError" for a in attempts)


FRAME = {"file": "workflow.py", "line": 3, "function": "run", "source": "x"}


@pytest.mark.parametrize(
    "traceback",
    [
        [FRAME] * (MAX_FRAMES + 1),  # more frames than a worker ever sends
        [{**FRAME, "source": "y" * 10_000}],  # a huge source line
        [{**FRAME, "line": 0}],
        [{**FRAME, "line": True}],
        [{**FRAME, "function": None}],
        ["a frame"],
        "Traceback (most recent call last): ...",
        [],
    ],
)
def test_a_worker_sending_a_malformed_or_oversized_traceback_is_refused(traceback: Any) -> None:
    failure = {"name": "KeyError", "message": "x", "traceback": traceback}
    outcome, fake, _ = drive([{"t": "failed", "error": failure, "logs": []}])
    assert isinstance(outcome, Failed) and fake.closed
    assert outcome.error["name"] == "SandboxCrashed"


def test_a_worker_may_not_keep_a_traceback_on_every_attempt() -> None:
    failed = {"name": "E", "message": "x", "traceback": [FRAME]}
    attempts = [{"started_at": 1.0, "ended_at": 1.0, "success": False, "error": failed}] * (
        MAX_TRACED_ATTEMPTS + 1
    )
    record = {"name": "a", "count": 1, "type": "do", "status": "waiting", "output": None,
              "error": None, "attempts": attempts, "wake_at": 2.0, "event_pk": None}  # fmt: skip
    outcome, fake, _ = drive([begin("a"), {"t": "record", "record": record, "logs": []}])
    assert fake.closed
    assert outcome.records[0]["attempts"][-1]["error"]["name"] == "SandboxCrashed"


def test_a_well_formed_traceback_from_a_worker_is_kept_and_cleaned() -> None:
    frames = [{**FRAME, "source": "s = '\x00'"}]
    failure = {"name": "KeyError", "message": "x", "traceback": frames}
    outcome, _, _ = drive([{"t": "failed", "error": failure, "logs": []}])
    assert outcome.error["traceback"] == [{**FRAME, "source": "s = '\ufffd'"}]


def test_clipping_untrusted_frames_keeps_what_fits_and_drops_the_rest() -> None:
    frames = [{**FRAME, "line": n} for n in range(1, 31)]
    clipped = clipped_traceback([*frames, {"file": 1}, "junk", {**FRAME, "source": "z" * 999}])
    assert len(clipped) == MAX_FRAMES - 2  # the last 20 items, of which 2 are not frames
    assert clipped[-1]["source"] == "z" * 199 + "…"
    assert clipped_traceback({"not": "a list"}) == [] and clipped_traceback(None) == []
