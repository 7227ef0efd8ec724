// A Node worker for tests/node/test_node_heartbeat_now.py. Its 'progress' handler saves a
// checkpoint, asks for a heartbeat at once with job.heartbeatNow(), and then holds the job
// until the worker stops. Usage: node heartbeat_now_worker.mjs ADDRESS
// Prints {"event": "ready"}, {"event": "asked", "jobId": ...} and, after SIGTERM,
// {"event": "stopped"}, one per line.

import { Worker } from '../../sdk/node/src/index.js';

const [address] = process.argv.slice(2);
const worker = new Worker({ address, queues: ['q'], shutdownGraceMs: 0, leaseWaitMs: 5_000 });

/** @param {object} event */
const emit = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);

worker.task('progress', async (job) => {
  job.saveCheckpoint('step-1');
  job.heartbeatNow();
  emit({ event: 'asked', jobId: job.jobId });
  await new Promise((resolve) => job.signal.addEventListener('abort', resolve, { once: true }));
  throw job.signal.reason;
});

emit({ event: 'ready' });
await worker.run({ installSignalHandlers: true });
emit({ event: 'stopped' });
