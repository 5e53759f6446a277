"""Past runs filtered in the playground: by status, tag, key and id prefix, across workflows."""

from __future__ import annotations

import re
import textwrap
import time

from playwright.sync_api import Page, expect

from tests.browser.conftest import Server, Shot
from tests.integration.app import APPROVAL, SUM
from treadle import Client


def shown(page: Page) -> list[str]:
    """The ids the panel lists, read at one moment: the list may be replaced at any time."""
    ids = page.eval_on_selector_all(".past-run", "runs => runs.map((run) => run.dataset.id)")
    return [str(id) for id in ids]


def until_shown(page: Page, ids: list[str], timeout: float = 10.0) -> None:
    """Wait for the panel to list exactly ``ids``: a filter's answer replaces the list a moment
    after the input changes, and the list before may have as many runs."""
    deadline = time.monotonic() + timeout
    while (now := shown(page)) != ids:
        assert time.monotonic() < deadline, f"the panel shows {now}, not {ids}"
        page.wait_for_timeout(50)


def test_past_runs_are_filtered_by_status_tag_key_and_id_prefix(
    signed_in: Page, server: Server, shot: Shot
) -> None:
    page = signed_in
    with Client(server.url, api_key=server.key) as sdk:
        sdk.deploy("search-sum", textwrap.dedent(SUM))
        sdk.deploy("search-wait", textwrap.dedent(APPROVAL))
        sdk.create("search-sum", {"x": 1}, id="srch-done", tags={"team": "ml"})
        sdk.create("search-wait", None, id="srch-wait-1", tags={"team": "ml", "env": "prod"})
        sdk.create("search-wait", None, id="srch-wait-2", key="acme-key", tags={"team": "web"})
        sdk.wait("search-sum", "srch-done")

    page.locator("#runs-id-prefix").fill("srch-")
    until_shown(page, ["srch-wait-2", "srch-wait-1", "srch-done"])

    page.locator("#runs-tag").fill("team=ml")
    until_shown(page, ["srch-wait-1", "srch-done"])
    expect(page.locator('.past-run[data-id="srch-done"] .tags')).to_have_text("team=ml")
    shot("tag")

    page.locator("#runs-tag").fill("team=ml env=prod")
    until_shown(page, ["srch-wait-1"])

    page.locator("#runs-tag").fill("")
    page.locator("#runs-status").select_option("complete")
    until_shown(page, ["srch-done"])

    page.locator("#runs-status").select_option("")
    page.locator("#runs-key").fill("acme-key")
    until_shown(page, ["srch-wait-2"])

    page.locator("#runs-key").fill("no-such-key")
    expect(page.locator("#runs .hint")).to_have_text("no runs match")
    shot("none")

    # A filtered run opens as any other; the periodic refresh keeps the filter.
    page.locator("#runs-key").fill("")
    page.locator("#runs-tag").fill("env=prod")
    page.locator('.past-run[data-id="srch-wait-1"]').click()
    expect(page.locator("#run-title")).to_contain_text("search-wait / srch-wait-1")
    page.locator("#runs-refresh").click()
    expect(page.locator(".past-run")).to_have_count(1)

    # A tag without "=" says how to give one.
    page.locator("#runs-tag").fill("novalue")
    page.locator("#runs-refresh").click()
    expect(page.locator("#banner")).to_contain_text("k=v")


def test_a_run_takes_its_tags_from_the_run_form(
    signed_in: Page, server: Server, shot: Shot
) -> None:
    page = signed_in
    page.locator("#example").select_option(label="Approval event")
    page.locator("#workflow").fill("tagged-run")
    page.locator("#run-options summary").click()

    # Not k=v: said under the field, and nothing is sent.
    page.locator("#run-tags").fill("team=ml oops")
    page.locator("#run").click()
    expect(page.locator("#run-options-error")).to_have_text("Give tags as k=v, not 'oops'.")
    expect(page.locator("#run-tags")).to_have_class(re.compile(r"\binvalid\b"))
    shot("tag-not-k-v")

    # A key the server refuses: its 400 names the field, which is marked; no run starts.
    page.locator("#run-tags").fill("b@d=1")
    page.locator("#run").click()
    expect(page.locator("#run-tags")).to_have_class(re.compile(r"\binvalid\b"))
    expect(page.locator("#run-options-error")).to_contain_text("tags: key 'b@d' must be")
    with Client(server.url, api_key=server.key) as sdk:
        assert sdk.instances("tagged-run").instances == []

    page.locator("#run-tags").fill("team=ml env=prod")
    expect(page.locator("#run-options-summary")).to_contain_text("2 tags")
    page.locator("#run").click()
    expect(page.locator("#run-status")).to_have_text("waiting")
    created = page.locator("#run-title").inner_text().split(" / ")[1]
    with Client(server.url, api_key=server.key) as sdk:
        assert sdk.get("tagged-run", created).tags == {"team": "ml", "env": "prod"}
    page.locator("#runs-tag").fill("team=ml env=prod")
    page.locator("#runs-id-prefix").fill(created)
    until_shown(page, [created])
    expect(page.locator(f'.past-run[data-id="{created}"] .tags')).to_have_text("team=ml env=prod")
    shot("tagged-run")
    page.locator('[data-action="terminate"]').click()
    expect(page.locator("#run-status")).to_have_text("terminated")
