"""The operator console: sign in with the admin token, see each tenant's queues and usage,
change a policy, see the change in the audit log."""

from __future__ import annotations

import re
import time

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import Server, Shot
from tests.integration.app import ADMIN, ADMIN_TOKEN, bearer, new_tenant

WORK = """
from treadle import WorkflowEntrypoint

class Work(WorkflowEntrypoint):
    def run(self, event, step):
        for n in range(event.payload["steps"]):
            step.do(f"step {n}", lambda: n)
        return "done"
"""


def _run(http: httpx.Client, headers: dict[str, str], steps: int) -> None:
    body = {"source": WORK, "sandbox": "restricted"}
    assert http.put("/v1/workflows/work", json=body, headers=headers).status_code == 201
    created = http.post(
        "/v1/workflows/work/instances", json={"params": {"steps": steps}}, headers=headers
    )
    assert created.status_code == 201, created.text
    path = f"/v1/workflows/work/instances/{created.json()['id']}"
    deadline = time.monotonic() + 60
    while http.get(path, headers=headers).json()["status"] != "complete":
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_the_operator_sees_tenants_changes_a_policy_and_finds_it_audited(
    page: Page, server: Server, shot: Shot
) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        _run(http, bearer(server.key), steps=3)
        globex = new_tenant(http, "globex")
        _run(http, globex, steps=5)

    page.goto(f"{server.url}/console")
    expect(page.locator("#signed-out")).to_be_visible()
    page.fill("#token", "not-the-token")
    page.click("#signin button[type=submit]")
    expect(page.locator("#banner-text")).to_have_text("That admin token was refused.")
    page.fill("#token", ADMIN_TOKEN)
    page.click("#signin button[type=submit]")
    acme = page.locator('#tenants tr[data-tenant="acme"]')
    other = page.locator('#tenants tr[data-tenant="globex"]')
    expect(acme).to_be_visible()
    # Steps of the last 24 hours: at least the workload's (other tests may run more for acme).
    expect(other.locator("td.steps")).to_have_text("5")
    assert int(acme.locator("td.steps").inner_text()) >= 3
    expect(acme.locator("svg.chart rect:not(.zero)")).to_have_count(1)
    expect(page.locator("#stalled-none")).to_be_visible()
    shot("signed-in")

    other.get_by_role("button", name="Edit policy").click()
    editor = page.locator("#policy-json")
    policy = editor.input_value()
    assert '"max_running_instances"' in policy
    editor.fill(re.sub(r'"max_running_instances": \d+', '"max_running_instances": 7', policy))
    page.click("#policy-save")
    expect(page.locator("#policy-editor")).to_be_hidden()
    entry = page.locator("#audit tbody tr").first
    expect(entry).to_contain_text("policy.updated")
    expect(entry).to_contain_text("globex")
    shot("policy-changed")
    with httpx.Client(base_url=server.url, timeout=30) as http:
        got = http.get("/v1/admin/tenants/globex", headers=ADMIN).json()
    assert got["policy"]["max_running_instances"] == 7

    # A value the API refuses is shown, and nothing is changed.
    other.get_by_role("button", name="Edit policy").click()
    editor.fill(
        editor.input_value().replace('"max_running_instances": 7', '"max_running_instances": -1')
    )
    page.click("#policy-save")
    expect(page.locator("#policy-error")).to_be_visible()
    expect(page.locator("#policy-error")).to_contain_text("max_running_instances")
    shot("policy-refused")
