"""OpenTelemetry traces of instances, exported over OTLP/HTTP when the environment asks.

Configured only by the standard variables: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_ENDPOINT`` turns export on (protobuf over HTTP); ``OTEL_SERVICE_NAME``
names the service (``treadle`` by default); ``OTEL_BSP_*`` tune the batching. Without an
endpoint nothing is set up and nothing is recorded: :func:`from_environment` returns None.

One trace per instance, whose ids the instance keeps (``engine._traces``): the run's span
``workflow.run {workflow}`` from its create to its end, a child of the caller's span when the
create carried a ``traceparent``; under it a span per step attempt, ``step.do {name}`` or
``step.rollback {name}``, exported once the attempt is committed, by whichever process
committed it; a span per sleep and wait, ``step.sleep {name}`` and
``step.wait_for_event {name}``, from its ``sleep.started`` or ``wait.started`` history event to
the commit that ended it; and a client span ``env.fetch`` per egress request, whose
``traceparent`` goes out with the request. The run's span is exported when the instance ends
(by the replay that ends it, or by a terminate request), with the id its create gave it, so
that the spans exported earlier, by any process, hang from it.

Spans wait in memory up to ``OTEL_BSP_SCHEDULE_DELAY`` (5 s by default) before they are sent:
a process killed meanwhile loses those. What happened is in the instance's steps either way.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import random
from collections.abc import Callable, Iterator, Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from engine import Attempt, Ended, Engine, Observer, RunTrace, Waited

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
# The ids the next span must have: the run's span is exported with the ids its create chose.
_FORCED: contextvars.ContextVar[tuple[int | None, int | None]] = contextvars.ContextVar(
    "treadle_forced_ids", default=(None, None)
)


class _Ids(IdGenerator):
    """Random ids, but the ones :data:`_FORCED` holds when it holds any."""

    def generate_span_id(self) -> int:
        forced = _FORCED.get()[1]
        return forced if forced is not None else random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        forced = _FORCED.get()[0]
        return forced if forced is not None else random.getrandbits(128) or 1


def enabled() -> bool:
    """Whether the environment asks for traces to be exported."""
    return (
        bool(
            os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        )
        and os.environ.get("OTEL_SDK_DISABLED", "").lower() != "true"
    )


def from_environment(tenant_name: Callable[[int], str]) -> Tracing | None:
    """The tracing of this process, or None when no exporter is configured."""
    if not enabled():
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "treadle")})
    provider = TracerProvider(resource=resource, id_generator=_Ids())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return Tracing(provider, tenant_name)


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _parent(trace_id: str, span_id: str) -> Context:
    context = SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=_SAMPLED)
    return trace.set_span_in_context(NonRecordingSpan(context))


class Tracing(Observer):
    """Turns what the engine reports into spans; :meth:`fetch` makes egress client spans."""

    def __init__(self, provider: TracerProvider, tenant_name: Callable[[int], str]) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("treadle")
        self._tenant_name = tenant_name
        self._engine: Engine | None = None

    def _step(
        self, tenant_id: int, workflow: str, instance_id: str, step: str, count: int
    ) -> dict[str, str | int]:
        return {
            "treadle.tenant": self._tenant_name(tenant_id),
            "treadle.workflow": workflow,
            "treadle.instance.id": instance_id,
            "treadle.step.name": step,
            "treadle.step.count": count,
        }

    def attach(self, engine: Engine) -> None:
        """Read from ``engine`` when sleeps and waits began."""
        self._engine = engine

    def close(self) -> None:
        """Send what is buffered and stop."""
        self._provider.shutdown()

    def attempted(self, attempts: Sequence[Attempt]) -> None:
        for a in attempts:
            if a.trace is None:
                continue
            span = self._tracer.start_span(
                f"step.{a.kind} {a.step}",
                context=_parent(a.trace.trace_id, a.trace.span_id),
                start_time=_ns(a.started_at),
                attributes=self._step(a.tenant_id, a.workflow, a.instance_id, a.step, a.count)
                | {"treadle.attempt": a.number},
            )
            ended = _ns(a.started_at + a.seconds)
            if not a.success:
                name = str(a.error["name"]) if a.error else "Error"
                message = str(a.error["message"]) if a.error else ""
                span.set_status(Status(StatusCode.ERROR, f"{name}: {message}"))
                attributes = {"exception.type": name, "exception.message": message}
                span.add_event("exception", attributes, timestamp=ended)
            span.end(end_time=ended)

    def waited(self, waits: Sequence[Waited]) -> None:
        for w in waits:
            if w.trace is None:
                continue
            began = self._engine.waited_since(w) if self._engine is not None else None
            span = self._tracer.start_span(
                f"step.{w.kind} {w.step}",
                context=_parent(w.trace.trace_id, w.trace.span_id),
                start_time=_ns(w.ended_at if began is None else began),
                attributes=self._step(w.tenant_id, w.workflow, w.instance_id, w.step, w.count)
                | {"treadle.attempt": 1},
            )
            if w.status != "complete":  # a wait for an event that timed out
                span.set_status(Status(StatusCode.ERROR, "the wait timed out"))
            span.end(end_time=_ns(w.ended_at))

    def ended(self, run: Ended) -> None:
        t = run.trace
        if t is None:
            return
        context = _parent(t.trace_id, t.parent_span_id) if t.parent_span_id else None
        token = _FORCED.set((int(t.trace_id, 16), int(t.span_id, 16)))
        try:
            span = self._tracer.start_span(
                f"workflow.run {run.workflow}",
                context=context,
                start_time=_ns(run.created_at),
                attributes={
                    "treadle.tenant": self._tenant_name(run.tenant_id),
                    "treadle.workflow": run.workflow,
                    "treadle.instance.id": run.instance_id,
                    "treadle.status": run.status,
                },
            )
        finally:
            _FORCED.reset(token)
        if run.status != "complete":
            e = run.error
            description = f"{e['name']}: {e['message']}" if e else run.status
            span.set_status(Status(StatusCode.ERROR, description))
        span.end(end_time=_ns(run.ended_at))

    @contextlib.contextmanager
    def fetch(self, run: RunTrace, method: str, url: str) -> Iterator[dict[str, str]]:
        """A client span for one egress request, a child of the run's span; yields the
        headers that carry its context to the server called."""
        span = self._tracer.start_span(
            "env.fetch",
            context=_parent(run.trace_id, run.span_id),
            kind=SpanKind.CLIENT,
            attributes={"http.request.method": method, "url.full": url},
        )
        ids = span.get_span_context()
        headers = {"traceparent": f"00-{ids.trace_id:032x}-{ids.span_id:016x}-01"}
        try:
            yield headers
        except Exception as exc:
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            raise
        finally:
            span.end()
