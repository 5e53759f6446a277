"""The page of an approval link in a real browser: a workflow mints the link with
``step.approval_link``; the page shows what it approves, Approve sends the event and the
instance completes; opened again, the link has expired."""

from __future__ import annotations

import textwrap
from typing import Any
from urllib.parse import urlsplit

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import Server, Shot
from tests.integration.app import bearer, wait_for, wait_status

LINKED = """
from treadle import WorkflowEntrypoint

class Linked(WorkflowEntrypoint):
    def run(self, event, step):
        link = step.approval_link("mint", "decision", ttl="1 day")
        got = step.wait_for_event("wait", type="decision", timeout="1 hour")
        return {"approved": got["payload"]["approved"], "link": link["url"]}
"""


def test_approve_on_the_page_resumes_the_instance(page: Page, server: Server, shot: Shot) -> None:
    headers = bearer(server.key)
    base = "/v1/workflows/page-linked/instances"
    with httpx.Client(base_url=server.url, timeout=30) as api:
        body = {"source": textwrap.dedent(LINKED), "sandbox": "restricted"}
        assert api.put("/v1/workflows/page-linked", json=body, headers=headers).is_success
        assert api.post(base, json={"id": "p1"}, headers=headers).status_code == 201

        def fetched() -> dict[str, Any]:
            instance: dict[str, Any] = api.get(f"{base}/p1", headers=headers).json()
            return instance

        waiting = wait_for(fetched, lambda i: any(s["name"] == "wait" for s in i["steps"]))
        url = next(s for s in waiting["steps"] if s["name"] == "mint")["output"]["url"]
        # The link starts with the server's configured public URL; the test's server listens
        # on a port of its own, so the browser opens the same path there.
        link = server.url + urlsplit(url).path

        page.goto(link)
        expect(page.locator("h1")).to_have_text("Approval requested")
        facts = page.locator("dl")
        expect(facts).to_contain_text("page-linked")
        expect(facts).to_contain_text("p1")
        expect(facts).to_contain_text("decision")
        shot("page")
        page.get_by_role("button", name="Approve").click()
        expect(page.locator("#result")).to_have_text("Approved. Thank you.")
        shot("approved")
        done = wait_status(api, headers, f"{base}/p1", "complete")
        assert done["output"] == {"approved": True, "link": url}

        reply = page.goto(link)
        assert reply is not None and reply.status == 410
        expect(page.locator("h1")).to_have_text("This link has expired")
        shot("expired")
