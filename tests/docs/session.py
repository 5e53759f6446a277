"""A reader's terminal: a real ``treadle serve`` and one shell session per document.

The server is ``treadle serve`` from the virtual environment, on a SQLite file and a free port
of a temporary directory, started without an admin token so that it prints its first-start
banner; the session takes the admin token and the ``default`` tenant's API key from it, as a
reader would. Blocks run one after the other in a working directory of their own, each as a
bash script that starts from the environment variables and directory the previous one left.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench._server import free_port
from tests.docs.blocks import Block

BIN = Path(sys.executable).parent  # the virtual environment's, with `treadle` in it
BLOCK_SECONDS = 60.0
_BANNER_ADMIN = re.compile(r"admin token:\s+(\S+)")
_BANNER_KEY = re.compile(r"API key of tenant 'default':\s+(\S+)")


@dataclass(frozen=True)
class Server:
    base: str
    admin_token: str
    api_key: str
    log: Path


@contextlib.contextmanager
def serve(tmp: Path) -> Iterator[Server]:
    """``treadle serve`` on a fresh SQLite file in ``tmp``, until the block ends."""
    port, log = free_port(), tmp / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TREADLE_")}
    command = [str(BIN / "treadle"), "serve", "--port", str(port)]
    command += ["--database-url", f"sqlite:///{tmp / 'treadle.db'}"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield _started(proc, f"http://127.0.0.1:{port}", log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _started(proc: subprocess.Popen[bytes], base: str, log: Path) -> Server:
    deadline = time.monotonic() + 60
    while True:
        text = log.read_text(errors="replace")
        admin, key = _BANNER_ADMIN.search(text), _BANNER_KEY.search(text)
        if admin and key and _healthy(base):
            return Server(base, admin[1], key[1], log)
        assert proc.poll() is None, f"treadle serve exited {proc.returncode}:\n{text[-3000:]}"
        assert time.monotonic() < deadline, f"treadle serve did not start:\n{text[-3000:]}"
        time.sleep(0.1)


def _healthy(base: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    return False


class Session:
    """Runs the blocks of one document, in order, in ``work`` against ``server``."""

    def __init__(self, server: Server, tmp: Path) -> None:
        self.server = server
        self.work = tmp / "work"
        self.work.mkdir()
        self._scripts = tmp / "blocks"
        self._scripts.mkdir()
        self._state = tmp / "state.sh"
        self._state.write_text(f"cd {shlex.quote(str(self.work))}\n")
        self._env = self._environment(tmp)

    def _environment(self, tmp: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TREADLE_", "VIRTUAL"))}
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env["XDG_CONFIG_HOME"] = str(tmp / "config")  # `treadle config set` writes here
        env["TREADLE_URL"] = self.server.base
        env["TREADLE_API_KEY"] = self.server.api_key
        env["TREADLE_ADMIN_TOKEN"] = self.server.admin_token
        return env

    def substitute(self, text: str) -> str:
        """The document's placeholders replaced by this server's address and credentials."""
        host = self.server.base.removeprefix("http://")
        text = re.sub(r"(127\.0\.0\.1|localhost):8787", host, text)
        text = re.sub(r"tdla_[0-9a-f_]*\.\.\.", self.server.admin_token, text)
        return re.sub(r"tdl_[0-9a-f_]*\.\.\.", self.server.api_key, text)

    def do(self, block: Block) -> None:
        """Run ``block`` (or write it, for a ``file`` block); fail naming where it is."""
        if block.action == "file":
            (self.work / block.argument).write_text(block.text)
            return
        script = self._scripts / f"line-{block.line}.sh"
        script.write_text(self._script(block))
        output = self._scripts / f"line-{block.line}.out"
        started = time.monotonic()
        status = self._execute(script, output)
        if status != 0:
            raise AssertionError(self._failure(block, status, time.monotonic() - started, output))

    def _script(self, block: Block) -> str:
        text = self.substitute(block.text)
        prelude = (
            f"source {shlex.quote(str(self._state))}\n"
            f'trap \'{{ export -p; printf "cd %q\\n" "$PWD"; }} > "{self._state}"\' EXIT\n'
        )
        if block.language == "python":
            # In the working directory, as a reader's script: it imports the modules there.
            path = self.work / f".doc-block-{block.line}.py"
            path.write_text(text)
            return f"set -euo pipefail\n{prelude}python3 {shlex.quote(str(path))}\n"
        if block.language == "console":
            return f"set -uo pipefail\n{prelude}{console_script(block, text)}"
        return f"set -euo pipefail\n{prelude}{text}"

    def _execute(self, script: Path, output: Path) -> int | str:
        with open(output, "wb") as out:
            proc = subprocess.Popen(
                ["bash", str(script)],
                cwd=self.work,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            return proc.wait(BLOCK_SECONDS)
        except subprocess.TimeoutExpired:
            return f"still running after {BLOCK_SECONDS:.0f} s"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # and whatever it left in the background
            proc.wait()

    def _failure(self, block: Block, status: int | str, took: float, output: Path) -> str:
        what = f"exit status {status}" if isinstance(status, int) else status
        shown = output.read_text(errors="replace")[-6000:]
        server = self.server.log.read_text(errors="replace")[-1500:]
        return (
            f"{block.where}: the {block.language} block failed ({what}, {took:.1f} s)\n"
            f"--- block ---\n{block.text}--- output ---\n{shown}\n"
            f"--- server log (end) ---\n{server}"
        )


def console_script(block: Block, text: str) -> str:
    """A console transcript as a script: each ``$ `` command runs, and must succeed unless the
    transcript shows it failing (output with a line starting ``treadle: ``); the exit status
    is kept for the next command (``echo $?``)."""
    script = ["__status=0"]
    for line, command, shown in _commands(text, block.line):
        fails = any(out.startswith("treadle: ") for out in shown)
        expect = "-ne 0" if fails else "-eq 0"
        said = "failing" if fails else "succeeding"
        where = f"{block.where.rsplit(':', 1)[0]}:{line}"
        script += [
            "(exit $__status)",  # for an `echo $?`
            command,
            "__status=$?",
            f"if ! [ $__status {expect} ]; then",
            f'  echo "doc-test: {where}: exit status $__status; the document shows it {said}" >&2',
            "  exit 1",
            "fi",
        ]
    return "\n".join(script) + "\n"


def _commands(text: str, first: int) -> Iterator[tuple[int, str, list[str]]]:
    """(line in the document, command, the output shown for it) of each ``$ `` command."""
    lines = text.splitlines()
    at = 0
    while at < len(lines):
        if not lines[at].startswith("$ "):
            at += 1
            continue
        line, command = first + 1 + at, [lines[at][2:]]
        while command[-1].endswith("\\") and at + 1 < len(lines):
            at += 1
            command.append(lines[at])
        shown: list[str] = []
        while at + 1 < len(lines) and not lines[at + 1].startswith("$ "):
            at += 1
            shown.append(lines[at])
        yield line, "\n".join(command), shown
        at += 1
