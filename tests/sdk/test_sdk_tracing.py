"""Issue 11, item 3: with OpenTelemetry installed (conveyor[otel]), one trace runs from the
producer's span through every attempt of the job: the client sends the current span's
traceparent with Enqueue, the coordinator stores it, and the worker runs each attempt in a
CONSUMER span under it. Checked with the real opentelemetry-sdk and its in-memory exporter."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from conveyor import Client, JobContext, RetryPolicy, Worker
from conveyor_server.main import Coordinator
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

StartWorker = Callable[[Worker], "asyncio.Task[None]"]
FAST_RETRY = RetryPolicy(initial_backoff=timedelta(milliseconds=10), jitter=0.0)

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The process's tracer provider (set once: OpenTelemetry allows no second one), with an
    exporter emptied for each test."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def _worker(coord: Coordinator, queue: str) -> Worker:
    return Worker(coord.address, [queue], concurrency=2, shutdown_grace=1.0)


async def test_one_trace_runs_from_the_producer_through_every_attempt(
    live_coordinator: Coordinator,
    client: Client,
    start_worker: StartWorker,
    spans: InMemorySpanExporter,
) -> None:
    worker = _worker(live_coordinator, "traced")
    seen: list[tuple[int, int]] = []  # (attempt, trace id) as each handler saw it

    @worker.task("flaky")
    def flaky(job: JobContext) -> bytes:  # a sync handler: runs in a thread
        seen.append((job.attempt, trace.get_current_span().get_span_context().trace_id))
        if job.attempt == 1:
            raise RuntimeError("first attempt fails")
        return b"done"

    start_worker(worker)
    tracer = trace.get_tracer("producer")
    with tracer.start_as_current_span("produce") as producer:
        job_id = (await client.enqueue("traced", "flaky", b"", retry_policy=FAST_RETRY)).job_id
    assert await client.wait_for_result(job_id, timeout=10) == b"done"

    trace_id = producer.get_span_context().trace_id
    stored = (await client.get_job(job_id)).traceparent
    assert stored.split("-")[1:3] == [
        f"{trace_id:032x}",
        f"{producer.get_span_context().span_id:016x}",
    ]
    assert seen == [(1, trace_id), (2, trace_id)]
    attempts = [s for s in spans.get_finished_spans() if s.name == "process traced"]
    assert sorted(s.attributes["conveyor.attempt"] for s in attempts) == [1, 2]
    for span in attempts:
        assert span.kind == SpanKind.CONSUMER
        assert span.context.trace_id == trace_id
        assert span.parent is not None
        assert span.parent.span_id == producer.get_span_context().span_id
        assert span.attributes["messaging.message.id"] == job_id
    failed = next(s for s in attempts if s.attributes["conveyor.attempt"] == 1)
    assert not failed.status.is_ok


async def test_without_a_producer_span_each_job_starts_its_own_trace(
    live_coordinator: Coordinator,
    client: Client,
    start_worker: StartWorker,
    spans: InMemorySpanExporter,
) -> None:
    worker = _worker(live_coordinator, "untraced")

    @worker.task("plain")
    async def plain(job: JobContext) -> bytes:
        return b"ok"

    start_worker(worker)
    job_id = (await client.enqueue("untraced", "plain", b"")).job_id
    assert await client.wait_for_result(job_id, timeout=10) == b"ok"
    assert (await client.get_job(job_id)).traceparent == ""
    [span] = [s for s in spans.get_finished_spans() if s.name == "process untraced"]
    assert span.parent is None
