// The Node SDK's conformance worker: the task types `conveyor conformance` exercises, written
// with the SDK as any user would. Run it as
//
//   CONVEYOR_ADDRESS=127.0.0.1:7345 CONVEYOR_QUEUE=q node sdk/node/conformance/worker.mjs
//
// The contract it fulfils is in docs/conformance.md; the Python SDK's twin is
// sdk/python/conveyor/conformance_worker.py.

import { setTimeout as sleep } from 'node:timers/promises';

import { NonRetryableError, Worker } from '../src/index.js';

const VERSIONED_VERSION = '1.1.0';
// The SDK's own default; the kit sets a short one for its shutdown scenario.
const DEFAULT_GRACE_MS = 30_000;

const address = process.env.CONVEYOR_ADDRESS;
const queue = process.env.CONVEYOR_QUEUE;
if (!address || !queue) {
  console.error('error: set CONVEYOR_ADDRESS and CONVEYOR_QUEUE');
  process.exit(2);
}
const shutdownGraceMs = Number(process.env.CONVEYOR_SHUTDOWN_GRACE_MS || DEFAULT_GRACE_MS);
// Unless the kit says otherwise: one job at a time would do, but a few slots show leasing by
// free slots.
const concurrency = Number(process.env.CONVEYOR_CONCURRENCY || 4);

const worker = new Worker({ address, queues: [queue], concurrency, shutdownGraceMs });

worker.task('conformance.echo', (job) => job.payload);

worker.task('conformance.fail_once', (job) => {
  if (job.attempt === 1) throw new Error('failing the first attempt on purpose');
  return 'ok';
});

worker.task('conformance.fail_permanently', () => {
  throw new NonRetryableError('this task never succeeds');
});

worker.task('conformance.checkpoint', (job) => {
  if (job.attempt === 1) {
    job.saveCheckpoint('step-1');
    throw new Error('failing after the checkpoint on purpose');
  }
  return job.checkpoint;
});

// The worker heartbeats meanwhile, as for any handler; the signal cuts the sleep short when
// the job is cancelled, its lease is lost or the shutdown grace runs out.
worker.task('conformance.sleep', async (job) => {
  await sleep(Number(job.payload.toString() || '0'), undefined, { signal: job.signal });
  return 'done';
});

// Runs until the signal aborts: a heartbeat reply brought the cancellation, and the worker
// reports it (the job ends CANCELLED) whatever the handler does next.
worker.task('conformance.wait_for_cancel', async (job) => {
  if (!job.signal.aborted) {
    await new Promise((resolve) => job.signal.addEventListener('abort', resolve, { once: true }));
  }
  throw job.signal.reason;
});

worker.task('conformance.versioned', (job) => job.payload, { version: VERSIONED_VERSION });

await worker.run({ installSignalHandlers: true });
