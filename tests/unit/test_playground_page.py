"""The playground's page and assets as a browser fetches them (no database needed)."""

from __future__ import annotations

import fnmatch
import gzip
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

import playground
from dispatcher.http._errors import HANDLERS
from tests.integration.app import served

ROOT = Path(__file__).parents[2]
STATIC = ROOT / "playground" / "static"


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with served(Starlette(routes=playground.routes(), exception_handlers=HANDLERS)) as http:
        yield http


def _asset_urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/playground/assets/[^"]+)"', html)


def test_the_page_names_its_assets_under_one_build_id(client: httpx.Client) -> None:
    page = client.get("/playground")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    urls = _asset_urls(page.text)
    assert {url.rsplit("/", 1)[1] for url in urls} == {"favicon.svg", "playground.css", "app.js"}
    assert len({url.rsplit("/", 2)[1] for url in urls}) == 1
    assert "{{" not in page.text


def test_the_root_redirects_to_the_playground(client: httpx.Client) -> None:
    reply = client.get("/", follow_redirects=False)
    assert reply.status_code == 307 and reply.headers["location"] == "/playground"
    assert client.head("/", follow_redirects=False).status_code == 307
    landed = client.get("/", follow_redirects=True)
    assert landed.url.path == "/playground" and "treadle playground" in landed.text


def test_assets_are_served_with_their_types_cached_for_good_and_gzipped(
    client: httpx.Client,
) -> None:
    base = _asset_urls(client.get("/playground").text)[0].rsplit("/", 1)[0]
    types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    types[".txt"] = "text/plain"  # the licences of the bundled editor
    for file in STATIC.iterdir():
        if file.name in ("index.html", "console.html"):  # pages, not assets
            continue
        reply = client.get(f"{base}/{file.name}", headers={"Accept-Encoding": "identity"})
        assert reply.status_code == 200, file.name
        assert reply.headers["content-type"].startswith(types[file.suffix])
        assert reply.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert reply.content == file.read_bytes()
    packed = client.get(f"{base}/editor.js", headers={"Accept-Encoding": "gzip"})
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.content == (STATIC / "editor.js").read_bytes()
    assert len(gzip.compress(packed.content)) < 200_000  # the whole editor, minified


def test_an_unknown_asset_or_an_old_build_is_not_found(client: httpx.Client) -> None:
    base = _asset_urls(client.get("/playground").text)[0].rsplit("/", 1)[0]
    missing = client.get(f"{base}/nope.js")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert client.get("/playground/assets/0123456789abcdef/app.js").status_code == 404
    assert client.get(f"{base}/index.html").status_code == 404
    assert client.get(f"{base}/console.html").status_code == 404


def test_the_console_page_names_its_assets_under_the_same_build(client: httpx.Client) -> None:
    page = client.get("/console")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert (
        page.headers["content-security-policy"]
        == client.get("/playground").headers["content-security-policy"]
    )
    urls = _asset_urls(page.text)
    names = {url.rsplit("/", 1)[1] for url in urls}
    assert names == {"favicon.svg", "playground.css", "console.css", "console.js"}
    assert {url.rsplit("/", 2)[1] for url in urls} == {
        url.rsplit("/", 2)[1] for url in _asset_urls(client.get("/playground").text)
    }


def test_every_static_file_ships_in_the_package() -> None:
    """pyproject's package-data must name every file the page loads (no npm at install)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["playground"]
    for file in STATIC.rglob("*"):
        name = file.relative_to(ROOT / "playground").as_posix()
        assert file.is_dir() or any(fnmatch.fnmatch(name, p) for p in patterns), name


def test_the_page_imports_only_files_that_exist() -> None:
    for script in STATIC.glob("*.js"):
        if script.name == "editor.js":  # the bundle: imports nothing
            assert "import " not in script.read_text()[:200]
            continue
        for imported in re.findall(r'from "\./([^"]+)"', script.read_text()):
            assert (STATIC / imported).is_file(), (script.name, imported)


def test_every_element_the_page_script_names_is_on_the_page() -> None:
    """``$("id")`` in app.js, and the fields of its forms (run options, schedules), exist."""
    script = (STATIC / "app.js").read_text()
    ids = set(re.findall(r'\bid="([\w-]+)"', (STATIC / "index.html").read_text()))
    named = set(re.findall(r'\$\("([\w-]+)"\)', script))
    for table in re.findall(r"const (?:OPTION|SCHEDULE)_FIELDS = \{([^}]+)\}", script):
        named |= set(re.findall(r':\s*"([\w-]+)"', table))
    assert named and named <= ids, sorted(named - ids)
    assert {"schedules-panel", "schedule-form", "run-key", "run-priority", "run-delay"} <= ids
