"""Escape attempts through a real pool, and the OS boundary around worker processes."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from sandbox import Failed, SandboxPool
from tests.sandbox.conftest import SECRET
from tests.sandbox.harness import SMALL, Instance, alongside, artifact, idle_pids
from treadle.errors import CodeInvalid

PROBE = """
import json, datetime, collections
from treadle import WorkflowEntrypoint

class Probe(WorkflowEntrypoint):
    def run(self, event, step):
{body}
        return "escaped"
"""


def probe(body: str) -> str:
    return PROBE.format(body=textwrap.indent(textwrap.dedent(body).strip(), " " * 8))


RUN_TIME = {
    "open /etc/passwd": "return open('/etc/passwd').read()",
    "dunder walk": "return getattr(getattr(event, '__cl' + 'ass__'), '__subcl' + 'asses__')()",
    "format string attribute walk": "return '{0.__init__.__globals__}'.format(step)",
    "gi_frame": "return getattr(getattr((x for x in [1]), 'gi_' + 'frame'), 'f_glo' + 'bals')",
    "tb_frame": (
        "try:\n    1 / 0\nexcept Exception as e:\n"
        "    return getattr(getattr(e, '__trace' + 'back__'), 'tb_frame')"
    ),
    "a real module behind a facade": "return datetime.sys.modules['os'].environ['" + SECRET + "']",
    "type() of a builtin": "return type(len)",
    "environment through json": "return getattr(json, 'decoder')",
}


@pytest.mark.parametrize("body", list(RUN_TIME.values()), ids=list(RUN_TIME))
def test_run_time_escapes_end_as_errors(pool: SandboxPool, body: str) -> None:
    wf = Instance(probe(body))
    outcome = alongside(pool, lambda: wf.through(pool, "attacker"))
    assert isinstance(outcome, Failed), outcome
    assert outcome.error["name"] in {"AttributeError", "NameError"}
    assert "hunter2" not in str(outcome)


COMPILE_TIME = {
    "import os": "import os\nreturn os.environ",
    "import subprocess": "import subprocess",
    "dunder attribute": "return event.__class__.__mro__",
    "gi_frame": "return (x for x in []).gi_frame",
    "dunder import": "return __import__('os')",
}


@pytest.mark.parametrize("body", list(COMPILE_TIME.values()), ids=list(COMPILE_TIME))
def test_compile_time_escapes_are_refused_at_upload_and_at_run_time(
    pool: SandboxPool, body: str
) -> None:
    unchecked = artifact(probe(body))
    with pytest.raises(CodeInvalid) as caught:
        pool.validate("attacker", unchecked)
    assert all(p["line"] >= 6 for p in caught.value.problems)
    wf = Instance(probe(body))  # never validated: the worker refuses to compile it too
    outcome = wf.through(pool, "attacker")
    assert isinstance(outcome, Failed) and outcome.error["name"] == "CodeInvalid"


def test_a_compiler_bomb_is_refused_without_hurting_the_server(pool: SandboxPool) -> None:
    bombs = ["x = " + "[" * 100000 + "]" * 100000, "x = " + "+".join(["1"] * 300000)]
    for bomb in bombs:
        with pytest.raises(CodeInvalid):
            alongside(pool, lambda bomb=bomb: pool.validate("attacker", artifact(bomb)))  # type: ignore[misc]


def test_an_endless_module_body_is_refused_at_validation(pool: SandboxPool) -> None:
    endless = artifact(probe("pass") + "\nwhile True:\n    pass\n")
    with pytest.raises(CodeInvalid) as caught:
        alongside(pool, lambda: pool.validate("attacker", endless, SMALL))
    (problem,) = caught.value.problems
    assert "CPU time limit exceeded (step_cpu_ms=1000)" in problem["message"]


def _proc(pid: int, name: str) -> str:
    return Path(f"/proc/{pid}/{name}").read_text(errors="replace")


def test_workers_run_without_secrets_privileges_or_network(pool: SandboxPool) -> None:
    Instance(probe("pass")).through(pool, "inspected")
    (pid,) = idle_pids(pool, "inspected")
    zygote = pool._spawner._process.pid  # type: ignore[union-attr]
    for process in (zygote, pid):
        environment = set(_proc(process, "environ").split("\0")) - {""}
        assert SECRET in os.environ and not any(SECRET in entry for entry in environment)
        # TREADLE_CACHE_DIR: where the Wasm runtime is cached (a path, not a secret).
        names = {entry.split("=")[0] for entry in environment}
        assert names <= {"PATH", "LANG", "TREADLE_CACHE_DIR"}
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    assert sorted(os.listdir(f"/proc/{pid}/fd")) == ["0", "1", "2", "3"]
    limits = _proc(pid, "limits")
    assert f"Max address space         {256 << 20}" in limits
    assert "Max core file size        0" in limits
    assert "Max file size             0" in limits
    if os.getuid() == 0:
        uids = next(line for line in _proc(pid, "status").splitlines() if line.startswith("Uid:"))
        assert uids.split()[1:] == ["65534"] * 4  # nobody, for real, effective, saved, fs
    if pool._spawner.hello["netns"]:  # type: ignore[union-attr]
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
