"""Flow control and schedules in the playground: why a queued run waits (its key at its
concurrency limit, a singleton's live run, a delay), and the schedules panel of a workflow."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser.conftest import Shot
from tests.browser.test_playground import step

FIRED = re.compile(r"^often-\d{8}T\d{6}Z$")
AT = re.compile(r"^(\w+ \d+, \d{4} )?\d\d:\d\d:\d\d$")  # a time, with its date if not today


def run_id(page: Page) -> str:
    return page.locator("#run-title").inner_text().split(" / ")[1]


def open_past_run(page: Page, instance_id: str) -> None:
    page.locator("#runs-refresh").click()
    page.locator(f'.past-run[data-id="{instance_id}"]').click()
    expect(page.locator("#run-title")).to_contain_text(f"/ {instance_id}")


def flow_options(page: Page, flow: str = "", key: str = "", priority: str = "") -> None:
    options = page.locator("#run-options")
    if options.get_attribute("open") is None:
        page.locator("#run-options summary").click()
    page.locator("#flow").fill(flow)
    page.locator("#run-key").fill(key)
    page.locator("#run-priority").fill(priority)


def send_approval(page: Page) -> None:
    expect(page.locator("#event-type")).to_have_value("approved")
    page.locator("#event-payload").fill('{"by": "Mo"}')
    page.locator("#event-send").click()
    expect(page.locator("#run-status")).to_have_text("complete")


def test_a_run_queued_behind_its_key_says_why_and_a_singleton_offers_the_live_run(
    signed_in: Page, shot: Shot
) -> None:
    page = signed_in
    page.locator("#example").select_option(label="Approval event")
    page.locator("#workflow").fill("keyed-approval")
    flow_options(page, '{"concurrency_per_key": 1}', "acme", "7")
    page.locator("#run").click()
    expect(page.locator("#run-status")).to_have_text("waiting")
    first = run_id(page)
    expect(page.locator("#run-flow")).to_have_text("key 'acme' · priority 7")
    expect(page.locator("#waiting-reason")).to_have_count(0)  # it runs: nothing holds it back

    # The second run of the key waits for the first, which holds the key's one slot.
    page.locator("#run").click()
    expect(page.locator("#run-title")).not_to_have_text(f"keyed-approval / {first}")
    second = run_id(page)
    expect(page.locator("#run-status")).to_have_text("queued")
    reason = page.locator("#waiting-reason")
    expect(reason).to_have_text("waiting: key 'acme' is at its concurrency limit")
    expect(reason).to_have_attribute("data-reason", "concurrency_key")
    expect(page.locator("#run-flow")).to_have_text("key 'acme' · priority 7")
    expect(page.locator("#run-options-summary")).to_contain_text("key 'acme', priority 7, flow")
    shot("queued-behind-its-key")

    # Once the first has finished, the second starts by itself: the view follows it live.
    open_past_run(page, first)
    send_approval(page)
    open_past_run(page, second)
    step(page, "manager approval", "waiting")
    expect(page.locator("#waiting-reason")).to_have_count(0)
    send_approval(page)
    shot("second-ran")

    # A singleton refuses a second live run of the key, and offers to open the live one.
    flow_options(page, '{"singleton": true}', "solo")
    page.locator("#run").click()
    expect(page.locator("#run-status")).to_have_text("waiting")
    live = run_id(page)
    page.locator("#runs-refresh").click()
    page.locator(".past-run").first.click()  # look at another run meanwhile
    page.locator("#run").click()
    expect(page.locator("#banner")).to_contain_text("instance.singleton, HTTP 409")
    action = page.locator("#banner-action")
    expect(action).to_have_text(f"Open {live}")
    shot("singleton-refused")
    action.click()
    expect(page.locator("#run-title")).to_have_text(f"keyed-approval / {live}")
    expect(page.locator("#banner")).to_be_hidden()
    send_approval(page)

    # A delayed run says when it starts; a priority out of range is refused before any request.
    flow_options(page, "", "", "12")
    page.locator("#run").click()
    expect(page.locator("#run-options-error")).to_have_text(
        "Priority must be a whole number from 0 to 9."
    )
    expect(page.locator("#run-priority")).to_have_class(re.compile(r"\binvalid\b"))
    flow_options(page)
    page.locator("#run-delay").fill("1 hour")
    page.locator("#run").click()
    expect(page.locator("#run-status")).to_have_text("queued")
    expect(page.locator("#waiting-reason")).to_have_text(
        re.compile(rf"^waiting: starts at {AT.pattern[1:]}")
    )
    expect(page.locator("#run-flow")).to_be_hidden()
    shot("delayed")
    page.locator('[data-action="terminate"]').click()
    expect(page.locator("#run-status")).to_have_text("terminated")
    page.locator("#run-delay").fill("")

    # Debounced: a second create of the key merges into the first, which says when it starts.
    flow_options(page, '{"debounce": "1 hour"}', "doc")
    page.locator("#run").click()
    expect(page.locator("#run-status")).to_have_text("queued")
    pending = run_id(page)
    expect(page.locator("#waiting-reason")).to_have_text(
        re.compile(rf"^waiting: debounced — starts at {AT.pattern[1:]}")
    )
    page.locator("#run").click()
    expect(page.locator("#run-hint")).to_have_text(
        f"debounced into {pending}: it runs once, with these params"
    )
    expect(page.locator("#run-title")).to_have_text(f"keyed-approval / {pending}")
    expect(page.locator("#waiting-reason")).to_have_attribute("data-reason", "debounce")
    shot("debounced")
    page.locator('[data-action="terminate"]').click()
    expect(page.locator("#run-status")).to_have_text("terminated")


def test_schedules_panel_creates_fires_pauses_and_deletes_a_schedule(
    signed_in: Page, shot: Shot
) -> None:
    page = signed_in
    page.locator("#example").select_option(label="Steps")
    page.locator("#workflow").fill("ticker")
    expect(page.locator("#schedules-workflow")).to_have_text("ticker")
    page.locator("#run").click()  # uploads the workflow: a schedule needs one
    expect(page.locator("#run-status")).to_have_text("complete")
    page.locator("#schedules-refresh").click()
    expect(page.locator("#schedules-hint")).to_contain_text("No schedule yet")

    # A bad cron expression: the server's 400 is shown under the form, at its field.
    page.locator("#schedule-id").fill("broken")
    page.locator("#schedule-kind").select_option("cron")
    page.locator("#schedule-when").fill("61 * * * *")
    page.locator("#schedule-save").click()
    error = page.locator("#schedule-error")
    expect(error).to_contain_text("cron: '61 * * * *' is not a valid cron expression")
    expect(error).to_contain_text("HTTP 400")
    expect(page.locator("#schedule-when")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#banner")).to_be_hidden()
    expect(page.locator("#schedule-rows tr")).to_have_count(0)  # nothing was written
    shot("bad-cron")

    # Every 2 seconds, from the keyboard: listed with its next fire, then a fire's run.
    page.locator("#schedule-id").fill("often")
    page.locator("#schedule-kind").select_option("every")
    page.locator("#schedule-when").fill("2 seconds")
    page.locator("#schedule-params").fill('{"name": "Tick"}')
    page.locator("#schedule-params").press("Tab")  # overlap
    page.keyboard.press("Tab")  # catch-up
    page.keyboard.press("Tab")  # Save
    expect(page.locator("#schedule-save")).to_be_focused()
    page.keyboard.press("Enter")
    expect(error).to_be_hidden()
    expect(page.locator("#schedule-result")).to_contain_text("created often: next fire")
    row = page.locator('#schedule-rows tr[data-id="often"]')
    expect(row.locator(".when")).to_have_text("every 2 s")
    expect(row.locator(".timezone")).to_have_text("UTC")
    expect(row.locator(".next")).to_have_text(AT)
    expect(row.locator(".state")).to_have_text("active")
    fired = row.locator("button.fired")
    expect(fired).to_have_text(FIRED)  # within a few seconds
    shot("listed-and-fired")
    fired.click()
    expect(page.locator("#run-title")).to_have_text(re.compile(r"^ticker / often-\d{8}T\d{6}Z$"))
    expect(page.locator("#run-status")).to_have_text("complete")
    expect(page.locator("#result-body")).to_contain_text("Hello, Tick!")
    shot("fired-run-opened")

    row.locator('[data-schedule-action="toggle"]').click()
    expect(row.locator(".state")).to_have_text("paused")
    expect(row.locator(".next")).to_have_text("paused")
    expect(row.locator('[data-schedule-action="toggle"]')).to_have_text("Resume")
    shot("paused")
    page.set_viewport_size({"width": 420, "height": 900})  # a phone: the panel still fits
    page.locator("#run-options summary").click()  # the flow control fields too
    row.scroll_into_view_if_needed()
    assert page.evaluate("document.documentElement.scrollWidth") <= 420
    shot("paused-narrow")
    page.set_viewport_size({"width": 1440, "height": 960})

    remove = row.locator('[data-schedule-action="delete"]')
    remove.click()
    expect(remove).to_have_text("Confirm delete")
    remove.click()
    expect(page.locator('#schedule-rows tr[data-id="often"]')).to_have_count(0)
    expect(page.locator("#schedules-hint")).to_contain_text("No schedule yet")
    expect(page.locator("#schedule-result")).to_contain_text("deleted often")
    shot("deleted")
