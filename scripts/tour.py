"""The README's command-line tour on a fresh ``treadle serve``: deploy checkout.py, run it,
send the event it waits for, see it complete.

Run with the interpreter of a virtual environment that has treadle installed (not editable):
it drives the ``treadle`` command beside that interpreter, on a temporary SQLite file and a
free port, and exits non-zero with the server's log when a step of the tour fails.
``scripts/smoke`` runs it with every supported Python.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

CHECKOUT = """\
from treadle import WorkflowEntrypoint, NonRetryableError

class Checkout(WorkflowEntrypoint):
    def run(self, event, step):
        total = step.do("price", lambda: sum(i["price"] for i in event.payload["items"]))
        if total > 1000:
            raise NonRetryableError("needs manual review")
        step.sleep("cool off", "2 seconds")
        approval = step.wait_for_event("approval", type="approved", timeout="1 hour")
        return {"total": total, "approved_by": approval["payload"]["by"]}
"""
OUTPUT = {"total": 42, "approved_by": "ann"}
EVENT = '{"by": "ann"}'
TREADLE = str(Path(sys.executable).parent / "treadle")
VERSION = sys.version.split()[0]


class TourFailed(Exception):
    """A step of the tour did not give what the README says."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _poll(what: str, check: Callable[[], object], seconds: float = 60) -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise TourFailed(f"{what}: not within {seconds:.0f} s")


def _treadle(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [TREADLE, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode:
        raise TourFailed(f"treadle {' '.join(args)}: exit {done.returncode}: {done.stderr}")
    return done.stdout


def _api_key(banner: Path) -> str | None:
    for line in banner.read_text().splitlines():
        if "API key of tenant" in line:
            return line.split()[-1]
    return None


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _waiting(env: dict[str, str]) -> bool:
    """Whether order-1 waits for its event; it may not have been created yet."""
    try:
        got = json.loads(_treadle(env, "instances", "get", "checkout", "order-1", "--json"))
    except TourFailed as exc:
        if "instance.not_found" in str(exc):
            return False
        raise
    return bool(got["status"] == "waiting")


def tour(env: dict[str, str], folder: Path) -> None:
    (folder / "checkout.py").write_text(CHECKOUT)
    _treadle(env, "deploy", str(folder / "checkout.py"))
    params = json.dumps({"items": [{"price": 12}, {"price": 30}]})
    follow = subprocess.Popen(
        [TREADLE, "run", "checkout", "--id", "order-1", "--params", params, "--follow"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _poll("the instance waits for its event", lambda: _waiting(env))
        _treadle(env, "events", "send", "checkout", "order-1", "approved", "--payload", EVENT)
        printed, _ = follow.communicate(timeout=60)
    finally:
        follow.kill()
    if follow.returncode or json.dumps(OUTPUT) not in printed:
        raise TourFailed(f"run --follow: exit {follow.returncode}, printed:\n{printed}")
    got = json.loads(_treadle(env, "instances", "get", "checkout", "order-1", "--json"))
    if got["status"] != "complete" or got["output"] != OUTPUT:
        raise TourFailed(f"instances get: {got}")


def _serve(folder: Path, env: dict[str, str], port: str) -> subprocess.Popen[bytes]:
    """``treadle serve`` on a new SQLite file; its banner and log go to files in ``folder``."""
    database = f"sqlite:///{folder / 'treadle.db'}"
    with (folder / "serve.out").open("w") as out, (folder / "serve.log").open("w") as log:
        return subprocess.Popen(
            [TREADLE, "serve", "--port", port, "--database-url", database, "--workers", "2"],
            env=env,
            cwd=folder,
            stdout=out,
            stderr=log,
        )


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="treadle-tour-") as tmp:
        folder, port = Path(tmp), str(_free_port())
        url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TREADLE_")}
        env |= {"TREADLE_URL": url, "TREADLE_CONFIG": str(folder / "none.toml")}
        server = _serve(folder, env, port)
        try:
            key = _poll("the first-start banner", lambda: _api_key(folder / "serve.out"))
            env["TREADLE_API_KEY"] = str(key)
            _poll("GET /healthz", lambda: _healthy(url))
            tour(env, folder)
        except (TourFailed, subprocess.TimeoutExpired) as exc:
            print(f"README tour FAILED on Python {VERSION}: {exc}", file=sys.stderr)
            log = (folder / "serve.log").read_text()[-4000:]
            print(f"treadle serve's log:\n{log}", file=sys.stderr)
            return 1
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    print(f"README tour on Python {VERSION}: deployed, ran, sent the event, complete")
    return 0


if __name__ == "__main__":
    sys.exit(main())
