// A Node worker for tests/node/test_node_worker.py, over the real SDK.
// Usage: node worker_script.mjs ADDRESS CONCURRENCY SHUTDOWN_GRACE_MS
// Prints one JSON object per line on stdout: what the handlers saw, then a final
// {"event": "stopped", ...} once run() has resolved after SIGTERM.

import { setTimeout as sleep } from 'node:timers/promises';

import { NonRetryableError, Retry, Worker } from '../../sdk/node/src/index.js';

const [address, concurrency, shutdownGraceMs] = process.argv.slice(2);
const worker = new Worker({
  address,
  queues: ['q'],
  concurrency: Number(concurrency),
  shutdownGraceMs: Number(shutdownGraceMs),
  leaseWaitMs: 5_000,
});

/** @param {object} event */
const emit = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);

let running = 0;
let maxRunning = 0;

worker.task('echo', (job) => job.payload);

// Holds a slot for `payload` ms, counting how many handlers run at once.
worker.task('hold', async (job) => {
  running += 1;
  maxRunning = Math.max(maxRunning, running);
  try {
    await sleep(Number(job.payload.toString()), undefined, { signal: job.signal });
  } finally {
    running -= 1;
  }
});

worker.task('flaky', (job) => {
  if (job.attempt === 1) throw new TypeError('first attempt fails');
  return `ok on attempt ${job.attempt}`;
});

worker.task('fatal', () => {
  throw new NonRetryableError('card declined');
});

worker.task('later', (job) => {
  if (job.attempt === 1) throw new Retry(Number(job.payload.toString()));
  return 'retried';
});

worker.task('checkpoint', (job) => {
  if (job.attempt === 1) {
    job.saveCheckpoint('step-1');
    throw new Error('crashed after step 1');
  }
  return `resumed from ${job.checkpoint}`;
});

// Works for `payload` ms, far past a short lease: only heartbeats keep the job.
worker.task('long', async (job) => {
  await sleep(Number(job.payload.toString()), undefined, { signal: job.signal });
  return 'finished';
});

// Works for `payload` ms unless its 200 ms timeout cuts it short first.
worker.task(
  'slow',
  async (job) => {
    await sleep(Number(job.payload.toString()), undefined, { signal: job.signal });
    return 'in time';
  },
  { timeoutMs: 200 },
);

// The first attempt runs until the worker aborts its signal, and says why; later ones succeed.
worker.task('until_aborted', async (job) => {
  if (job.attempt > 1) return `attempt ${job.attempt}`;
  emit({ event: 'started', jobId: job.jobId });
  await new Promise((resolve) => job.signal.addEventListener('abort', resolve, { once: true }));
  emit({
    event: 'aborted',
    jobId: job.jobId,
    cancelled: job.cancelled,
    reason: job.signal.reason.stopReason,
  });
  throw job.signal.reason;
});

emit({ event: 'ready' });
await worker.run({ installSignalHandlers: true });
emit({ event: 'stopped', maxRunning, processed: worker.processed });
