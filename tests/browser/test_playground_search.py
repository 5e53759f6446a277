"""Past runs filtered in the playground: by status, tag, key and id prefix, across workflows."""

from __future__ import annotations

import textwrap

from playwright.sync_api import Page, expect

from tests.browser.conftest import Server, Shot
from tests.integration.app import APPROVAL, SUM
from treadle import Client


def shown(page: Page) -> list[str]:
    return [str(b.get_attribute("data-id")) for b in page.locator(".past-run").all()]


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
    expect(page.locator(".past-run")).to_have_count(3)
    assert shown(page) == ["srch-wait-2", "srch-wait-1", "srch-done"]

    page.locator("#runs-tag").fill("team=ml")
    expect(page.locator(".past-run")).to_have_count(2)
    assert shown(page) == ["srch-wait-1", "srch-done"]
    expect(page.locator('.past-run[data-id="srch-done"] .tags')).to_have_text("team=ml")
    shot("tag")

    page.locator("#runs-tag").fill("team=ml env=prod")
    expect(page.locator(".past-run")).to_have_count(1)
    assert shown(page) == ["srch-wait-1"]

    page.locator("#runs-tag").fill("")
    page.locator("#runs-status").select_option("complete")
    expect(page.locator(".past-run")).to_have_count(1)
    assert shown(page) == ["srch-done"]

    page.locator("#runs-status").select_option("")
    page.locator("#runs-key").fill("acme-key")
    expect(page.locator(".past-run")).to_have_count(1)
    assert shown(page) == ["srch-wait-2"]

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
