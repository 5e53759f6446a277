"""Stopping and restarting real ``treadle serve`` and ``treadle worker`` processes while
clients watch a run (docs/deploy.md, "Stopping a process"; docs/api.md, "The live stream").

SIGINT ends every live stream with a last ``server.closing`` event and the process within
seconds, exit status 0; a second SIGINT exits at once, quietly. The followers (the SDK's
``subscribe`` and ``treadle run --follow``) reconnect by themselves once the server is back,
and see the run through to its end with no event twice. On SQLite and PostgreSQL: the
restarted server takes up the same database (on SQLite the same file, as ``treadle serve`` does
on a developer's machine).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from bench._processes import TreadleProcess
from tests.hostile.server import Server, serve
from tests.integration.app import ADMIN_TOKEN, APPROVAL
from treadle import Client, StreamEvent

pytestmark = pytest.mark.slow
STOP_LIMIT = 5.0  # seconds from SIGINT to the process's exit
SPIN = """
from treadle import WorkflowEntrypoint

class Spin(WorkflowEntrypoint):
    def run(self, event, step):
        def spin():
            while True:
                pass
        return step.do("spin", spin, retries={"limit": 0})
"""


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[Server]:
    with serve(database_url, tmp_path) as running:
        yield running


def _interrupt(process: TreadleProcess) -> tuple[int, float]:
    """SIGINT to the process: its exit status and how long it took to exit."""
    assert process.proc is not None
    started = time.monotonic()
    os.kill(process.pid, signal.SIGINT)
    code = process.proc.wait(30)
    return code, time.monotonic() - started


def _until(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.05)


class _RawStream:
    """``GET .../stream`` read as text on a thread of its own, until the server ends it."""

    def __init__(self, base: str, headers: dict[str, str], path: str) -> None:
        self.text = ""
        self.ended = threading.Event()
        args = (base, headers, path)
        threading.Thread(target=self._read, args=args, name="raw-sse", daemon=True).start()

    def _read(self, base: str, headers: dict[str, str], path: str) -> None:
        try:
            with httpx.stream("GET", base + path, headers=headers, timeout=60) as reply:
                for chunk in reply.iter_text():
                    self.text += chunk
        finally:
            self.ended.set()


class _Subscriber:
    """``Client.subscribe`` on a thread of its own: every event it yields, and how it ended."""

    def __init__(self, base: str, key: str, workflow: str, instance_id: str) -> None:
        self.events: list[StreamEvent] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._follow, args=(base, key, workflow, instance_id), daemon=True
        )
        self._thread.start()

    def _follow(self, base: str, key: str, workflow: str, instance_id: str) -> None:
        try:
            with Client(base, api_key=key) as client:
                for event in client.subscribe(workflow, instance_id):
                    self.events.append(event)
        except BaseException as exc:  # reported by join()
            self.error = exc

    @property
    def following(self) -> bool:
        return self._thread.is_alive()

    def kinds(self) -> list[str]:
        return [event.type for event in self.events]

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"still following: {self.kinds()}"
        assert self.error is None, repr(self.error)


def _key(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def _treadle_cli(base: str, key: str, tmp: Path, *args: str) -> tuple[subprocess.Popen[str], Path]:
    """``treadle ARGS...`` as a user runs it; its stdout goes to the file returned."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TREADLE_")}
    env.update(TREADLE_URL=base, TREADLE_API_KEY=key, TREADLE_CONFIG=str(tmp / "cli.toml"))
    env["PYTHONUNBUFFERED"] = "1"  # each line as it is printed, as on a terminal
    out = tmp / f"cli-{args[0]}.out"
    command = [str(Path(sys.executable).parent / "treadle"), *args]
    with open(out, "w") as stdout:
        proc = subprocess.Popen(command, env=env, text=True, stdout=stdout, stderr=subprocess.PIPE)
    return proc, out


