"""Unit tests of your own workflows: run one in-process, steps mocked, sleeps skipped.

.. code-block:: python

    from treadle.testing import WorkflowTest

    t = WorkflowTest(Checkout, vars={"region": "eu"})
    t.mock_step("charge card", return_value={"ok": True})
    t.mock_fetch("https://api.example/x", json={"stock": 3})
    t.send_event("approved", {"by": "ann"})
    result = t.run({"items": [{"price": 5}]})
    assert result.status == "complete"

The harness executes ``run()`` the way the engine does — from the top at every wake-up, with
completed steps answered from their records — on a virtual clock. See ``docs/testing.md``.
"""

from __future__ import annotations

from treadle.runtime import Response
from treadle.testing._harness import Limits, WorkflowTest
from treadle.testing._host import HarnessError, ReplayMismatch, StepTimeout
from treadle.testing._result import LogLine, RunResult, StepResult, Steps

__all__ = [
    "HarnessError",
    "Limits",
    "LogLine",
    "ReplayMismatch",
    "Response",
    "RunResult",
    "StepResult",
    "StepTimeout",
    "Steps",
    "WorkflowTest",
]
