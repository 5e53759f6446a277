"""The background build of the Python-in-Wasm runtime as a server sees it: answers at once,
estimates, progress in the log, a failure said once. The builder is a stand-in that writes a
file (nothing here loads the runtime); tests/integration/test_wasm_build.py runs the real one
behind the HTTP API."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sandbox import NotReady, RuntimeBuild
from sandbox.wasm._build import BuildError, record_build_seconds, runtime_path


class HeldBuild:
    """Builds only once released; fails with ``fail`` if given."""

    def __init__(self, fail: str | None = None) -> None:
        self.release = threading.Event()
        self.calls = 0
        self._fail = fail

    def __call__(self, target: Path) -> None:
        self.calls += 1
        assert self.release.wait(30), "the test never released the build"
        if self._fail is not None:
            raise BuildError(self._fail)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"compiled")


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TREADLE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def messages(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "treadle.sandbox" and r.levelno == level
    ]


def poll(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.01)


def test_a_build_answers_at_once_with_the_time_left_and_logs_its_progress(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "treadle.sandbox")
    record_build_seconds(42.0)  # the previous build on this machine
    held = HeldBuild()
    build = RuntimeBuild(held, progress_seconds=0.05)
    build.start()
    assert messages(caplog)[0] == (
        "building the Python-in-Wasm runtime (first start only, about 42 s)…"
    )
    began = time.monotonic()
    with pytest.raises(
        NotReady, match=r"^building the Python-in-Wasm runtime, about 4[12] s left$"
    ) as caught:
        build.require()
    assert time.monotonic() - began < 0.5  # answered at once, not after the build
    assert caught.value.seconds_left is not None and 40 < caught.value.seconds_left <= 42
    poll(
        lambda: any(
            m.startswith("still building the Python-in-Wasm runtime… ") for m in messages(caplog)
        )
    )
    held.release.set()
    assert build.wait(10) == runtime_path()
    assert build.require().read_bytes() == b"compiled"
    assert messages(caplog)[-1] == "built the Python-in-Wasm runtime in 0 s"
    build.start()  # built: nothing more to do
    assert held.calls == 1


def test_without_a_previous_build_the_estimate_is_a_minute() -> None:
    held = HeldBuild()
    build = RuntimeBuild(held)
    build.start()
    try:
        with pytest.raises(NotReady, match=r"about (60|59) s left"):
            build.require()
    finally:
        held.release.set()
        build.wait(10)


def test_a_failed_build_is_logged_once_and_every_caller_is_told_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    held = HeldBuild(fail="componentize-py failed: No space left on device")
    held.release.set()
    build = RuntimeBuild(held)
    for _ in range(3):
        with pytest.raises(NotReady) as caught:
            build.wait(10)
        assert str(caught.value) == (
            "the Python-in-Wasm runtime could not be built: "
            "componentize-py failed: No space left on device"
        )
        assert caught.value.seconds_left is None
    assert messages(caplog, logging.ERROR) == [
        "the Python-in-Wasm runtime could not be built: "
        "componentize-py failed: No space left on device"
    ]
    assert held.calls == 1  # not tried again: it would fail the same way


def test_a_runtime_in_the_cache_is_ready_without_a_build(fresh_cache: Path) -> None:
    target = runtime_path()
    target.parent.mkdir(parents=True)
    target.write_bytes(b"built earlier")
    held = HeldBuild()
    build = RuntimeBuild(held)
    build.start()
    assert build.require() == target
    assert held.calls == 0


def test_a_runtime_removed_from_the_cache_is_built_again(fresh_cache: Path) -> None:
    held = HeldBuild()
    held.release.set()
    build = RuntimeBuild(held)
    first = build.wait(10)
    first.unlink()  # an operator emptied the cache
    held.release.clear()
    with pytest.raises(NotReady, match="building the Python-in-Wasm runtime"):
        build.require()  # answers at once, and builds again
    held.release.set()
    assert build.wait(10) == first and first.exists()
    assert held.calls == 2
