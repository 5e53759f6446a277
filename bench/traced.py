"""What tracing costs: W1 without an exporter, then with every span sent over OTLP/HTTP to a
local receiver (which decodes and counts them), alternated, per database.

Prints each run's W1 figures, the spans received, and the difference in time per step.
Usage: python -m bench.traced [--rounds N] [--instances N] [--backend sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from bench import w1


class _Counter:
    def __init__(self) -> None:
        self.spans = 0
        self.lock = threading.Lock()


@contextlib.contextmanager
def receiver() -> Iterator[tuple[str, _Counter]]:
    counter = _Counter()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            request = ExportTraceServiceRequest()
            request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
            n = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
            with counter.lock:
                counter.spans += n
            body = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{http.server_address[1]}", counter
    finally:
        http.shutdown()
        http.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], action="append")
    args = parser.parse_args()
    with receiver() as (url, counter):
        for backend in args.backend or ["sqlite", "postgresql"]:
            per_step: dict[str, list[float]] = {"off": [], "on": []}
            for round_ in range(1, args.rounds + 1):
                for mode in ("off", "on"):
                    if mode == "on":
                        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = url
                    else:
                        os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
                    before = counter.spans
                    figures = w1.run(backend, args.instances)
                    spans = counter.spans - before
                    per_step[mode].append(figures["elapsed_s"] / (args.instances * 3))
                    print(
                        f"{backend:10} round {round_} tracing {mode:3}: "
                        f"{figures['workflows_per_s']:.0f} workflows/s, "
                        f"step p50 {figures['step_p50_ms']:.1f} ms, "
                        f"{spans} spans received",
                        flush=True,
                    )
            off, on = statistics.median(per_step["off"]), statistics.median(per_step["on"])
            print(
                f"{backend:10} median time per step: off {off * 1000:.3f} ms, on "
                f"{on * 1000:.3f} ms, tracing adds {(on - off) * 1000:.3f} ms per step",
                flush=True,
            )
    os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)


if __name__ == "__main__":
    main()
