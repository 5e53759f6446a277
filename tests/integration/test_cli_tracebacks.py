"""``treadle run --follow`` and ``treadle instances get`` show where the workflow's code failed:
each failed attempt's error, and the frames of the code as Python prints them."""

from __future__ import annotations

import time
from pathlib import Path

from tests.integration.test_client_cli import (  # noqa: F401 - the fixtures these tests use
    Run,
    acme,
    config_file,
    treadle,
)
from tests.integration.test_tracebacks import PRICING

FRAMES = [
    '  File "workflow.py", line 10, in run',
    '    return step.do("price", price, retries={"limit": 1, "delay": 0})',
    '  File "workflow.py", line 7, in price',
    '    total = event.payload["missing"]',
]


def test_follow_prints_each_failed_attempt_with_its_error_and_frames(
    acme: Run,  # noqa: F811
    tmp_path: Path,
) -> None:
    (tmp_path / "pricing.py").write_text(PRICING)
    assert acme("deploy", str(tmp_path / "pricing.py"))[0] == 0
    code, out, err = acme("run", "pricing", "--id", "p1", "--params", "{}", "--follow")
    assert code == 1 and "is errored (KeyError: 'missing')" in err
    lines = out.splitlines()
    failed = next(i for i, line in enumerate(lines) if "attempt.failed" in line)
    assert lines[failed].endswith("attempt.failed     price (attempt 1): KeyError: 'missing'")
    assert lines[failed + 1 : failed + 3] == FRAMES[2:]  # where the body raised
    errored = next(i for i, line in enumerate(lines) if "workflow.errored" in line)
    assert lines[errored].endswith("workflow.errored   KeyError: 'missing'")
    assert lines[errored + 1 : errored + 5] == FRAMES

    code, out, _ = acme("instances", "get", "pricing", "p1")
    assert code == 0
    assert "error:     KeyError: 'missing'" in out
    assert "\n".join(["Traceback (most recent call last):", *FRAMES, "KeyError: 'missing'"]) in out


def test_instances_get_shows_why_a_step_is_retrying(acme: Run, tmp_path: Path) -> None:  # noqa: F811
    retries = ('retries={"limit": 1, "delay": 0}', 'retries={"limit": 3, "delay": 3600}')
    later = PRICING.replace(*retries)
    (tmp_path / "pricing.py").write_text(later)
    assert acme("deploy", str(tmp_path / "pricing.py"))[0] == 0
    assert acme("run", "pricing", "--id", "p2", "--params", "{}")[0] == 0
    deadline = time.monotonic() + 15
    out = ""
    while "retrying after" not in out and time.monotonic() < deadline:
        time.sleep(0.1)
        code, out, _ = acme("instances", "get", "pricing", "p2")
        assert code == 0, out
    assert "error:     -" in out  # the run itself has not failed
    assert "retrying after KeyError: 'missing'" in out  # the step's row
    shown = ["step 'price' is retrying; attempt 1 failed:", *FRAMES[2:], "KeyError: 'missing'"]
    assert "\n".join(shown) in out
