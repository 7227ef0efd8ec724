// Issue 11, item 3, for tests/node/test_node_tracing.py: with @opentelemetry/api installed, one
// trace runs from a producer's span through every attempt of the job. Uses the real OpenTelemetry
// SDK (an in-memory exporter) and the Node SDK's Client and Worker on one coordinator.
// Usage: node tracing_script.mjs ADDRESS. Prints one JSON object with what it saw.

import { createRequire } from 'node:module';

import { Client, Worker } from '../../sdk/node/src/index.js';

// The OpenTelemetry packages are dev dependencies of sdk/node: resolved from there, as an
// application that installed them beside the SDK would.
const require = createRequire(new URL('../../sdk/node/package.json', import.meta.url));
const { context, trace } = require('@opentelemetry/api');
const { AsyncLocalStorageContextManager } = require('@opentelemetry/context-async-hooks');
const { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } = require(
  '@opentelemetry/sdk-trace-base',
);

const [address] = process.argv.slice(2);
const exporter = new InMemorySpanExporter();
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
trace.setGlobalTracerProvider(
  new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }),
);

/** @type {{attempt: number, traceId: string | undefined}[]} */
const seen = [];
const worker = new Worker({ address, queues: ['node-traced'], concurrency: 2, leaseWaitMs: 1_000 });
worker.task('flaky', async (job) => {
  seen.push({ attempt: job.attempt, traceId: trace.getActiveSpan()?.spanContext().traceId });
  if (job.attempt === 1) throw new TypeError('first attempt fails');
  return 'done';
});
const running = worker.run();

const client = new Client({ address });
const producer = trace.getTracer('producer').startSpan('produce');
const enqueued = await context.with(trace.setSpan(context.active(), producer), () =>
  client.enqueue('node-traced', 'flaky', '', { retryPolicy: { initialBackoffMs: 10, jitter: 0 } }),
);
producer.end();
const job = await client.waitJob(enqueued.jobId, 20_000);
await worker.stop();
await running;
client.close();

const spans = exporter
  .getFinishedSpans()
  .filter((span) => span.name === 'process node-traced')
  .map((span) => ({
    traceId: span.spanContext().traceId,
    parentSpanId: span.parentSpanContext?.spanId ?? null,
    kind: span.kind,
    attempt: span.attributes['conveyor.attempt'],
    statusCode: span.status.code,
  }));
const output = {
  producer: { traceId: producer.spanContext().traceId, spanId: producer.spanContext().spanId },
  state: job.state,
  traceparent: job.traceparent,
  seen,
  spans,
};
process.stdout.write(`${JSON.stringify(output)}\n`);
