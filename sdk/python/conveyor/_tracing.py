"""OpenTelemetry trace propagation, when `opentelemetry-api` is installed (the optional extra
`conveyor[otel]`); without it every function here does nothing.

The producer's side: `enqueue_metadata()` sends the current span's W3C `traceparent` as gRPC
metadata; the coordinator stores it with the job. The worker's side: `job_span(job)` runs each
attempt in a CONSUMER span whose parent is that stored context, so one trace runs from the
enqueue through every attempt. The wire format is W3C Trace Context whatever propagators the
application configured globally, since `traceparent` is what the coordinator stores."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from conveyor.v1 import coordinator_pb2 as pb

try:
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the optional extra is not installed: no tracing
    trace = None  # type: ignore[assignment]

_TRACER_NAME = "conveyor"


def enqueue_metadata() -> tuple[tuple[str, str], ...]:
    """The current trace context as gRPC metadata, if there is one to continue."""
    if trace is None:
        return ()
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    value = carrier.get("traceparent")
    return (("traceparent", value),) if value else ()


@contextlib.contextmanager
def job_span(job: pb.LeasedJob) -> Iterator[Any]:
    """A span around one attempt of `job`, continuing the producer's trace (a new trace when
    the job has none); yields the span, or None without OpenTelemetry."""
    if trace is None:
        yield None
        return
    parent = None
    if job.traceparent:
        parent = TraceContextTextMapPropagator().extract({"traceparent": job.traceparent})
    tracer = trace.get_tracer(_TRACER_NAME)
    attributes: dict[str, str | int] = {
        "messaging.system": "conveyor",
        "messaging.operation.type": "process",
        "messaging.destination.name": job.queue,
        "messaging.message.id": job.job_id,
        "conveyor.task_type": job.task_type,
        "conveyor.attempt": job.attempt,
    }
    with tracer.start_as_current_span(
        f"process {job.queue}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
    ) as span:
        yield span


def record_outcome(span: Any, receipt: pb.ReceiptRequest | None) -> None:
    """Marks the attempt's span failed when its receipt reports a failure."""
    if span is None or receipt is None:
        return
    if receipt.outcome == pb.OUTCOME_FAILURE:
        span.set_status(Status(StatusCode.ERROR, receipt.error.type or "failure"))
    span.set_attribute("conveyor.outcome", pb.Outcome.Name(receipt.outcome))
