"""The everyday loop in the playground: past runs as cards that show everything and keep up with
runs started elsewhere, retries counted right, Ctrl+Enter, examples that keep their edits, a
``#key=`` link opened in an open tab, and ``/``."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Server, Shot
from tests.browser.test_playground import SHIPPING, editor_text, step, write_code
from tests.integration.app import ADMIN

TINY = textwrap.dedent(
    """\
    from treadle import WorkflowEntrypoint


    class Tiny(WorkflowEntrypoint):
        def run(self, event, step):
            return step.do("only", lambda: event.payload)
    """
)

DOOMED = textwrap.dedent(
    """\
    from treadle import WorkflowEntrypoint


    class Doomed(WorkflowEntrypoint):
        def run(self, event, step):
            def call():
                raise ValueError("still down")

            return step.do(
                "call service",
                call,
                retries={"limit": 2, "delay": 0.2, "backoff": "constant"},
            )
    """
)

LONG_NAME = "checkout-with-manager-approval"
LONGEST_NAME = "nightly-inventory-reconciliation-for-every-warehouse-in-europe-x"  # 64


@pytest.fixture
def api(server: Server) -> Iterator[httpx.Client]:
    """A client of the API as tenant acme: another client than the page, as the CLI is."""
    headers = {"Authorization": f"Bearer {server.key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        yield client


def _deploy(api: httpx.Client, name: str, source: str) -> None:
    reply = api.put(f"/v1/workflows/{name}", json={"source": source, "sandbox": "restricted"})
    assert reply.status_code in (200, 201), reply.text


def _start(api: httpx.Client, name: str, params: Any = None, id: str | None = None) -> str:
    body: dict[str, Any] = {"params": params}
    if id is not None:
        body["id"] = id
    reply = api.post(f"/v1/workflows/{name}/instances", json=body)
    if reply.status_code == 409:  # started by an earlier test of this server
        assert id is not None
        return id
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


def _many_runs(api: httpx.Client, count: int = 18) -> list[str]:
    """``count`` finished runs of workflow ``tiny``, the oldest first: more than a screen holds
    (and fewer than the 20 of a workflow that the list asks for)."""
    _deploy(api, "tiny", TINY)
    ids = [_start(api, "tiny", {"n": n}, id=f"tiny-{n:02}") for n in range(count)]
    for id in ids:
        _until(api, "tiny", id, "complete")
    return ids


def _until(api: httpx.Client, workflow: str, id: str, status: str) -> None:
    deadline = time.monotonic() + 30
    while (now := api.get(f"/v1/workflows/{workflow}/instances/{id}").json()["status"]) != status:
        assert time.monotonic() < deadline, f"{workflow}/{id} is {now}, never {status}"
        time.sleep(0.02)


_CARDS = """() => [...document.querySelectorAll('.past-run')].map((card) => {
  const box = (node) => {
    const r = node.getBoundingClientRect();
    return { left: r.left, top: r.top, right: r.right, bottom: r.bottom };
  };
  const name = card.querySelector('b');
  const when = card.querySelector('.when');
  return {
    workflow: card.dataset.workflow, card: box(card), status: box(card.querySelector('.status')),
    when: box(when), whenCut: when.scrollWidth > when.clientWidth,
    name: name.textContent, nameCut: name.scrollWidth > name.clientWidth,
    nameLines: Math.round(name.getBoundingClientRect().height
      / parseFloat(getComputedStyle(name).lineHeight)),
  };
})"""


def _inside(inner: dict[str, float], outer: dict[str, float]) -> bool:
    return (
        inner["left"] >= outer["left"]
        and inner["right"] <= outer["right"]
        and inner["top"] >= outer["top"]
        and inner["bottom"] <= outer["bottom"]
    )


def test_past_run_cards_show_the_whole_name_status_and_time(
    signed_in: Page, api: httpx.Client, shot: Shot
) -> None:
    page = signed_in
    for name in (LONG_NAME, LONGEST_NAME):
        _deploy(api, name, SHIPPING)
        waiting = _start(api, name, {"order": "W-1"})
        _until(api, name, waiting, "waiting")
        ended = _start(api, name, {"order": "T-1"})
        _until(api, name, ended, "waiting")
        api.patch(f"/v1/workflows/{name}/instances/{ended}/status", json={"status": "terminate"})
        _until(api, name, ended, "terminated")
    for width, height in ((1920, 1080), (1280, 800), (420, 900)):
        page.set_viewport_size({"width": width, "height": height})
        page.locator("#runs-refresh").click()
        longest = page.locator(f'.past-run[data-workflow="{LONGEST_NAME}"]')
        expect(longest).to_have_count(2)
        longest.first.scroll_into_view_if_needed()
        shot(f"cards-{width}")
        cards = [c for c in page.evaluate(_CARDS) if c["workflow"] in (LONG_NAME, LONGEST_NAME)]
        assert len(cards) == 4
        for card in cards:
            assert _inside(card["status"], card["card"]), (width, card)
            assert _inside(card["when"], card["card"]), (width, card)
            assert not card["whenCut"], (width, card)
            assert card["name"] == card["workflow"] and not card["nameCut"], (width, card)
        if width == 1920:  # room enough: not even wrapped
            lines = {card["workflow"]: card["nameLines"] for card in cards}
            assert lines[LONG_NAME] == 1, lines


def test_a_past_run_opens_in_sight(signed_in: Page, api: httpx.Client, shot: Shot) -> None:
    page = signed_in
    ids = _many_runs(api)
    for width, height in ((1440, 900), (800, 900)):
        page.set_viewport_size({"width": width, "height": height})
        page.locator("#runs-refresh").click()
        oldest = page.locator(f'.past-run[data-id="{ids[0]}"]')
        oldest.scroll_into_view_if_needed()  # as a user scrolls down the list to it
        oldest.click()
        expect(page.locator("#run-title")).to_have_text(f"tiny / {ids[0]}")
        expect(page.locator("#run-status")).to_have_text("complete")
        expect(page.locator("#run-title")).to_be_in_viewport()
        expect(page.locator("#run-status")).to_be_in_viewport()
        shot(f"opened-{width}")


def test_runs_started_elsewhere_show_up_on_their_own(
    signed_in: Page, api: httpx.Client, shot: Shot
) -> None:
    page = signed_in
    ids = _many_runs(api)
    page.locator("#runs-refresh").click()
    chosen = page.locator(f'.past-run[data-id="{ids[0]}"]')
    chosen.scroll_into_view_if_needed()  # far down the list
    chosen.click()
    expect(chosen).to_have_class("past-run current")
    assert page.evaluate("document.querySelector('#runs').scrollTop") > 0
    page.evaluate("() => { window.chosenCard = document.querySelector('.past-run.current'); }")
    where = chosen.bounding_box()
    assert where is not None
    shot("before")

    started = _start(api, "tiny", {"from": "elsewhere"})  # as `treadle run tiny` would
    expect(page.locator(f'.past-run[data-id="{started}"]')).to_be_attached()  # no ↻ pressed
    assert page.evaluate("() => document.querySelector('.past-run.current') === window.chosenCard")
    expect(chosen).to_have_class("past-run current")
    after = chosen.bounding_box()
    assert after is not None and abs(after["y"] - where["y"]) <= 1  # the list did not jump
    expect(page.locator("#run-title")).to_have_text(f"tiny / {ids[0]}")
    shot("after")


def test_retries_count_the_attempts_after_the_first(signed_in: Page, shot: Shot) -> None:
    page = signed_in
    write_code(page, DOOMED)
    page.locator("#workflow").fill("doomed")
    page.locator("#params").fill("{}")
    page.locator("#run").click()
    expect(page.locator("#run-status")).to_have_text("errored")
    step(page, "call service", "errored")
    item = page.locator('#timeline .step[data-step="call service"]')
    expect(item.locator(".attempt.failed")).to_have_count(3)  # the first and two retries
    expect(item.locator(".retries")).to_have_text("2 retries")
    shot("errored")


def test_ctrl_enter_runs_the_code_as_it_is(signed_in: Page, api: httpx.Client, shot: Shot) -> None:
    page = signed_in
    write_code(page, TINY)
    page.locator("#workflow").fill("keys")
    page.locator("#params").fill('{"by": "keys"}')
    page.locator(".cm-line").filter(has_text="class Tiny").click()  # the cursor in the code
    page.keyboard.press("Control+Enter")
    expect(page.locator("#run-status")).to_have_text("complete")
    first = page.locator("#run-title").inner_text()
    assert editor_text(page) == TINY
    expect(page.locator(".cm-line")).to_have_count(len(TINY.rstrip("\n").split("\n")) + 1)
    shot("ran")

    page.locator(".cm-line").filter(has_text="class Tiny").click()
    page.keyboard.press("Meta+Enter")
    expect(page.locator("#run-title")).not_to_have_text(first)
    expect(page.locator("#run-status")).to_have_text("complete")
    assert editor_text(page) == TINY
    workflow = api.get("/v1/workflows/keys").json()
    assert len(workflow["versions"]) == 1  # the same code: no new version
    runs = api.get("/v1/workflows/keys/instances").json()["instances"]
    assert len(runs) == 2


def test_examples_keep_their_edits(signed_in: Page, shot: Shot) -> None:
    page = signed_in
    page.locator("#example").select_option(label="Steps")
    expect(page.locator("#example-reset")).to_be_disabled()
    edited = TINY.replace("Tiny", "MyHello")
    write_code(page, edited)
    page.locator("#workflow").fill("my-hello")
    page.locator("#params").fill('{"name": "Edsger"}')
    expect(page.locator("#example-reset")).to_be_enabled()
    shot("edited")

    page.locator("#example").select_option(label="Sleep")
    expect(page.locator(".cm-line").filter(has_text="class Reminder")).to_be_visible()
    expect(page.locator("#workflow")).to_have_value("reminder")
    expect(page.locator("#example-reset")).to_be_disabled()
    page.locator("#params").fill('{"seconds": 1}')  # an edit to this example too

    page.locator("#example").select_option(label="Steps")
    expect(page.locator(".cm-line").filter(has_text="class MyHello")).to_be_visible()
    assert editor_text(page) == edited
    expect(page.locator("#workflow")).to_have_value("my-hello")
    expect(page.locator("#params")).to_have_value('{"name": "Edsger"}')
    shot("back")

    page.reload()  # kept in the browser
    expect(page.locator("#example")).to_have_value("Steps")
    assert editor_text(page) == edited
    page.locator("#example").select_option(label="Sleep")
    expect(page.locator("#params")).to_have_value('{"seconds": 1}')
    page.locator("#example").select_option(label="Steps")
    expect(page.locator("#workflow")).to_have_value("my-hello")

    page.locator("#example-reset").click()  # the original example back
    expect(page.locator(".cm-line").filter(has_text="class Hello(")).to_be_visible()
    expect(page.locator("#workflow")).to_have_value("hello")
    expect(page.locator("#example-reset")).to_be_disabled()
    shot("reset")


def test_a_key_link_opened_in_an_open_tab_signs_in(
    signed_in: Page, server: Server, shot: Shot
) -> None:
    page = signed_in
    with httpx.Client(base_url=server.url, timeout=30) as admin:
        reply = admin.post("/v1/admin/tenants", json={"name": "bravo", "policy": {}}, headers=ADMIN)
        assert reply.status_code == 201, reply.text
        key = admin.post("/v1/admin/tenants/bravo/keys", headers=ADMIN).json()["key"]
        headers = {"Authorization": f"Bearer {key}"}
        upload = {"source": TINY, "sandbox": "restricted"}
        assert admin.put("/v1/workflows/bravo-only", json=upload, headers=headers).is_success
        created = admin.post("/v1/workflows/bravo-only/instances", json={}, headers=headers)
        assert created.status_code == 201, created.text
    expect(page.locator("#signed-in-text")).to_contain_text(server.key[:8])
    page.evaluate("() => { window.sameDocument = true; }")

    page.goto(f"{server.url}/playground#key={key}")  # the address bar, in the open tab
    expect(page.locator("#signed-in-text")).to_contain_text(key[:8])
    assert page.evaluate("() => window.sameDocument === true")  # no reload: the hash changed
    assert page.evaluate("location.hash") == ""  # the key left the address bar
    assert page.evaluate("localStorage.getItem('treadle.playground.key')") == key
    expect(page.locator('.past-run[data-workflow="bravo-only"]')).to_have_count(1)
    expect(page.locator('.past-run:not([data-workflow="bravo-only"])')).to_have_count(0)
    shot("switched")


def test_the_root_leads_to_the_playground(page: Page, server: Server, shot: Shot) -> None:
    reply = httpx.get(f"{server.url}/", follow_redirects=False)
    assert reply.status_code == 307 and reply.headers["location"] == "/playground"
    page.goto(f"{server.url}/")
    expect(page).to_have_url(f"{server.url}/playground")
    expect(page.locator("#signin")).to_be_visible()
    shot("landed")