def test_sigint_ends_the_streams_and_the_followers_see_the_run_end_after_a_restart(
    server: Server, tmp_path: Path
) -> None:
    acme = server.tenant("acme")
    server.deploy(acme, "approval", APPROVAL)
    base, instances = server.base, "/v1/workflows/approval/instances"
    server.http.post(instances, json={"id": "a1"}, headers=acme).raise_for_status()
    server.wait_status(acme, f"{instances}/a1", ("waiting",))
    raw = _RawStream(base, {**acme, "Accept": "text/event-stream"}, f"{instances}/a1/stream")
    subscriber = _Subscriber(base, _key(acme), "approval", "a1")
    run = ("run", "approval", "--id", "a2", "--follow")
    cli, cli_out = _treadle_cli(base, _key(acme), tmp_path, *run)
    try:
        _until(lambda: "wait.started" in raw.text, 30, "the raw stream's history")
        _until(lambda: "wait.started" in subscriber.kinds(), 30, "the subscriber's history")
        _until(lambda: "wait.started" in cli_out.read_text(), 30, "treadle run --follow's history")

        code, took = _interrupt(server.process)
        assert code == 0, server.log[-3000:]
        assert took <= STOP_LIMIT, f"the server took {took:.1f} s to stop"
        assert raw.ended.wait(5), "the stream outlived the server"
        _assert_closing_event_ends(raw.text)
        assert "Traceback" not in server.log

        time.sleep(1)  # the followers meet a closed port for a while, as in a real restart
        assert subscriber.following and cli.poll() is None, "a follower gave up"
        server.process.start()
        for instance_id in ("a1", "a2"):
            reply = server.http.post(
                f"{instances}/{instance_id}/events/approved", json={"by": "ada"}, headers=acme
            )
            assert reply.status_code == 202, reply.text

        subscriber.join(60)
        _assert_seen_once_to_the_end(subscriber.events)
        _, err = cli.communicate(timeout=60)
        assert cli.returncode == 0 and "Traceback" not in err, err
        assert err.splitlines() == [
            "treadle: the server is going away; reconnecting",
            f"treadle: reconnected to {base}",
        ]
        _assert_printed_once_to_the_end(cli_out.read_text().splitlines())
    finally:
        if cli.poll() is None:
            cli.kill()
        cli.communicate()


def _assert_closing_event_ends(text: str) -> None:
    last = text.rstrip("\n").rsplit("\n\n", 1)[-1]
    assert last.splitlines()[:2] == ["retry: 1000", "event: server.closing"], text[-500:]
    assert "id:" not in last  # Last-Event-ID stays the last real event
    closing = json.loads(last.splitlines()[2].removeprefix("data: "))
    assert closing == {"type": "server.closing", "retry_ms": 1000}


def _assert_seen_once_to_the_end(events: list[StreamEvent]) -> None:
    kinds = [event.type for event in events]
    assert kinds[-1] == "workflow.complete", kinds
    assert events[-1].data["output"] == {"by": "ada"}
    ids = [event.id for event in events]
    assert ids == sorted(set(ids)), f"an event came twice or out of order: {kinds}"
    assert kinds.count("wait.started") == 1 and kinds.count("wait.completed") == 1


def _assert_printed_once_to_the_end(lines: list[str]) -> None:
    assert lines[0].startswith("created a2"), lines
    assert "workflow.complete" in lines[-1] and '{"by": "ada"}' in lines[-1], lines
    for kind in ("workflow.queued", "wait.started", "wait.completed", "workflow.complete"):
        assert sum(kind in line for line in lines) == 1, f"{kind} not once in {lines}"


def test_a_second_sigint_exits_at_once_without_a_traceback(server: Server) -> None:
    acme = server.tenant("acme")
    server.deploy(acme, "spin", SPIN)
    path = "/v1/workflows/spin/instances"
    server.http.post(path, json={"id": "s1"}, headers=acme).raise_for_status()
    server.wait_status(acme, f"{path}/s1", ("running",))
    process = server.process
    assert process.proc is not None
    os.kill(process.pid, signal.SIGINT)  # the replay under way gets its grace (10 s) ...
    process.wait_logged("send it again to exit at once", timeout=5)
    time.sleep(0.5)
    code, took = _interrupt(process)  # ... unless a second signal comes
    assert code == 130 and took < 2, (code, took)
    log = server.log
    assert "received SIGINT again; exiting at once" in log
    assert "Traceback" not in log and "CancelledError" not in log, log[-3000:]


def test_a_worker_stops_within_seconds_on_sigint(database_url: str, tmp_path: Path) -> None:
    url = database_url
    with serve(url, tmp_path) as server:  # a waiting run in the file, as a worker finds it
        acme = server.tenant("acme")
        server.deploy(acme, "approval", APPROVAL)
        path = "/v1/workflows/approval/instances"
        server.http.post(path, json={"id": "w1"}, headers=acme).raise_for_status()
        server.wait_status(acme, f"{path}/w1", ("waiting",))
        assert _interrupt(server.process)[0] == 0
    worker = TreadleProcess(url, tmp_path, kind="worker", env={"TREADLE_ADMIN_TOKEN": ADMIN_TOKEN})
    try:
        worker.start()
        code, took = _interrupt(worker)
        log = worker.log_path.read_text()
        assert code == 0, log[-3000:]
        assert took <= STOP_LIMIT, f"the worker took {took:.1f} s to stop"
        assert "engine stopped" in log and "Traceback" not in log
    finally:
        worker.stop()
