"""The external side-effect record: a local HTTP server that numbers the calls of each tag.

Step bodies call ``GET /hit?tag=<tag>&v=<int>[&s=<seconds>][&fail=1]`` through ``env.fetch``,
with the step's idempotency key (``<instance>:<step>:<count>``, the same on every attempt and
every re-run) as the tag. Each call gets the next sequence number of its tag (1, 2, ...) as
it arrives, waits ``s`` seconds and answers ``{"tag", "seq", "v"}``; the body returns that
answer, so the result a step committed names the call it came from. ``fail=1`` marks a call
after which the body raises on purpose (a planned failed attempt).

Each call is recorded with its arrival and answer times and the treadle process that made it,
found from the connection's socket in ``/proc`` (the platform makes egress requests from the
``serve`` or ``worker`` process itself): the checks need to know which process a kill
interrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

UNKNOWN_CALLER = "?"


@dataclasses.dataclass
class Call:
    """One call of a tag: ``seq`` is its number among the tag's calls, in arrival order."""

    tag: str
    seq: int
    value: int
    started: float
    caller: str
    failing: bool
    answered: float | None = None  # just before the answer was sent; None: the caller was gone


class SideEffectCounter:
    """Counts the calls of each tag. ``callers()`` maps the pids of the live treadle
    processes to their names, for :attr:`Call.caller`."""

    def __init__(self, callers: Callable[[], dict[int, str]]) -> None:
        self._callers = callers
        # Hooks, called on the server's threads as each call arrives and is answered.
        self.on_call: Callable[[Call], None] = lambda call: None
        self.on_answer: Callable[[Call], None] = lambda call: None
        self._calls: dict[str, list[Call]] = {}
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._http.daemon_threads = True
        self.port = int(self._http.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def snapshot(self) -> dict[str, list[Call]]:
        """Every call so far, per tag, in sequence order (copies)."""
        with self._lock:
            return {
                tag: [dataclasses.replace(c) for c in calls] for tag, calls in self._calls.items()
            }

    @contextlib.contextmanager
    def running(self) -> Iterator[SideEffectCounter]:
        thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._http.shutdown()
            self._http.server_close()

    def _record(self, tag: str, value: int, failing: bool, client_port: int) -> Call:
        caller = _caller(client_port, self.port, self._callers())
        with self._lock:
            calls = self._calls.setdefault(tag, [])
            call = Call(tag, len(calls) + 1, value, time.time(), caller, failing)
            calls.append(call)
        self.on_call(call)
        return call

    def _answered(self, call: Call, at: float) -> None:
        with self._lock:
            call.answered = at
        self.on_answer(call)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        counter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                tag, value = query["tag"][0], int(query["v"][0])
                failing = query.get("fail") == ["1"]
                call = counter._record(tag, value, failing, int(self.client_address[1]))
                time.sleep(float(query.get("s", ["0"])[0]))
                body = json.dumps({"tag": tag, "seq": call.seq, "v": value}).encode()
                answering = time.time()  # no caller can have the answer before this
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the caller was killed while the call was in flight
                    return
                counter._answered(call, answering)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


def _caller(client_port: int, server_port: int, processes: dict[int, str]) -> str:
    """The name of the process holding the client end of a loopback connection."""
    inode = _socket_inode(client_port, server_port)
    if inode is None:
        return UNKNOWN_CALLER
    target = f"socket:[{inode}]"
    for pid, name in processes.items():
        with contextlib.suppress(OSError):  # the process or the descriptor went away
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return name
    return UNKNOWN_CALLER


def _socket_inode(client_port: int, server_port: int) -> str | None:
    local, remote = f"0100007F:{client_port:04X}", f"0100007F:{server_port:04X}"
    with open("/proc/net/tcp") as table:
        for line in table:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                return fields[9]
    return None
