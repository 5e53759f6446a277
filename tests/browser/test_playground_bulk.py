"""A bulk action from Past runs: it takes the panel's filter, asks first, and shows the job's
progress until it is done; runs outside the filter are untouched."""

from __future__ import annotations

import httpx
from playwright.sync_api import Dialog, Page, expect

from tests.browser.conftest import Server, Shot
from tests.integration.app import wait_for

HOLD = """
from treadle import WorkflowEntrypoint

class Hold(WorkflowEntrypoint):
    def run(self, event, step):
        return step.wait_for_event("go", type="go", timeout="1 hour")
"""


def test_bulk_terminate_of_the_filtered_runs(signed_in: Page, server: Server, shot: Shot) -> None:
    page = signed_in
    headers = {"Authorization": f"Bearer {server.key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as api:
        reply = api.put("/v1/workflows/bulk-hold", json={"source": HOLD, "sandbox": "restricted"})
        assert reply.status_code == 201, reply.text
        items = [
            {"id": f"{batch}-{i}", "tags": {"batch": batch}}
            for batch in ("b1", "b2")
            for i in range(3)
        ]
        reply = api.post("/v1/workflows/bulk-hold/instances/batch", json={"instances": items})
        assert reply.status_code == 200 and not reply.json()["errors"], reply.text

        def statuses() -> dict[str, str]:
            found = api.get("/v1/workflows/bulk-hold/instances", params={"limit": 50}).json()
            return {i["id"]: i["status"] for i in found["instances"]}

        wait_for(statuses, lambda s: set(s.values()) == {"waiting"})

        page.locator("#runs-tag").fill("batch=b1")
        expect(page.locator(".past-run")).to_have_count(3)
        page.locator("#bulk-action").select_option("terminate")

        # Asked first: dismissed, nothing happens.
        asked: list[str] = []

        def dismiss(dialog: Dialog) -> None:
            asked.append(dialog.message)
            dialog.dismiss()

        page.once("dialog", dismiss)
        page.locator("#bulk-apply").click()
        expect(page.locator("#bulk-progress")).to_have_text("")
        assert asked == ["Terminate every run matching the filter?"]
        assert set(statuses().values()) == {"waiting"}

        page.once("dialog", lambda dialog: dialog.accept())
        page.locator("#bulk-apply").click()
        progress = page.locator("#bulk-progress")
        expect(progress).to_have_text("terminate: 3/3 (3 done) — done")
        expect(progress).to_have_attribute("data-status", "done")
        expect(page.locator('.past-run .status[data-status="terminated"]')).to_have_count(3)
        shot("terminated")
        assert statuses() == {
            **{f"b1-{i}": "terminated" for i in range(3)},
            **{f"b2-{i}": "waiting" for i in range(3)},
        }
        jobs = api.get("/v1/instances/bulk").json()["jobs"]
        assert jobs[0]["filter"] == {"tags": {"batch": "b1"}} and jobs[0]["done"] == 3
