"""The sandbox's second wall in a real ``treadle serve``, on SQLite and PostgreSQL.

An attacker's steps spin until the CPU limit kills their worker, so every attempt costs a
fresh worker: a keeper, a PID and a mount namespace, a uid, a seccomp filter. While that
churn runs, another tenant's runs and lists stay fast, the attacker gets a clear error per
instance, every worker runs as a uid of its own from the range, and ``/healthz`` says the
whole wall is up.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox import LAYERS
from tests.hostile.server import Victim, assert_quiet_log, assert_unharmed, report, serve

UID_BASE, UID_COUNT = 100000, 65536
CHURN = """
from treadle import WorkflowEntrypoint

class Churn(WorkflowEntrypoint):
    def run(self, event, step):
        def spin():
            while True:
                pass
        return step.do("spin", spin, retries={"limit": 1, "delay": 0})
"""


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _uid(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None  # gone meanwhile
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


def _worker_uids(server: int) -> dict[int, int]:
    """pid: uid of each sandbox worker of ``server`` (its zygote's keepers' children)."""
    zygotes = [
        pid
        for pid in _children(server)
        if b"sandbox._zygote" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    workers = [w for z in zygotes for keeper in _children(z) for w in _children(keeper)]
    # A worker is root for the moment it starts: it drops to its uid before it says hello.
    return {pid: uid for pid in workers if (uid := _uid(pid)) not in (None, 0)}


@pytest.mark.slow
def test_worker_churn_behind_the_wall_costs_others_nothing(
    database_url: str, tmp_path: Path
) -> None:
    with serve(database_url, tmp_path) as server:
        health = server.http.get("/healthz").json()
        assert health["sandbox_wall"] == dict.fromkeys(LAYERS, True), health  # root: all up
        victim = Victim(server)
        before = victim.baseline()
        attacker = server.tenant("attacker", step_cpu_ms=200)
        server.deploy(attacker, "churn", CHURN)
        ids = [f"c{i}" for i in range(10)]
        samples: list[dict[int, int]] = []
        with victim.watching() as during:
            for instance_id in ids:
                created = server.http.post(
                    "/v1/workflows/churn/instances", json={"id": instance_id}, headers=attacker
                )
                assert created.status_code == 201, created.text
            deadline = time.monotonic() + 60
            pending = list(ids)
            while pending:
                samples.append(_worker_uids(server.process.proc.pid))  # type: ignore[union-attr]
                path = f"/v1/workflows/churn/instances/{pending[0]}"
                instance = server.http.get(path, headers=attacker).json()
                if instance["status"] == "errored":
                    error = instance["error"]
                    assert error["name"] == "ResourceLimitExceeded", error
                    assert "CPU time limit exceeded (step_cpu_ms=200)" in error["message"]
                    pending.pop(0)
                else:
                    assert instance["status"] in ("queued", "running", "waiting"), instance
                    assert time.monotonic() < deadline, f"still {instance['status']}"
                    time.sleep(0.05)
        assert_unharmed(during)
        seen = [uids for uids in samples if uids]
        assert seen, "no sandbox worker was seen while the attack ran"
        for uids in seen:  # at every moment: one uid per worker, all from the range
            assert len(set(uids.values())) == len(uids), uids
            assert all(UID_BASE <= uid < UID_BASE + UID_COUNT for uid in uids.values()), uids
        assert len({pid for uids in seen for pid in uids}) > 2  # workers came and went
        report("sandbox worker churn behind the wall (10 instances)", database_url, before, during)
        assert_quiet_log(server)


def test_serve_refuses_to_start_without_a_required_layer(tmp_path: Path) -> None:
    # Root of a user namespace that maps only itself: uids and PID namespaces are refused.
    env = {**os.environ, "TREADLE_SANDBOX_WALL_REQUIRED": "true", "TREADLE_ADMIN_TOKEN": "x" * 32}
    url = f"sqlite:///{tmp_path / 'treadle.db'}"
    command = [sys.executable, "-m", "dispatcher", "serve", "--port", "0", "--database-url", url]
    ran = subprocess.run(
        ["unshare", "--user", "--map-root-user", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 1, ran.stderr[-2000:]
    assert ran.stderr.strip().endswith(
        "treadle: error: the sandbox wall is required but these layers of it are off: "
        "uid, pid_namespace, nproc"
    ), ran.stderr[-2000:]
    assert "Traceback" not in ran.stderr
