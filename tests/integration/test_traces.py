"""OpenTelemetry traces, received by a local OTLP/HTTP receiver that decodes the protobuf.

A 3-step instance, created with a caller's ``traceparent``, with one failed attempt, an
``env.fetch``, and the server killed with SIGKILL between its steps: exactly one trace, the
caller's, whose spans are the run and each attempt once, linked as the contract says; the
fetch carries the trace to the server it calls. And without an exporter configured, nothing is
sent and instances still get their trace id.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from bench._processes import TreadleProcess
from bench._server import tenant_client

SOURCE = """
from treadle import WorkflowEntrypoint

class Traced(WorkflowEntrypoint):
    def run(self, event, step):
        a = step.do("one", lambda: 1)

        def two(ctx):
            if ctx.attempt == 1:
                raise ValueError("the first attempt fails")
            return 2
        b = step.do("two", two, retries={"limit": 2, "delay": "2 seconds"})
        c = step.do("three", lambda: self.env.fetch(event.payload["url"]).status)
        step.sleep("nap", "1 second")
        return a + b + c
"""
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent: str
    name: str
    kind: int
    attributes: dict[str, Any]
    status: int
    events: list[str]
    duration_ns: int


@dataclass
class Receiver:
    """An OTLP/HTTP receiver of traces (``POST /v1/traces``, protobuf), and a plain server
    whose requests' ``traceparent`` headers it records (``GET /hello``)."""

    spans: list[Span] = field(default_factory=list)
    traceparents: list[str] = field(default_factory=list)
    url: str = ""

    @contextlib.contextmanager
    def running(self) -> Iterator[Receiver]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        for s in scope.spans:
                            receiver.spans.append(_span(s))
                self._reply(200, ExportTraceServiceResponse().SerializeToString())

            def do_GET(self) -> None:
                receiver.traceparents.append(self.headers.get("traceparent", ""))
                self._reply(200, b"hello")

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{http.server_address[1]}"
        thread = threading.Thread(target=http.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            http.shutdown()
            http.server_close()


def _span(s: Any) -> Span:
    attributes = {}
    for kv in s.attributes:
        value = kv.value
        attributes[kv.key] = value.int_value if value.HasField("int_value") else value.string_value
    return Span(
        s.trace_id.hex(),
        s.span_id.hex(),
        s.parent_span_id.hex(),
        s.name,
        s.kind,
        attributes,
        s.status.code,
        [e.name for e in s.events],
        s.end_time_unix_nano - s.start_time_unix_nano,
    )


def _start(client: httpx.Client, receiver: Receiver, traceparent: str) -> None:
    """Deploy the workflow and create instance ``t1``, with ``traceparent`` on the create."""
    body = {"source": SOURCE, "sandbox": "restricted"}
    assert client.put("/v1/workflows/traced", json=body).status_code == 201
    create = {"id": "t1", "params": {"url": receiver.url + "/hello"}}
    headers = {"traceparent": traceparent}
    reply = client.post("/v1/workflows/traced/instances", json=create, headers=headers)
    assert reply.status_code == 201, reply.text


def _wait_status(client: httpx.Client, path: str, status: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while (got := client.get(path).json())["status"] != status:
        assert got["status"] not in ("errored", "terminated"), got
        assert time.monotonic() < deadline, got
        time.sleep(0.05)
    return got


def test_one_trace_per_instance_across_a_kill_9(database_url: str, tmp_path: Path) -> None:
    with Receiver().running() as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "TREADLE_LEASE_SECONDS": "3",
        }
        server = TreadleProcess(database_url, tmp_path, env=env)
        server.start()
        try:
            with tenant_client(server.base, "acme", egress_allow=["127.0.0.1"]) as client:
                _start(client, receiver, f"00-{CALLER_TRACE}-{CALLER_SPAN}-01")
                path = "/v1/workflows/traced/instances/t1"
                # "one" done, "two" failed once and waits 2 s for its retry: kill the server.
                _wait_status(client, path, "waiting")
                time.sleep(0.5)  # the spans so far are sent (every 100 ms here)
                server.kill()
                server.start()
                instance = _wait_status(client, path, "complete")
                # The run's span is sent within 100 ms of the instance's end.
                deadline = time.monotonic() + 10
                while not any(s.name.startswith("workflow.run") for s in receiver.spans):
                    assert time.monotonic() < deadline, receiver.spans
                    time.sleep(0.05)
                time.sleep(0.3)  # anything else still buffered
        finally:
            server.stop()
        assert instance["trace_id"] == CALLER_TRACE
        spans = receiver.spans
        assert {s.trace_id for s in spans} == {CALLER_TRACE}, spans
        (run,) = [s for s in spans if s.name == "workflow.run traced"]
        assert run.parent == CALLER_SPAN
        assert run.attributes["treadle.instance.id"] == "t1"
        steps = sorted(
            (s.attributes["treadle.step.name"], s.attributes["treadle.attempt"], s.status)
            for s in spans
            if s.name.startswith("step.do ")
        )
        # Each attempt once, however often the process died; the failed one is an ERROR.
        assert steps == [("one", 1, 0), ("three", 1, 0), ("two", 1, 2), ("two", 2, 0)], spans
        for s in spans:
            if s.name.startswith("step."):
                kind = "sleep" if s.attributes["treadle.step.name"] == "nap" else "do"
                assert s.name == f"step.{kind} {s.attributes['treadle.step.name']}"
                assert s.parent == run.span_id
                assert s.attributes["treadle.tenant"] == "acme"
                assert s.attributes["treadle.workflow"] == "traced"
                assert s.attributes["treadle.instance.id"] == "t1"
                assert s.attributes["treadle.step.count"] == 1
        (failed,) = [s for s in spans if s.status == 2 and s.name.startswith("step.")]
        assert failed.events == ["exception"]
        # The sleep: one span, from when it began to the commit that ended it.
        (nap,) = [s for s in spans if s.name == "step.sleep nap"]
        assert nap.parent == run.span_id and nap.attributes["treadle.step.name"] == "nap"
        assert 0.9e9 <= nap.duration_ns <= 10e9, nap
        # env.fetch: a client span under the run, whose context went out with the request.
        (fetch,) = [s for s in spans if s.name == "env.fetch"]
        assert fetch.parent == run.span_id and fetch.kind == 3  # SPAN_KIND_CLIENT
        assert receiver.traceparents == [f"00-{CALLER_TRACE}-{fetch.span_id}-01"]


def test_without_an_exporter_nothing_is_sent_and_runs_still_have_a_trace_id(
    database_url: str, tmp_path: Path
) -> None:
    with Receiver().running() as receiver:
        server = TreadleProcess(database_url, tmp_path)
        server.start()
        try:
            with tenant_client(server.base, "acme", egress_allow=["127.0.0.1"]) as client:
                _start(client, receiver, "not-a-traceparent")  # ignored: a new trace starts
                instance = _wait_status(client, "/v1/workflows/traced/instances/t1", "complete")
        finally:
            server.stop()
        assert len(instance["trace_id"]) == 32 and instance["trace_id"] != "0" * 32
        assert receiver.spans == [] and receiver.traceparents == [""]


WAITS = """
from treadle import WorkflowEntrypoint

class Waits(WorkflowEntrypoint):
    def run(self, event, step):
        step.do("one", lambda: 1)
        return step.wait_for_event("go", type="go", timeout="1 hour")
"""


def test_a_run_terminated_through_the_api_ends_its_span(database_url: str, tmp_path: Path) -> None:
    with Receiver().running() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        server = TreadleProcess(database_url, tmp_path, env=env)
        server.start()
        try:
            with tenant_client(server.base, "acme") as client:
                body = {"source": WAITS, "sandbox": "restricted"}
                assert client.put("/v1/workflows/waits", json=body).status_code == 201
                reply = client.post("/v1/workflows/waits/instances", json={"id": "w1"})
                assert reply.status_code == 201, reply.text
                path = "/v1/workflows/waits/instances/w1"
                instance = _wait_status(client, path, "waiting")
                change = client.patch(path + "/status", json={"status": "terminate"})
                assert change.status_code == 200, change.text
                deadline = time.monotonic() + 10
                while not any(s.name == "workflow.run waits" for s in receiver.spans):
                    assert time.monotonic() < deadline, receiver.spans
                    time.sleep(0.05)
        finally:
            server.stop()
        (run,) = [s for s in receiver.spans if s.name == "workflow.run waits"]
        assert run.trace_id == instance["trace_id"] and run.parent == ""
        assert run.status == 2 and run.attributes["treadle.status"] == "terminated"
        (one,) = [s for s in receiver.spans if s.name == "step.do one"]
        assert one.parent == run.span_id
