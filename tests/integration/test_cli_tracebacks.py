"""``treadle run --follow`` and ``treadle instances get`` show where the workflow's code failed:
each failed attempt's error, and the frames of the code as Python prints them."""

from __future__ import annotations

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
