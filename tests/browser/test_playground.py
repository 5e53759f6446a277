"""A user in the playground: write, run, follow live, send events, change status, reopen runs."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

import httpx
from playwright.sync_api import Page, Route, expect

from tests.browser.conftest import Server, Shot

SHIPPING = textwrap.dedent(
    """\
    from treadle import WorkflowEntrypoint


    class Shipping(WorkflowEntrypoint):
        def run(self, event, step):
            parcel = step.do("pack", lambda: {"parcel": event.payload["order"]})
            print("packed", parcel["parcel"])
            label = step.do("print label", lambda: "label-" + parcel["parcel"])
            got = step.wait_for_event("courier pickup", type="picked_up", timeout="1 hour")
            return {"label": label, "courier": got["payload"]["courier"]}
    """
)


def type_code(page: Page, source: str) -> None:
    """Type ``source`` into the editor key by key, as a person would.

    After each Enter the editor indents the new line by itself (and it closes brackets and
    quotes, which typing the closing one steps over): Shift+Home selects that indentation so
    that the line typed next, with its own, replaces it.
    """
    page.locator(".cm-content").click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    for number, line in enumerate(source.rstrip("\n").split("\n")):
        if number:
            page.keyboard.press("Enter")
            page.keyboard.press("Shift+Home")
        if line:
            page.keyboard.type(line)
        else:
            page.keyboard.press("Delete")  # an empty line: drop the selected indentation
    page.keyboard.press("Enter")


def editor_text(page: Page) -> str:
    """The editor's text, as the page keeps it in its draft."""
    return str(page.evaluate("JSON.parse(localStorage.getItem('treadle.playground.draft')).source"))


def write_code(page: Page, source: str) -> None:
    """Replace the editor's text with ``source``, entered as text input into CodeMirror."""
    page.locator(".cm-content").click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    # insert_text sends the text as one input event (as a paste would); typed key by key,
    # the editor's auto-indent would indent every line a second time.
    page.keyboard.insert_text(source)


def set_params(page: Page, workflow: str, params: str) -> None:
    page.locator("#workflow").fill(workflow)
    page.locator("#params").fill(params)


def step(page: Page, name: str, status: str) -> None:
    expect(
        page.locator(f'#timeline .step[data-step="{name}"][data-status="{status}"]')
    ).to_be_visible()


def test_write_run_wait_for_an_event_send_it_and_see_the_output(
    signed_in: Page, shot: Shot
) -> None:
    page = signed_in
    type_code(page, SHIPPING)
    set_params(page, "shipping", '{"order": "A-7"}')
    expect(page.locator(".cm-line").filter(has_text="class Shipping")).to_be_visible()
    assert editor_text(page).rstrip() == SHIPPING.rstrip()
    shot("written")
    page.locator("#run").click()

    step(page, "pack", "complete")
    step(page, "print label", "complete")
    step(page, "courier pickup", "waiting")
    expect(page.locator("#run-status")).to_have_text("waiting")
    expect(page.locator("#event-hint")).to_contain_text("'picked_up'")
    expect(page.locator("#event-type")).to_have_value("picked_up")  # prefilled from the wait
    expect(page.locator("#logs")).to_contain_text("packed A-7")
    expect(page.locator("#stream-state")).to_have_text("● live")
    shot("waiting")

    page.locator("#event-payload").fill('{"courier": "Rosa"}')
    page.locator("#event-send").click()
    expect(page.locator("#run-status")).to_have_text("complete")
    step(page, "courier pickup", "complete")
    expect(page.locator("#result-title")).to_have_text("Output")
    expect(page.locator("#result-body")).to_contain_text('"courier": "Rosa"')
    expect(page.locator("#result-body")).to_contain_text('"label": "label-A-7"')
    expect(page.locator("#stream-state")).to_have_text("stream ended")
    expect(page.locator('.past-run[data-workflow="shipping"] .status')).to_have_text("complete")
    shot("complete")


