// A Node worker for tests/node/test_node_cancel_before_confirm.py: every job it leases is
// cancelled after the Lease reply arrives and before the worker confirms the lease, so the
// confirmation answers cancel_requested. No sleeps: a gRPC client interceptor on the worker's
// channel holds each Lease reply back until CancelJob (on a separate channel) has returned,
// and the worker sends its confirming HeartbeatBatch only once it has the reply.
// Usage: node cancel_before_confirm_worker.mjs ADDRESS
// Prints {"event": "ready"}, {"event": "cancelled", "jobId": ...} per job cancelled,
// {"event": "handled", "jobId": ...} should a handler ever run, and, after SIGTERM,
// {"event": "stopped"}, one per line.

import { createRequire } from 'node:module';

import { Client, Worker } from '../../sdk/node/src/index.js';

// The SDK's own copy of grpc-js, resolved from sdk/node as the SDK resolves it.
const require = createRequire(new URL('../../sdk/node/package.json', import.meta.url));
/** @type {typeof import('@grpc/grpc-js')} */
const grpc = require('@grpc/grpc-js');

const [address] = process.argv.slice(2);

/** @param {object} event */
const emit = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);

const canceller = new Client({ address });

/** @type {import('@grpc/grpc-js').Interceptor} */
const cancelEachLeasedJob = (options, nextCall) => {
  if (!options.method_definition.path.endsWith('/Lease')) {
    return new grpc.InterceptingCall(nextCall(options));
  }
  return new grpc.InterceptingCall(nextCall(options), {
    start(metadata, listener, next) {
      next(metadata, {
        onReceiveMessage(/** @type {any} */ reply, /** @type {Function} */ deliver) {
          // null: the call failed (grpc-js hands a unary call's listener null before the status)
          const jobs = /** @type {any[]} */ (reply?.jobs ?? []);
          Promise.all(jobs.map((job) => canceller.cancelJob(job.jobId))).then(
            () => {
              for (const job of jobs) emit({ event: 'cancelled', jobId: job.jobId });
              deliver(reply);
            },
            (error) => {
              emit({ event: 'error', message: String(error) });
              deliver(reply);
            },
          );
        },
      });
    },
  });
};

const worker = new Worker({
  address,
  queues: ['q'],
  shutdownGraceMs: 0,
  leaseWaitMs: 5_000,
  channelOptions: { interceptors: [cancelEachLeasedJob] },
});

// Records that it ran, then holds the job until the worker aborts it (a heartbeat's
// cancel_requested, on code that runs cancelled jobs).
worker.task('work', async (job) => {
  emit({ event: 'handled', jobId: job.jobId });
  await new Promise((resolve) => job.signal.addEventListener('abort', resolve, { once: true }));
  throw job.signal.reason;
});

emit({ event: 'ready' });
await worker.run({ installSignalHandlers: true });
canceller.close();
emit({ event: 'stopped' });
