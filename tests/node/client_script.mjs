// The Node Client for tests/node/test_node_worker.py: enqueues an 'echo' job, waits for it,
// and looks up a job that does not exist. Usage: node client_script.mjs ADDRESS PAYLOAD

import { Client, ConveyorError } from '../../sdk/node/src/index.js';

const [address, payload] = process.argv.slice(2);
const client = new Client({ address });
try {
  const enqueued = await client.enqueue('q', 'echo', payload, { priority: 1, maxAttempts: 3 });
  const job = await client.waitJob(enqueued.jobId, 10_000);
  let missing = null;
  try {
    await client.getJob('no-such-job');
  } catch (error) {
    if (!(error instanceof ConveyorError)) throw error;
    missing = error.code;
  }
  const output = {
    jobId: enqueued.jobId,
    state: job.state,
    result: job.result.toString(),
    maxAttempts: job.maxAttempts,
    missing,
  };
  process.stdout.write(`${JSON.stringify(output)}\n`);
} finally {
  client.close();
}
