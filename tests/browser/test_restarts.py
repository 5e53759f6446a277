"""The playground while ``treadle serve`` is stopped with Ctrl-C and started again: it says it is
reconnecting, comes back by itself and shows the run through to its end, without a reload.

The server here is a real ``treadle serve`` process on a SQLite file, stopped with SIGINT and
started again on the same port and file, as a developer restarts it.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from bench._processes import TreadleProcess
from tests.browser.conftest import Shot
from tests.browser.test_playground import SHIPPING, step
from tests.integration.app import ADMIN, ADMIN_TOKEN


@pytest.fixture
def process(tmp_path: Path) -> Iterator[TreadleProcess]:
    database = f"sqlite:///{tmp_path / 'treadle.db'}"
    served = TreadleProcess(database, tmp_path, env={"TREADLE_ADMIN_TOKEN": ADMIN_TOKEN})
    served.start()
    try:
        yield served
    finally:
        served.stop()


def _tenant_key(base: str) -> str:
    with httpx.Client(base_url=base, headers=ADMIN, timeout=30) as admin:
        admin.post("/v1/admin/tenants", json={"name": "acme"}).raise_for_status()
        return str(admin.post("/v1/admin/tenants/acme/keys").json()["key"])


def test_the_playground_rides_out_a_clean_restart_of_the_server(
    page: Page, process: TreadleProcess, shot: Shot
) -> None:
    key = _tenant_key(process.base)
    api = httpx.Client(
        base_url=process.base, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    with api:
        upload = {"source": SHIPPING, "sandbox": "restricted"}
        api.put("/v1/workflows/shipping", json=upload).raise_for_status()
        api.post(
            "/v1/workflows/shipping/instances", json={"id": "p1", "params": {"order": "P-1"}}
        ).raise_for_status()
        page.goto(f"{process.base}/playground#key={key}")
        page.locator('.past-run[data-id="p1"]').click()
        step(page, "courier pickup", "waiting")
        expect(page.locator("#stream-state")).to_have_text("● live")
        shot("waiting")

        assert process.proc is not None
        started = time.monotonic()
        os.kill(process.pid, signal.SIGINT)
        assert process.proc.wait(30) == 0
        assert time.monotonic() - started <= 5
        expect(page.locator("#stream-state")).to_have_text(
            re.compile("^reconnecting… (the server is restarting|cannot reach the server)$")
        )
        expect(page.locator("#run-status")).to_have_text("waiting")
        shot("reconnecting")

        process.start()
        sent = api.post(
            "/v1/workflows/shipping/instances/p1/events/picked_up", json={"courier": "Ivo"}
        )
        assert sent.status_code == 202, sent.text

        expect(page.locator("#run-status")).to_have_text("complete")
        expect(page.locator("#result-body")).to_contain_text('"courier": "Ivo"')
        expect(page.locator("#stream-state")).to_have_text("stream ended")
        step(page, "courier pickup", "complete")
        expect(page.locator("#timeline .step")).to_have_count(3)  # each step once
        # Each log line of the run once: the top of run() printed at the first replay and at
        # the one the event woke, after the restart.
        logs = api.get("/v1/workflows/shipping/instances/p1/logs").json()["logs"]
        assert [line["message"] for line in logs] == ["packed P-1", "packed P-1"]
        shown = page.locator("#logs").inner_text()
        assert re.fullmatch(r"(\S+ packed P-1\n){2}", shown), shown
        expect(page.locator("#banner")).to_be_hidden()
        shot("complete")
