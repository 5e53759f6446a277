"""Compiler bombs and endless module bodies through a real pool, and the OS boundary around
worker processes. The escape techniques themselves are the corpus: tests/sandbox/escapes."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from sandbox import SandboxPool
from tests.sandbox.conftest import SECRET
from tests.sandbox.harness import SMALL, Instance, alongside, artifact, idle_pids
from treadle.errors import CodeInvalid

PROBE = """
from treadle import WorkflowEntrypoint

class Probe(WorkflowEntrypoint):
    def run(self, event, step):
{body}
        return "escaped"
"""


def probe(body: str) -> str:
    return PROBE.format(body=textwrap.indent(textwrap.dedent(body).strip(), " " * 8))


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
        uid = uids.split()[1]  # a uid of its own from the range, for real, effective, saved, fs
        assert uids.split()[1:] == [uid] * 4 and 100000 <= int(uid) < 100000 + 65536
    if pool._spawner.hello["netns"]:  # type: ignore[union-attr]
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
