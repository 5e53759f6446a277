"""Storage a tenant cannot blow up: logs capped per instance, reads paged and bounded, and a
quota on everything a tenant stores (``max_storage_mb``).

Before, logs were capped per replay only (one 12-second instance wrote 49 MB, returned by
``GET .../logs`` in one response), 16 concurrent GETs of an instance holding 100 x 1 MiB of
step results took the server from 0.4 to 2.9 GB of memory, and nothing bounded a tenant's
storage.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.hostile.server import (
    Server,
    Victim,
    assert_quiet_log,
    assert_unharmed,
    report,
    serve,
)

PRINTER = """
from treadle import WorkflowEntrypoint

class Printer(WorkflowEntrypoint):
    def run(self, event, step):
        def shout(n):
            for i in range(200):
                print(f"{n:03d}/{i:03d} " + "x" * 992)
            return n
        for n in range(event.payload["steps"]):
            step.do(f"shout {n}", lambda: shout(n))
            step.sleep(f"nap {n}", 0.05)  # a new replay: each has a log cap of its own
        return "done"
"""
BULKY = """
from treadle import WorkflowEntrypoint

class Bulky(WorkflowEntrypoint):
    def run(self, event, step):
        for i in range(event.payload["steps"]):
            step.do(f"s{i:02d}", lambda: "x" * event.payload["size"])
        return "done"
"""
WAITER = """
from treadle import WorkflowEntrypoint

class Waiter(WorkflowEntrypoint):
    def run(self, event, step):
        return step.wait_for_event("go", type="go", timeout="1 hour")["payload"]
"""
MIB = 1024 * 1024
RESPONSE_BOUND = 8 * MIB
MARKER = (
    "log truncated: this instance wrote more than 1048576 bytes of logs; later lines are dropped"
)


def _create(server: Server, headers: dict[str, str], workflow: str, body: dict[str, Any]) -> None:
    reply = server.http.post(f"/v1/workflows/{workflow}/instances", json=body, headers=headers)
    assert reply.status_code == 201, reply.text


def _rss(server: Server) -> int:
    """The server process's resident memory, in bytes."""
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    (line,) = [x for x in status.splitlines() if x.startswith("VmRSS:")]
    return int(line.split()[1]) * 1024


def test_a_chatty_instance_stops_at_its_log_cap_and_its_log_is_read_in_pages(
    database_url: str, tmp_path: Path
) -> None:
    with serve(database_url, tmp_path) as server:
        victim = Victim(server)
        before = victim.baseline()
        attacker = server.tenant("attacker")
        server.deploy(attacker, "printer", PRINTER)
        path = "/v1/workflows/printer/instances/loud"
        with victim.watching() as during:
            # 12 replays of 200 lines of 1 kB: 2.4 MB of log offered, 1 MiB kept.
            _create(server, attacker, "printer", {"id": "loud", "params": {"steps": 12}})
            server.wait_status(attacker, path, ("complete",), timeout=60)
            first = server.http.get(f"{path}/logs", headers=attacker)
        assert first.status_code == 200, first.text
        page = first.json()
        assert set(page) == {"logs", "next_cursor"}
        assert len(page["logs"]) == 1000 and page["next_cursor"]
        messages = [line["message"] for line in page["logs"]]
        cursor = page["next_cursor"]
        while cursor is not None:
            reply = server.http.get(
                f"{path}/logs", params={"cursor": cursor, "limit": 300}, headers=attacker
            )
            assert reply.status_code == 200 and len(reply.content) <= RESPONSE_BOUND
            messages += [line["message"] for line in reply.json()["logs"]]
            cursor = reply.json()["next_cursor"]
        assert messages[-1] == MARKER and messages.count(MARKER) == 1
        kept = messages[:-1]
        assert kept == [f"{i // 200:03d}/{i % 200:03d} " + "x" * 992 for i in range(len(kept))]
        assert sum(len(m) for m in kept) <= MIB < sum(len(m) for m in kept) + 1000
        assert_unharmed(during)
        report("logs past the cap (2.4 MB offered)", database_url, before, during)
        assert_quiet_log(server)


