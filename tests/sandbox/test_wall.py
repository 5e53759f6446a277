"""The second wall: what a worker cannot do even as native code, with its backend bypassed.

The probes (``wall_probes``) run inside workers forked by a real zygote on the production
path, with every layer up, as code that escaped RestrictedPython or wasmtime would. Each layer
this machine allows (root, namespaces, libseccomp: all of them in CI) must hold; a layer that
is off here fails its test, saying which, rather than being skipped.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox import LAYERS, Limits, Wall
from sandbox._spawner import Spawner
from sandbox._wall import NPROC, Uids, WallError, missing, readable_paths, verdict
from sandbox._wire import Connection
from sandbox.wasm._engine import cache_dir

BASE, COUNT = 120000, 1000
POSTGRES_SOCKET = "/var/run/postgresql/.s.PGSQL.5432"


class Probed:
    """A worker of the probing zygote, and what it answers."""

    def __init__(self, spawner: Spawner, limits: Limits | None = None) -> None:
        self.spawner = spawner
        self.pid, sock = spawner.fork(limits or Limits())
        self.conn = Connection(sock, 1 << 20)
        assert self.conn.recv(time.monotonic() + 30)["t"] == "hello"

    def __call__(self, name: str, *args: Any) -> Any:
        self.conn.send({"t": "probe", "name": name, "args": list(args)})
        reply = self.conn.recv(time.monotonic() + 30)
        assert reply["t"] == "probed", reply
        return reply["result"]

    def close(self) -> None:
        self.spawner.kill(self.pid)
        self.conn.close()


@pytest.fixture(scope="module")
def spawner() -> Iterator[Spawner]:
    spawner = Spawner(Wall(uid_base=BASE, uid_count=COUNT), probes="tests.sandbox.wall_probes")
    try:
        yield spawner
    finally:
        spawner.close()


@pytest.fixture
def worker(spawner: Spawner) -> Iterator[Probed]:
    probed = Probed(spawner)
    try:
        yield probed
    finally:
        probed.close()


def _up(spawner: Spawner, *layers: str) -> None:
    off = [layer for layer in layers if not spawner.wall.get(layer)]
    assert not off, f"this machine should allow these layers of the wall, but they are off: {off}"


def _uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


def _processes_of(uid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if _uid(int(entry.name)) == uid:
                    pids.append(int(entry.name))
            except (OSError, StopIteration):
                continue  # gone meanwhile
    return pids


def _wait_until(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_every_layer_is_up_on_this_machine(spawner: Spawner) -> None:
    assert os.getuid() == 0, "the wall's tests run as root, as CI does: uids and namespaces"
    assert set(spawner.wall) == set(LAYERS)
    _up(spawner, *LAYERS)


def test_each_worker_has_a_uid_of_its_own_and_no_privileges(spawner: Spawner) -> None:
    _up(spawner, "uid", "no_new_privs", "seccomp")
    first, second = Probed(spawner), Probed(spawner)
    try:
        seen = [first("identity"), second("identity")]
        uids = [s["uid"][0] for s in seen]
        assert uids[0] != uids[1] and all(BASE <= uid < BASE + COUNT for uid in uids)
        for who, uid in zip(seen, uids, strict=True):
            assert who["uid"] == [uid] * 3 and who["gid"] == [uid] * 3 and who["groups"] == []
            assert who["no_new_privs"] == "1" and who["seccomp"] == "2"  # 2: filtered
        assert [_uid(first.pid), _uid(second.pid)] == uids  # as the host sees them
    finally:
        first.close()
        second.close()


def test_a_worker_cannot_signal_another_tenants_worker(spawner: Spawner, worker: Probed) -> None:
    _up(spawner, "pid_namespace", "uid")
    other = Probed(spawner)
    try:
        assert worker("signal", other.pid) == "ESRCH"  # not in its PID namespace
        assert worker("signal", spawner._process.pid) == "ESRCH"  # nor the zygote
        assert worker("signal", os.getpid()) == "ESRCH"  # nor the server
        assert other("identity")["pid"] == 2  # alive; its keeper is its namespace's init
        # Its own namespace holds its keeper and itself, nothing else.
        assert worker("identity")["processes"] == [1, 2]
    finally:
        other.close()


def test_a_worker_cannot_reach_the_database_socket(spawner: Spawner, worker: Probed) -> None:
    _up(spawner, "mount_namespace", "network_namespace", "seccomp")
    assert os.path.exists(POSTGRES_SOCKET), "PostgreSQL's socket should exist on the host"
    reached = worker("reach_socket", POSTGRES_SOCKET)
    assert reached == {"stat": "ENOENT", "unix": "EPERM", "tcp": "EPERM"}  # no socket() at all


def test_a_worker_cannot_read_the_servers_command_line(spawner: Spawner, worker: Probed) -> None:
    _up(spawner, "mount_namespace", "pid_namespace")
    assert Path(f"/proc/{os.getpid()}/cmdline").exists()
    for pid in (os.getpid(), spawner._process.pid):
        assert worker("read", f"/proc/{pid}/cmdline") == "ENOENT"
        assert worker("read", f"/proc/{pid}/environ") == "ENOENT"


def test_a_worker_sees_only_what_it_must_read(
    spawner: Spawner, worker: Probed, tmp_path: Path
) -> None:
    _up(spawner, "mount_namespace")
    secret = tmp_path / "treadle.db"
    secret.write_text("tenant data")
    hidden = [
        str(secret),
        str(Path.cwd() / "pyproject.toml"),  # the project's directory
        "/var/run/postgresql",
        "/run/postgresql",
        "/etc/passwd",
        "/home",
        "/root/.bash_history",
        "/sys/kernel",
        "/dev/shm",
    ]
    assert worker("exists", hidden) == []
    visible = readable_paths(cache_dir())
    assert worker("exists", visible) == visible
    assert worker("write", "/tmp/x") in ("EROFS", "EACCES")
    assert worker("write", "/usr/x") in ("EROFS", "EACCES")


def test_a_fork_bomb_stops_at_the_cap_and_dies_with_its_worker(spawner: Spawner) -> None:
    _up(spawner, "nproc", "uid", "pid_namespace")
    bomber = Probed(spawner)
    uid = _uid(bomber.pid)
    try:
        bombed = bomber("fork_bomb")
        assert bombed["error"] == "EAGAIN" and 0 < bombed["forked"] < NPROC, bombed
        assert len(_processes_of(uid)) == bombed["forked"] + 1
        spawner.kill(bomber.pid)
        # Read before the socket closes: a worker that sees it close exits on its own.
        status = spawner.exit_status(bomber.pid, 5.0)
    finally:
        bomber.close()
    _wait_until(lambda: not _processes_of(uid))  # the whole namespace went with the worker
    assert status is not None and status["signal"] == signal.SIGKILL


def test_forbidden_system_calls_are_refused(spawner: Spawner, worker: Probed) -> None:
    _up(spawner, "seccomp", "no_new_privs")
    assert worker("forbidden_syscalls") == {
        "ptrace": "EPERM",
        "unshare": "EPERM",
        "execve": "EPERM",
        "chroot": "EPERM",
    }


def test_a_workers_death_is_reported_as_its_own(spawner: Spawner) -> None:
    # The keeper reports the worker's end as 128 + signal: the pool must see the signal.
    victim = Probed(spawner, Limits(step_cpu_ms=1000))
    os.kill(victim.pid, signal.SIGXCPU)
    status = spawner.exit_status(victim.pid, 5.0)
    victim.conn.close()
    assert status is not None and status["signal"] == signal.SIGXCPU


def test_uids_are_never_shared_and_are_reused_last() -> None:
    uids = Uids(Wall(uid_base=BASE, uid_count=3))
    taken = [uids.take(), uids.take(), uids.take()]
    assert taken == [BASE, BASE + 1, BASE + 2]
    with pytest.raises(WallError, match="all 3 sandbox uids are in use"):
        uids.take()
    uids.give_back(BASE + 1)
    assert uids.take() == BASE + 1
    uids.give_back(BASE)
    uids.give_back(BASE + 2)
    assert uids.take() == BASE + 2  # the one given back earlier waits longer


ROOTLESS = """
import json, logging
logging.basicConfig(level=logging.WARNING)
from sandbox import SandboxPool, Wall
from tests.sandbox.harness import GOOD, Instance
pool = SandboxPool(max_workers=1, per_tenant=1)
layers = pool.wall_layers()
outcome = type(Instance(GOOD).through(pool, "a")).__name__
pool.close()
strict = SandboxPool(max_workers=1, per_tenant=1, wall=Wall(required=True))
try:
    strict.wall_layers()
    refused = None
