"""The playground on a server's first start, while it builds the Python-in-Wasm runtime: a run
in the wasm sandbox says why it waits, then runs by itself once the runtime is built."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from dispatcher import Platform, create_app
from sandbox import RuntimeBuild
from tests.browser.conftest import Server, Shot
from tests.browser.test_playground import set_params, step, write_code
from tests.integration.app import new_tenant, served, settings
from tests.wasm_guests import StandInBuild, python_runtime

GREET = textwrap.dedent(
    """\
    from treadle import WorkflowEntrypoint


    class Greet(WorkflowEntrypoint):
        def run(self, event, step):
            greeting = step.do("greet", lambda: "hello, " + event.payload["name"])
            return {"greeting": greeting}
    """
)


@pytest.fixture
def first_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Server, StandInBuild]]:
    """A server on a fresh cache whose runtime build holds until the test releases it."""
    build = StandInBuild(python_runtime())
    monkeypatch.setenv("TREADLE_CACHE_DIR", str(tmp_path / "cache"))
    platform = Platform(
        settings(f"sqlite:///{tmp_path / 'treadle.db'}"), wasm_build=RuntimeBuild(build)
    )
    try:
        with served(create_app(platform)) as client:
            key = new_tenant(client, "acme")["Authorization"].removeprefix("Bearer ")
            yield Server(str(client.base_url).rstrip("/"), key), build
    finally:
        build.release.set()
        platform.close()


def test_a_wasm_run_says_the_runtime_is_building_then_runs(
    page: Page, first_start: tuple[Server, StandInBuild], shot: Shot
) -> None:
    server, build = first_start
    page.goto(f"{server.url}/playground#key={server.key}")
    expect(page.locator("#signed-in")).to_be_visible()
    write_code(page, GREET)
    set_params(page, "greet-wasm", '{"name": "ann"}')
    page.locator("#sandbox").select_option("wasm")
    page.locator("#run").click()
    expect(page.locator("#run-hint")).to_have_text(
        re.compile(r"^building the Python-in-Wasm runtime \(first start only\), about \d+ s…$")
    )
    expect(page.locator("#run")).to_be_disabled()  # one upload at a time, this one still on
    shot("building")
    build.release.set()
    step(page, "greet", "complete")
    expect(page.locator("#result-body")).to_contain_text('"greeting": "hello, ann"')
    expect(page.locator("#run-hint")).to_have_text("")
    shot("complete")
