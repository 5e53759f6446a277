"""The first start on a machine, which builds the Python-in-Wasm runtime, as a user sees it
through the HTTP API and the command line, on SQLite and PostgreSQL.

Each server here has a fresh, empty cache (``TREADLE_CACHE_DIR``) and a build that takes as
long as the test says (``StandInBuild``: it holds until released, then copies this machine's
runtime, built for real earlier, into the fresh cache). So the building state can be looked at
for as long as needed, and what runs afterwards is the real runtime.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from dispatcher import Platform, create_app
from sandbox import RuntimeBuild
from sandbox.wasm._build import component_path, record_build_seconds
from tests.integration.app import SUM, deploy, new_tenant, served, settings, wait_for, wait_status
from tests.wasm_guests import StandInBuild, python_runtime
from treadle.client import main

WASM_SUM = {"source": textwrap.dedent(SUM), "sandbox": "wasm"}


@pytest.fixture
def runtime() -> Path:
    """This machine's compiled runtime (built once, by scripts/test or the first test)."""
    return python_runtime()


@pytest.fixture
def fresh_cache(runtime: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("TREADLE_CACHE_DIR", str(cache))  # the server and its workers' cache
    return cache


@contextmanager
def first_start(database_url: str, build: StandInBuild) -> Iterator[httpx.Client]:
    """A server as on its first start on this machine: the runtime not built yet."""
    platform = Platform(settings(database_url), wasm_build=RuntimeBuild(build))
    try:
        with served(create_app(platform)) as client:
            yield client
    finally:
        build.release.set()
        platform.close()


def put(client: httpx.Client, headers: dict[str, str], name: str) -> httpx.Response:
    return client.put(f"/v1/workflows/{name}", json=WASM_SUM, headers=headers)


def run_sum(client: httpx.Client, headers: dict[str, str], name: str, id: str) -> dict[str, object]:
    body = {"id": id, "params": {"x": 1}}
    assert client.post(f"/v1/workflows/{name}/instances", json=body, headers=headers).is_success
    return wait_status(client, headers, f"/v1/workflows/{name}/instances/{id}", "complete")


def test_an_upload_while_the_runtime_builds_is_answered_202_and_deployed_once_built(
    database_url: str, runtime: Path, fresh_cache: Path
) -> None:
    build = StandInBuild(runtime)
    with first_start(database_url, build) as client:
        acme = new_tenant(client, "acme")
        began = time.monotonic()
        reply = put(client, acme, "sum")
        assert time.monotonic() - began < 5  # at once: never held for the build
        assert reply.status_code == 202, reply.text
        body = reply.json()
        assert body["status"] == "building"
        assert body["message"].startswith("building the Python-in-Wasm runtime, about ")
        assert body["message"].endswith(" s left")
        assert 1 <= body["retry_after"] <= 60
        assert reply.headers["Retry-After"] == str(body["retry_after"])
        # Nothing was kept of it: the client sends it again.
        assert client.get("/v1/workflows/sum", headers=acme).status_code == 404
        # Restricted code is deployed and runs meanwhile.
        deploy(client, acme, "plain", SUM)
        assert run_sum(client, acme, "plain", "p1")["output"] == {"a": 2, "vars": {}}
        assert put(client, acme, "sum").status_code == 202  # still building
        build.release.set()
        reply = wait_for(lambda: {"reply": put(client, acme, "sum")}, _deployed)["reply"]
        assert reply.json()["sandbox"] == "wasm"
        assert run_sum(client, acme, "sum", "w1")["output"] == {"a": 2, "vars": {}}


def _deployed(answer: dict[str, httpx.Response]) -> bool:
    reply = answer["reply"]
    assert reply.status_code in (201, 202), reply.text
    return reply.status_code == 201


def test_a_wasm_run_queued_while_the_runtime_builds_waits_then_completes(
    database_url: str, runtime: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, "treadle.engine")
    # Deployed on a server whose runtime is built: the usual cache.
    platform = Platform(settings(database_url))
    try:
        with served(create_app(platform)) as client:
            acme = new_tenant(client, "acme")
            assert put(client, acme, "sum").status_code == 201
            key = acme
    finally:
        platform.close()
    # The next start needs another runtime (an upgrade changed its inputs, say).
    monkeypatch.setenv("TREADLE_CACHE_DIR", str(tmp_path / "cache"))
    build = StandInBuild(runtime)
    with first_start(database_url, build) as client:
        body = {"id": "w1", "params": {"x": 1}}
        assert client.post("/v1/workflows/sum/instances", json=body, headers=key).is_success
        waits = "instance w1 waits for its sandbox: building the Python-in-Wasm runtime"
        wait_for(lambda: {"logged": [r.getMessage() for r in caplog.records]},
                 lambda seen: any(m.startswith(waits) for m in seen["logged"]))  # fmt: skip
        instance = client.get("/v1/workflows/sum/instances/w1", headers=key).json()
        assert instance["status"] in ("queued", "running"), instance
        assert instance["error"] is None
        build.release.set()
        done = wait_status(client, key, "/v1/workflows/sum/instances/w1", "complete")
        assert done["output"] == {"a": 2, "vars": {}}


def test_a_failed_build_answers_503_with_its_reason_and_restricted_code_still_runs(
    database_url: str, runtime: Path, fresh_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reason = "componentize-py failed: No space left on device"
    build = StandInBuild(runtime, seconds=0, fail=reason)
    with first_start(database_url, build) as client:
        acme = new_tenant(client, "acme")
        wait_for(lambda: {"reply": put(client, acme, "sum")}, _failed)
        reply = put(client, acme, "sum")
        assert reply.status_code == 503
        assert reply.json()["error"] == {
            "code": "wasm.unavailable",
            "message": f"the Python-in-Wasm runtime could not be built: {reason}",
        }
        deploy(client, acme, "plain", SUM)
        assert run_sum(client, acme, "plain", "p1")["output"] == {"a": 2, "vars": {}}
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f"the Python-in-Wasm runtime could not be built: {reason}"]


def _failed(answer: dict[str, httpx.Response]) -> bool:
    reply = answer["reply"]
    assert reply.status_code in (202, 503), reply.text
    return reply.status_code == 503


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [n for n in os.environ if n.startswith("TREADLE_") and n != "TREADLE_CACHE_DIR"]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TREADLE_CONFIG", str(tmp_path / "treadle" / "config.toml"))


def test_treadle_deploy_says_the_server_is_building_and_ends_deployed(
    database_url: str, runtime: Path, fresh_cache: Path, cli: None,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    record_build_seconds(4.0)  # how long the previous build on this machine took (else 60 s)
    source = tmp_path / "sum.py"
    source.write_text(textwrap.dedent(SUM))
    with first_start(database_url, StandInBuild(runtime, seconds=4)) as client:
        acme = new_tenant(client, "acme")
        monkeypatch.setenv("TREADLE_URL", str(client.base_url).rstrip("/"))
        monkeypatch.setenv("TREADLE_API_KEY", acme["Authorization"].removeprefix("Bearer "))
        capsys.readouterr()
        code = main(["deploy", str(source), "--sandbox", "wasm"])
        out, err = capsys.readouterr()
        assert code == 0, err
        lines = err.splitlines()
        assert lines, "nothing said while the server was building"
        for line in lines:
            said = re.fullmatch(
                r"the server is building the Python-in-Wasm runtime \(first start only\): "
                r"about (\d+) s left…",
                line,
            )
            assert said is not None, line
            assert 1 <= int(said[1]) <= 5  # from the previous build's 4 s
        assert out.startswith("deployed sum: version ")
        assert out.rstrip().endswith("(wasm)")


def test_treadle_deploy_gives_up_past_its_wait_with_a_clear_error(
    database_url: str, runtime: Path, fresh_cache: Path, cli: None,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    source = tmp_path / "sum.py"
    source.write_text(textwrap.dedent(SUM))
    with first_start(database_url, StandInBuild(runtime)) as client:
        acme = new_tenant(client, "acme")
        monkeypatch.setenv("TREADLE_URL", str(client.base_url).rstrip("/"))
        monkeypatch.setenv("TREADLE_API_KEY", acme["Authorization"].removeprefix("Bearer "))
        capsys.readouterr()
        code = main(["deploy", str(source), "--sandbox", "wasm", "--wait", "1"])
        _, err = capsys.readouterr()
        assert code != 0
        last = err.splitlines()[-1]
        assert last.startswith("treadle: error: building the Python-in-Wasm runtime, about ")
        assert last.endswith(" s left; gave up after waiting 1 s [wasm.building]")
        assert client.get("/v1/workflows/sum", headers=acme).status_code == 404


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_servers_own_build_into_an_empty_cache_ends_in_a_deployed_run(
    runtime: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """The real build, not a stand-in, on SQLite only: componentize-py's output is taken from
    this machine's cache (scripts/test runs componentize-py before the suite; doing it again
    would cost 40-80 s of both cores), and compiling it for wasmtime, in the server's compile
    child, is the real thing (10-25 s)."""
    caplog.set_level(logging.INFO, "treadle.sandbox")
    component = component_path()
    assert component.exists(), "this machine's runtime was built without its component"
    cache = tmp_path / "cache"
    (cache / "wasm").mkdir(parents=True)
    shutil.copyfile(component, cache / "wasm" / component.name)
    monkeypatch.setenv("TREADLE_CACHE_DIR", str(cache))
    platform = Platform(settings(f"sqlite:///{tmp_path / 'treadle.db'}"), wasm_build=RuntimeBuild())
    try:
        with served(create_app(platform)) as client:
            acme = new_tenant(client, "acme")
            assert put(client, acme, "sum").status_code == 202
            wait_for(lambda: {"reply": put(client, acme, "sum")}, _deployed, timeout=300)
            assert run_sum(client, acme, "sum", "w1")["output"] == {"a": 2, "vars": {}}
    finally:
        platform.close()
    said = [r.getMessage() for r in caplog.records if r.name == "treadle.sandbox"]
    assert "building the Python-in-Wasm runtime (first start only, about 60 s)…" in said
    assert any(re.fullmatch(r"built the Python-in-Wasm runtime in \d+ s", m) for m in said)
    assert (cache / "wasm" / ".python-runtime-build-seconds").exists()  # the next estimate