except RuntimeError as exc:
    refused = str(exc)
strict.close()
print(json.dumps({"layers": layers, "outcome": outcome, "refused": refused}))
"""


def test_in_a_rootless_container_the_wall_degrades_loudly() -> None:
    # Root of a user namespace that maps only itself: no uid range, and no way back into the
    # host's PID namespace; the other layers stay up, and replays still run.
    ran = subprocess.run(
        ["unshare", "--user", "--map-root-user", sys.executable, "-c", ROOTLESS],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    seen = json.loads(ran.stdout)
    off = ["uid", "pid_namespace", "nproc"]
    assert seen["layers"] == {name: name not in off for name in LAYERS}, seen
    assert seen["outcome"] == "Done"
    assert "sandbox wall: these layers are off, workers run without them: " in ran.stderr
    assert "uid, pid_namespace, nproc" in ran.stderr
    assert seen["refused"] == (
        "the sandbox wall is required but these layers of it are off: uid, pid_namespace, nproc"
    )


def test_layers_that_are_off_are_said_or_refused(caplog: pytest.LogCaptureFixture) -> None:
    layers = dict.fromkeys(LAYERS, True) | {"seccomp": False, "nproc": False}
    assert missing(layers) == ["nproc", "seccomp"]
    assert verdict(dict.fromkeys(LAYERS, True), required=True) is None
    with caplog.at_level(logging.WARNING, logger="treadle.sandbox"):
        assert verdict(layers, required=False) is None
    assert "these layers are off, workers run without them: nproc, seccomp" in caplog.text
    refused = verdict(layers, required=True)
    assert refused == "the sandbox wall is required but these layers of it are off: nproc, seccomp"


def test_a_worker_loads_the_runtime_and_not_the_http_client(worker: Probed) -> None:
    """Sandbox processes import ``treadle.runtime`` only: not ``treadle/__init__.py``, which
    brings in the client, httpx and pydantic (a slower zygote and more mapped memory in every
    worker, under its memory limit)."""
    wanted = ["treadle.runtime", "treadle.runtime._journal", "sandbox.restricted._policy"]
    unwanted = ["httpx", "pydantic", "treadle.client", "treadle.testing", "sqlalchemy"]
    assert worker("loaded", wanted) == sorted(wanted)
    assert worker("loaded", unwanted) == []
