"""The metrics listener: ``GET /metrics`` without credentials, on a port of its own.

On the API, ``/metrics`` answers the admin token only: its counts are the whole platform's. A
Prometheus scraper on a private network gets them here instead, and ``treadle worker``, which
serves no API, has no other way to show them. Only ``/metrics`` is served; the standard
library's threaded HTTP server is plenty for a scrape every few seconds.
"""

from __future__ import annotations

import http.server
import logging
import math
import socket
import threading
from collections.abc import Callable

from dispatcher._metrics import CONTENT_TYPE
from dispatcher.http._errors import database_error

_log = logging.getLogger("treadle")

Render = Callable[[], bytes]


class MetricsListener:
    """Serves ``GET /metrics`` from ``render`` on ``host``:``port`` (0: any free port) in
    daemon threads, from :meth:`start` until :meth:`close`."""

    def __init__(self, render: Render, host: str, port: int) -> None:
        server = _Server6 if ":" in host else _Server
        self._server = server((host, port), _handler(render))
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="treadle-metrics", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def _handler(render: Render) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "treadle"
        sys_version = ""

        def do_GET(self) -> None:
            if self.path.partition("?")[0] != "/metrics":
                self._reply(404, "text/plain; charset=utf-8", b"not found: only /metrics\n")
                return
            try:
                text = render()
            except Exception as exc:
                outage = database_error(exc)
                if outage is None:
                    _log.exception("metrics: reading the statistics failed")
                    self._reply(500, "text/plain; charset=utf-8", b"internal error\n")
                else:
                    retry = str(max(1, math.ceil(outage.retry_after)))
                    message = f"{outage.message}\n".encode()
                    self._reply(503, "text/plain; charset=utf-8", message, retry)
                return
            self._reply(200, CONTENT_TYPE, text)

        def _reply(
            self, status: int, content_type: str, body: bytes, retry_after: str | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if retry_after is not None:
                self.send_header("Retry-After", retry_after)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            _log.debug("metrics: %s %s", self.address_string(), format % args)

    return Handler
