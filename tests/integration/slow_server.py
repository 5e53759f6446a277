"""A local HTTP server for egress tests: ``/sleep?s=1.5&tag=x`` waits, then answers JSON.

``calls`` counts the requests of each tag, ``started`` holds when each began (monotonic
time), ``peak`` the most of them in flight at once.
"""

from __future__ import annotations

import collections
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class SlowServer:
    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.started: collections.defaultdict[str, list[float]] = collections.defaultdict(list)
        self.peak: collections.Counter[str] = collections.Counter()
        in_flight: collections.Counter[str] = collections.Counter()
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                seconds = float(query.get("s", ["0"])[0])
                tag = query.get("tag", [""])[0]
                with lock:
                    server.calls[tag] += 1
                    server.started[tag].append(time.monotonic())
                    in_flight[tag] += 1
                    server.peak[tag] = max(server.peak[tag], in_flight[tag])
                time.sleep(seconds)
                with lock:
                    in_flight[tag] -= 1
                body = json.dumps({"tag": tag, "slept": seconds}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the caller is gone (a process killed mid-fetch)

            def log_message(self, *args: object) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"

    @contextlib.contextmanager
    def running(self) -> Iterator[SlowServer]:
        thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._http.shutdown()
            self._http.server_close()