def test_invalid_code_is_marked_inline_with_its_line_and_column(
    signed_in: Page, shot: Shot
) -> None:
    page = signed_in
    broken = SHIPPING.replace("def run(self, event, step):", "def run(self, event, step)")
    write_code(page, broken)
    set_params(page, "broken", "{}")
    page.locator("#run").click()
    expect(page.locator("#problems")).to_contain_text("line 5, column 31")
    expect(page.locator("#problems")).to_contain_text("SyntaxError")
    expect(page.locator("#banner")).to_contain_text("1 problem, marked in the editor")
    expect(page.locator(".cm-lint-marker-error")).to_have_count(1)  # in the gutter of line 5
    expect(page.locator("#run-view")).to_be_hidden()
    shot("syntax-error")

    write_code(page, "import os\n" + SHIPPING)
    page.locator("#run").click()
    expect(page.locator("#problems")).to_contain_text("line 1, column 1")
    expect(page.locator("#problems")).to_contain_text("import of 'os' is not allowed")
    shot("import-refused")

    write_code(page, SHIPPING)
    page.locator("#params").fill('{"order": ')
    expect(page.locator("#params-error")).to_contain_text("not valid JSON")
    page.locator("#run").click()
    expect(page.locator("#run-view")).to_be_hidden()
    page.locator("#params").fill('{"order": "B-1"}')
    expect(page.locator("#params-error")).to_be_hidden()
    page.locator("#run").click()
    expect(page.locator("#problems")).to_be_hidden()
    expect(page.locator("#run-status")).to_have_text("waiting")
    shot("fixed")


def test_pause_resume_restart_and_terminate(signed_in: Page, shot: Shot) -> None:
    page = signed_in
    write_code(page, SHIPPING)
    set_params(page, "lifecycle", '{"order": "C-3"}')
    page.locator("#run").click()
    expect(page.locator("#run-status")).to_have_text("waiting")
    pause, resume = page.locator('[data-action="pause"]'), page.locator('[data-action="resume"]')
    expect(resume).to_be_disabled()

    pause.click()
    expect(page.locator("#run-status")).to_have_text("paused")
    expect(pause).to_be_disabled()
    expect(resume).to_be_enabled()
    shot("paused")

    resume.click()
    expect(page.locator("#run-status")).to_have_text("waiting")
    expect(pause).to_be_enabled()

    page.locator('[data-action="terminate"]').click()
    expect(page.locator("#run-status")).to_have_text("terminated")
    expect(page.locator("#result-title")).to_have_text("Terminated")
    expect(page.locator("#event-send")).to_be_disabled()
    expect(page.locator("#stream-state")).to_have_text("stream ended")
    shot("terminated")

    # A restart runs the finished instance again from the start; the live view follows it.
    page.locator('[data-action="restart"]').click()
    expect(page.locator("#run-status")).to_have_text("waiting")
    step(page, "courier pickup", "waiting")
    expect(page.locator("#stream-state")).to_have_text("● live")
    expect(page.locator("#event-hint")).to_contain_text("'picked_up'")
    expect(page.locator("#logs")).to_have_text(
        re.compile(r"packed C-3[\s\S]+restarted at[\s\S]+packed C-3")
    )
    expect(page.locator("#result")).to_be_hidden()
    shot("restarted")

    page.locator("#event-payload").fill('{"courier": "Li"}')
    page.locator("#event-send").click()
    expect(page.locator("#run-status")).to_have_text("complete")
    expect(page.locator("#result-body")).to_contain_text('"courier": "Li"')
    expect(page.locator('[data-action="terminate"]')).to_be_disabled()
    shot("complete")


def test_past_runs_reopen_with_their_history(signed_in: Page, shot: Shot) -> None:
    page = signed_in
    page.locator("#example").select_option(label="Steps")
    outputs = {}
    for name in ("Ada", "Grace"):
        page.locator("#params").fill(f'{{"name": "{name}"}}')
        page.locator("#run").click()
        expect(page.locator("#run-status")).to_have_text("complete")
        expect(page.locator("#result-body")).to_contain_text(f"Hello, {name}!")
        outputs[name] = page.locator("#run-title").inner_text().split(" / ")[1]

    page.reload()  # signed in still (the key is kept in this browser), the list from the server
    first = page.locator(f'.past-run[data-id="{outputs["Ada"]}"]')
    expect(page.locator(f'.past-run[data-id="{outputs["Grace"]}"]')).to_be_visible()
    shot("list")
    first.click()
    expect(page.locator("#run-title")).to_have_text(f"hello / {outputs['Ada']}")
    expect(page.locator("#result-body")).to_contain_text("Hello, Ada!")
    expect(page.locator("#logs")).to_contain_text("greeting: Hello, Ada!")  # replayed history
    step(page, "count letters", "complete")
    expect(first).to_have_class("past-run current")
    shot("reopened")