@pytest.mark.slow
def test_concurrent_reads_of_a_large_instance_stay_bounded_in_size_and_memory(
    database_url: str, tmp_path: Path
) -> None:
    with serve(database_url, tmp_path) as server:
        victim = Victim(server)
        before = victim.baseline()
        attacker = server.tenant("attacker")
        server.deploy(attacker, "bulky", BULKY)
        path = "/v1/workflows/bulky/instances/big"
        _create(server, attacker, "bulky", {"id": "big", "params": {"steps": 20, "size": MIB - 16}})
        server.wait_status(attacker, path, ("complete",), timeout=60)
        rss_before = _rss(server)
        peaks = [rss_before]
        reading = threading.Event()

        def sample() -> None:
            while not reading.wait(0.05):
                peaks.append(_rss(server))

        readers = httpx.Client(base_url=server.base, timeout=60)
        server.clients.append(readers)

        def read(_: int) -> tuple[int, int, int]:
            reply = readers.get(path, headers=attacker)
            return reply.status_code, len(reply.content), len(reply.json().get("steps", []))

        sampler = threading.Thread(target=sample)
        sampler.start()
        with victim.watching() as during, ThreadPoolExecutor(16) as pool:
            pending = list(pool.map(read, range(48)))  # 16 at once, three rounds
        reading.set()
        sampler.join()
        peak = max(peaks)
        assert {status for status, _, _ in pending} == {200}, pending
        assert max(size for _, size, _ in pending) <= RESPONSE_BOUND
        assert {steps for _, _, steps in pending} == {3}  # 4 MiB a page: 3 steps of 1 MiB
        grown = peak - rss_before
        print(f"server RSS {rss_before // MIB} MiB before the reads, {peak // MIB} MiB at most")
        assert grown < 256 * MIB, f"the server grew by {grown // MIB} MiB"
        whole = server.http.get(path, headers=attacker).json()
        names = [s["name"] for s in whole["steps"]]
        cursor = whole["steps_next_cursor"]
        while cursor is not None:
            reply = server.http.get(f"{path}/steps", params={"cursor": cursor}, headers=attacker)
            assert reply.status_code == 200 and len(reply.content) <= RESPONSE_BOUND
            names += [s["name"] for s in reply.json()["steps"]]
            cursor = reply.json()["next_cursor"]
        assert names == [f"s{i:02d}" for i in range(20)]
        assert_unharmed(during)
        report("16 concurrent reads of 20 x 1 MiB steps", database_url, before, during)
        assert_quiet_log(server)


def test_a_tenant_that_fills_its_storage_gets_clear_errors_and_nothing_loops(
    database_url: str, tmp_path: Path
) -> None:
    with serve(database_url, tmp_path) as server:
        victim = Victim(server)
        before = victim.baseline()
        attacker = server.tenant("attacker", max_storage_mb=1)
        server.deploy(attacker, "bulky", BULKY)
        server.deploy(attacker, "waiter", WAITER)
        base = "/v1/workflows/bulky/instances"
        waiter = "/v1/workflows/waiter/instances/w"
        _create(server, attacker, "waiter", {"id": "w"})
        server.wait_status(attacker, waiter, ("waiting",), timeout=30)
        with victim.watching() as during:
            _create(
                server, attacker, "bulky", {"id": "hog", "params": {"steps": 30, "size": 60_000}}
            )
            hog = server.wait_status(attacker, f"{base}/hog", ("errored",), timeout=60)
            refused = server.http.post(
                base, json={"params": {"steps": 1, "pad": "x" * 100_000}}, headers=attacker
            )
            event = server.http.post(f"{waiter}/events/go", json={"pad": "x" * 500_000},
                                     headers=attacker)  # fmt: skip
        assert hog["error"]["name"] == "StorageQuotaExceeded", hog["error"]
        assert "max_storage_mb=1" in hog["error"]["message"]
        (failed,) = [s for s in hog["steps"] if s["status"] == "errored"]
        assert failed["error"]["name"] == "StorageQuotaExceeded"
        assert len(failed["attempts"]) == 1  # failed once, not retried
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "quota.storage"
        assert "max_storage_mb=1" in refused.json()["error"]["message"]
        assert int(refused.headers["Retry-After"]) >= 1
        assert event.status_code == 429, event.text
        assert event.json()["error"]["code"] == "quota.storage"
        time.sleep(1.5)  # had it been left due, it would have been tried again by now
        again = server.http.get(f"{base}/hog", headers=attacker).json()
        assert (again["status"], again["steps"]) == ("errored", hog["steps"])
        assert "will be retried" not in server.log

        assert server.http.delete(f"{base}/hog", headers=attacker).status_code == 204
        reply = server.http.post(f"{waiter}/events/go", json={"pad": "x"}, headers=attacker)
        assert reply.status_code == 202, reply.text
        server.wait_status(attacker, waiter, ("complete",), timeout=30)
        _create(server, attacker, "bulky", {"id": "after", "params": {"steps": 2, "size": 1000}})
        server.wait_status(attacker, f"{base}/after", ("complete",), timeout=30)
        assert_unharmed(during)
        report("storage quota filled (max_storage_mb=1)", database_url, before, during)
        assert_quiet_log(server)
