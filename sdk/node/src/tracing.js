// OpenTelemetry trace propagation, when the application has @opentelemetry/api installed (an
// optional peer dependency); without it every function here does nothing.
//
// The producer's side: `enqueueMetadata()` sends the active span's W3C `traceparent` as gRPC
// metadata with Enqueue; the coordinator stores it with the job. The worker's side:
// `inJobSpan(job, run)` runs each attempt in a CONSUMER span whose parent is that stored
// context, so one trace runs from the enqueue through every attempt. Only the API package is
// used: the traceparent is written and read here, so no propagator needs configuring.

import grpc from '@grpc/grpc-js';

/** @type {typeof import('@opentelemetry/api') | null} */
let api = null;
try {
  api = await import('@opentelemetry/api');
} catch {
  api = null; // not installed: no tracing
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/**
 * The active span's context as gRPC metadata, if there is one to continue.
 * @returns {grpc.Metadata | undefined}
 */
export function enqueueMetadata() {
  if (api === null) return undefined;
  const span = api.trace.getSpanContext(api.context.active());
  if (span === undefined || !api.isSpanContextValid(span)) return undefined;
  const flags = (span.traceFlags & 0xff).toString(16).padStart(2, '0');
  const metadata = new grpc.Metadata();
  metadata.set('traceparent', `00-${span.traceId}-${span.spanId}-${flags}`);
  return metadata;
}

/**
 * Runs one attempt of `job` inside a span continuing the producer's trace (a new trace when
 * the job has none). `run` gets the span (null without OpenTelemetry).
 * @template T
 * @param {any} job a LeasedJob
 * @param {(span: import('@opentelemetry/api').Span | null) => Promise<T>} run
 * @returns {Promise<T>}
 */
export function inJobSpan(job, run) {
  if (api === null) return run(null);
  const otel = api;
  const match = TRACEPARENT.exec(job.traceparent ?? '');
  const parent =
    match === null
      ? otel.ROOT_CONTEXT
      : otel.trace.setSpanContext(otel.ROOT_CONTEXT, {
          traceId: match[1],
          spanId: match[2],
          traceFlags: Number.parseInt(match[3], 16),
          isRemote: true,
        });
  const attributes = {
    'messaging.system': 'conveyor',
    'messaging.operation.type': 'process',
    'messaging.destination.name': job.queue,
    'messaging.message.id': job.jobId,
    'conveyor.task_type': job.taskType,
    'conveyor.attempt': job.attempt,
  };
  const tracer = otel.trace.getTracer('conveyor');
  const options = { kind: otel.SpanKind.CONSUMER, attributes };
  return tracer.startActiveSpan(`process ${job.queue}`, options, parent, async (span) => {
    try {
      return await run(span);
    } finally {
      span.end();
    }
  });
}

/**
 * Marks the attempt's span failed when its receipt reports a failure.
 * @param {import('@opentelemetry/api').Span | null} span
 * @param {{outcome: string, error?: {type?: string}} | null} receipt
 */
export function recordOutcome(span, receipt) {
  if (span === null || receipt === null || api === null) return;
  if (receipt.outcome === 'OUTCOME_FAILURE') {
    span.setStatus({ code: api.SpanStatusCode.ERROR, message: receipt.error?.type || 'failure' });
  }
  span.setAttribute('conveyor.outcome', receipt.outcome);
}