def test_retries_in_the_wasm_sandbox_a_fan_out_and_a_sleep(signed_in: Page, shot: Shot) -> None:
    page = signed_in
    page.locator("#example").select_option(label="Retries")
    page.locator("#sandbox").select_option("wasm")
    page.locator("#workflow").fill("flaky-wasm")
    page.locator("#run").click()
    step(page, "call service", "complete")
    item = page.locator('#timeline .step[data-step="call service"]')
    expect(item.locator(".retries")).to_have_text("2 retries")
    expect(item.locator(".attempt.failed")).to_have_count(2)
    expect(item.locator(".attempt.ok")).to_contain_text("attempt 3 succeeded")
    expect(page.locator("#result-body")).to_contain_text('"attempt": 3')
    shot("retried")

    page.locator("#example").select_option(label="Fan-out")
    page.locator("#sandbox").select_option("restricted")
    page.locator("#run").click()
    expect(page.locator("#run-status")).to_have_text("complete")
    for name in ("fetch prices", "fetch stock", "in stock"):
        step(page, name, "complete")
    expect(page.locator('#timeline .step[data-step="quote"]')).to_have_count(3)
    expect(page.locator("#result-body")).to_contain_text('"plum": 5')
    shot("fan-out")

    page.locator("#example").select_option(label="Sleep")
    page.locator("#params").fill('{"seconds": 2}')
    page.locator("#run").click()
    expect(page.locator('#timeline .step[data-step="wait a little"] .detail')).to_contain_text(
        "sleeping until"
    )
    shot("sleeping")
    expect(page.locator("#run-status")).to_have_text("complete")
    step(page, "wait a little", "complete")
    step(page, "send reminder", "complete")
    shot("slept")


def test_sign_in_with_the_key_link_and_clear_errors(page: Page, server: Server, shot: Shot) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{server.url}/playground#key={server.key}")
    expect(page.locator("#signed-in-text")).to_contain_text(server.key[:8])
    assert page.evaluate("location.hash") == ""  # the key left the address bar at once
    assert all(server.key not in url for url in requested)  # and never went over the wire
    shot("signed-in")

    page.locator("#signout").click()
    expect(page.locator("#signin")).to_be_visible()
    page.locator("#key").fill("tdl_not_a_real_key")
    page.locator("#signin button").click()
    expect(page.locator("#banner")).to_contain_text("refused the API key")
    expect(page.locator("#signin")).to_be_visible()
    shot("refused")

    page.locator("#key").fill(server.key)
    page.locator("#signin button").click()
    expect(page.locator("#signed-in")).to_be_visible()
    expect(page.locator("#banner")).to_be_hidden()
    page.route("**/v1/workflows/**", lambda route: route.abort())
    page.locator("#run").click()
    expect(page.locator("#banner")).to_contain_text("Cannot reach the treadle server")
    shot("offline")


def test_a_cut_stream_resumes_after_the_last_event_it_got(
    signed_in: Page, server: Server, shot: Shot
) -> None:
    page = signed_in
    headers = {"Authorization": f"Bearer {server.key}"}
    base = f"{server.url}/v1/workflows/resume/instances"
    with httpx.Client(headers=headers, timeout=30) as api:
        upload = {"source": SHIPPING, "sandbox": "restricted"}
        assert api.put(f"{server.url}/v1/workflows/resume", json=upload).status_code == 201
        api.post(base, json={"id": "r1", "params": {"order": "R-1"}}).raise_for_status()
        first = _events_until(api, f"{base}/r1/stream", "step.completed")
    # The first connection gets the history up to the first step, then the server "goes away";
    # every later one goes through to the real server.
    asked: list[str | None] = []

    def cut_once(route: Route) -> None:
        asked.append(route.request.headers.get("last-event-id"))
        if len(asked) == 1:
            route.fulfill(status=200, content_type="text/event-stream", body=first.text)
        else:
            route.continue_()

    page.route("**/v1/workflows/resume/instances/r1/stream", cut_once)
    page.locator("#runs-refresh").click()
    page.locator('.past-run[data-id="r1"]').click()
    # Only the second connection has the events after the first step: the wait names its type.
    expect(page.locator("#event-hint")).to_contain_text("'picked_up'")
    step(page, "courier pickup", "waiting")
    expect(page.locator("#stream-state")).to_have_text("● live")
    assert asked[:2] == [None, str(first.last_id)]
    expect(page.locator("#logs")).to_have_text(re.compile(r"^\S+ packed R-1\n$"))  # once
    shot("resumed")
    page.locator("#event-payload").fill('{"courier": "Ana"}')
    page.locator("#event-send").click()
    expect(page.locator("#result-body")).to_contain_text('"courier": "Ana"')


@dataclass
class _Events:
    text: str
    last_id: int


def _events_until(api: httpx.Client, url: str, kind: str) -> _Events:
    """The stream's raw text up to and including the first event of type ``kind``."""
    text = ""
    with api.stream("GET", url) as reply:
        for line in reply.iter_lines():
            text += line + "\n"
            if line == "" and f"event: {kind}\n" in text:
                ids = re.findall(r"^id: (\d+)$", text, re.MULTILINE)
                return _Events(text, int(ids[-1]))
    raise AssertionError(f"the stream ended before a {kind} event: {text}")
