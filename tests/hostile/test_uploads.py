"""Uploads: checking tenant code never takes what other requests need, and never answers 500.

An upload's module is loaded in a sandbox worker to check it. A tenant may send many uploads at
once, of a module whose top level never ends, or while its instances hold every sandbox worker
it may have: the attacker gets 422 (the module did not load in time) or 429 ``upload.busy``
with ``Retry-After``, and another tenant's runs, lists and uploads go on as before.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import httpx
import pytest

from tests.hostile.server import (
    ONE_STEP,
    Server,
    Victim,
    assert_quiet_log,
    assert_unharmed,
    report,
    serve,
)
from tests.integration.slow_server import SlowServer

CHECK_SECONDS = 2
UPLOADS = {
    "TREADLE_UPLOAD_CHECK_SECONDS": str(CHECK_SECONDS),
    "TREADLE_UPLOAD_QUEUE_SECONDS": "3",
}
ENDLESS = """
from treadle import WorkflowEntrypoint

class Endless(WorkflowEntrypoint):
    {class_body}
    def run(self, event, step):
        return 1

{module_body}
"""
GOOD = {"source": ONE_STEP, "sandbox": "restricted"}
HOLD = """
from treadle import WorkflowEntrypoint

class Hold(WorkflowEntrypoint):
    def run(self, event, step):
        return step.do("hold", lambda: self.env.fetch(event.payload["url"]).json())
"""


def _endless(n: int) -> dict[str, str]:
    """A module that never finishes loading: its top level loops, or its class body does."""
    loop = f"while True:  # {n}\n    pass"
    if n % 2:
        source = ENDLESS.format(class_body=loop.replace("\n", "\n    "), module_body="")
    else:
        source = ENDLESS.format(class_body="", module_body=loop)
    return {"source": source, "sandbox": "restricted"}


def _put(
    http: httpx.Client, headers: dict[str, str], name: str, body: dict[str, Any]
) -> httpx.Response:
    return http.put(f"/v1/workflows/{name}", json=body, headers=headers)


def _assert_refused_clearly(reply: httpx.Response) -> None:
    """A refused upload says why, and a busy one when to come back."""
    assert reply.status_code in (422, 429), (reply.status_code, reply.text)
    error = reply.json()["error"]
    if reply.status_code == 422:
        assert error["code"] == "code.invalid", error
        (problem,) = error["problems"]
        assert f"did not finish loading within {CHECK_SECONDS} s" in problem["message"], error
    else:
        assert error["code"] == "upload.busy", error
        assert int(reply.headers["Retry-After"]) >= 1
        assert "try again shortly" in error["message"], error


def _attacker(server: Server) -> tuple[dict[str, str], httpx.Client]:
    headers = server.tenant("mallory", egress_allow=["127.0.0.1"])
    http = httpx.Client(base_url=server.base, timeout=60, limits=httpx.Limits(max_connections=60))
    server.clients.append(http)
    return headers, http


@pytest.mark.slow
def test_a_storm_of_endless_uploads_costs_another_tenant_nothing(
    database_url: str, tmp_path: Path
) -> None:
    with serve(database_url, tmp_path, env=UPLOADS) as server:
        victim = Victim(server)
        attacker, http = _attacker(server)
        before = victim.baseline()
        with victim.watching() as during, ThreadPoolExecutor(50) as storm:
            replies = [storm.submit(_put, http, attacker, f"e{n}", _endless(n)) for n in range(50)]
            deadline = time.monotonic() + 10
            while not any(r.done() for r in replies):  # the first refusals: the storm is on
                assert time.monotonic() < deadline
                time.sleep(0.01)
            mine = _put(server.http, victim.headers, "mine", GOOD)  # the victim deploys meanwhile
            results = [r.result() for r in replies]
        report("endless uploads", database_url, before, during)

        assert mine.status_code == 201, mine.text
        assert mine.json() == {
            "name": "mine",
            "version": ANY,
            "sandbox": "restricted",
            "flow": None,
        }
        assert mine.elapsed.total_seconds() < 3.0, mine.elapsed
        assert_unharmed(during)
        for reply in results:
            _assert_refused_clearly(reply)
        statuses = Counter(r.status_code for r in results)
        assert statuses[422] >= 1 and statuses[429] >= 40, statuses
        # Nothing is left looping: the attacker's next upload is checked at once, and accepted.
        good = _put(http, attacker, "good", GOOD)
        assert good.status_code == 201, good.text
        assert good.elapsed.total_seconds() < 3.0, good.elapsed
        assert_quiet_log(server)


@pytest.mark.slow
def test_uploads_while_the_tenants_instances_hold_all_its_workers(
    database_url: str, tmp_path: Path
) -> None:
    env = {**UPLOADS, "TREADLE_SANDBOX_PER_TENANT": "2"}
    with SlowServer().running() as slow, serve(database_url, tmp_path, env=env) as server:
        victim = Victim(server)
        attacker, http = _attacker(server)
        server.deploy(attacker, "hold", HOLD)
        before = victim.baseline()
        params = {"url": f"{slow.url}/sleep?s=6&tag=hold"}
        for n in range(2):
            body = {"id": f"h{n}", "params": params}
            reply = http.post("/v1/workflows/hold/instances", json=body, headers=attacker)
            assert reply.status_code == 201, reply.text
        deadline = time.monotonic() + 10
        while slow.peak["hold"] < 2:  # both of its workers are in a step body, fetching
            assert time.monotonic() < deadline, slow.peak
            time.sleep(0.05)
        with victim.watching() as during:
            good = _put(http, attacker, "good", GOOD)
            endless = _put(http, attacker, "endless", _endless(0))
            syntax = _put(http, attacker, "broken", {"source": "def (:", "sandbox": "restricted"})
        report("uploads with every worker busy", database_url, before, during)

        # The check does not wait for the instances: it runs in a worker of its own.
        assert good.status_code == 201, good.text
        assert good.elapsed.total_seconds() < 3.0, good.elapsed
        _assert_refused_clearly(endless)
        assert endless.status_code == 422, endless.text
        assert syntax.status_code == 422, syntax.text
        (problem,) = syntax.json()["error"]["problems"]
        assert problem["line"] == 1 and problem["message"].startswith("SyntaxError"), problem
        assert_unharmed(during)
        for n in range(2):
            path = f"/v1/workflows/hold/instances/h{n}"
            done = server.wait_status(attacker, path, ("complete",), timeout=30)
            assert done["output"] == {"tag": "hold", "slept": 6.0}
        assert_quiet_log(server)
