"""A run that fails in the playground: the frames of the workflow's code under its error and
under each failed attempt; clicking one puts the editor's cursor on that line."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.browser.conftest import Shot
from tests.browser.test_playground import set_params, step, write_code
from tests.integration.test_tracebacks import PRICING


def cursor_line(page: Page) -> int:
    """The editor line (1-based) that holds the cursor, from the DOM selection."""
    return int(
        page.evaluate(
            """() => {
                const node = window.getSelection().anchorNode;
                const element = node.nodeType === 1 ? node : node.parentElement;
                const line = element.closest('.cm-line');
                return [...document.querySelectorAll('.cm-content .cm-line')].indexOf(line) + 1;
            }"""
        )
    )


def test_a_failed_run_shows_its_frames_and_a_click_goes_to_the_line(
    signed_in: Page, shot: Shot
) -> None:
    page = signed_in
    write_code(page, PRICING)
    set_params(page, "pricing", "{}")
    page.locator("#run").click()

    expect(page.locator("#run-status")).to_have_text("errored")
    step(page, "price", "errored")
    expect(page.locator("#result-body")).to_have_text("KeyError: 'missing'")
    frames = page.locator("#result-traceback .frame")
    expect(frames).to_have_text(
        ['File "workflow.py", line 10, in run', 'File "workflow.py", line 7, in price']
    )
    expect(page.locator("#result-traceback code")).to_have_text(
        [
            'return step.do("price", price, retries={"limit": 1, "delay": 0})',
            'total = event.payload["missing"]',
        ]
    )
    # Each failed attempt shows where its body raised.
    attempts = page.locator('#timeline .step[data-step="price"] .attempt.failed')
    expect(attempts).to_have_count(2)
    expect(attempts.locator(".frame")).to_have_text(['File "workflow.py", line 7, in price'] * 2)
    shot("traceback")

    frames.nth(1).click()
    expect(page.locator(".cm-content")).to_be_focused()
    assert cursor_line(page) == 7
    attempts.first.locator(".frame").click()
    assert cursor_line(page) == 7
    frames.nth(0).click()
    assert cursor_line(page) == 10
    shot("cursor-on-the-run-frame")
