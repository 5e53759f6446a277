"""The playground in a real browser: Debian's Chromium, driven by Playwright, against a real server.

The server is the whole platform (API, engine, sandboxes) behind uvicorn on a free port, as
``treadle serve`` runs it, on a SQLite file. Playwright never downloads a browser here: the tests
launch ``/usr/bin/chromium`` (``scripts/test`` installs it) and fail loudly when it is missing.
Each test saves a screenshot of each state it checks under ``tests/browser/artifacts/``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from dispatcher import Platform, create_app
from tests.integration.app import new_tenant, served, settings

CHROMIUM = Path(os.environ.get("TREADLE_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).parent / "artifacts"
# Generous: the machine running the tests may be busy; auto-waiting returns as soon as it can.
TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class Server:
    url: str
    key: str  # an API key of tenant "acme"


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    database = tmp_path_factory.mktemp("browser") / "treadle.db"
    platform = Platform(settings(f"sqlite:///{database}"))
    try:
        with served(create_app(platform)) as client:
            key = new_tenant(client, "acme")["Authorization"].removeprefix("Bearer ")
            yield Server(str(client.base_url).rstrip("/"), key)
    finally:
        platform.close()


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(server: Server, playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"the browser tests need Chromium at {CHROMIUM}: run scripts/test as root "
            "(it installs Debian's chromium) or apt-get install chromium",
            pytrace=False,
        )
    launched = playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        args=["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"],
    )
    yield launched
    launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page (empty storage); a script error on it fails the test."""
    context = browser.new_context(viewport={"width": 1440, "height": 960})
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert not errors, f"script errors on the page: {errors}"


@pytest.fixture
def signed_in(page: Page, server: Server) -> Page:
    """The playground, signed in as tenant acme through the ``#key=`` link."""
    page.goto(f"{server.url}/playground#key={server.key}")
    expect(page.locator("#signed-in")).to_be_visible()
    return page


@pytest.fixture
def shot(request: pytest.FixtureRequest, page: Page) -> Shot:
    return Shot(page, re.sub(r"[^\w-]+", "-", request.node.name).strip("-"))


class Shot:
    """Saves ``artifacts/<test>-<state>.png``: what the page showed in that state."""

    def __init__(self, page: Page, test: str) -> None:
        self._page = page
        self._test = test

    def __call__(self, state: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{self._test}-{state}.png"
        self._page.screenshot(path=str(path), full_page=True)
        return path


expect.set_options(timeout=TIMEOUT_MS)
