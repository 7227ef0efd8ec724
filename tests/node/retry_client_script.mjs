// The Node Client's enqueue retries, for tests/node/test_node_client_retries.py.
// Usage: node retry_client_script.mjs ADDRESS MODE, MODE one of
//   key      enqueue with idempotency key 'order-17'
//   auto     enqueue without a key, on a client with autoIdempotencyKeys
//   none     enqueue without a key
//   batch    enqueueBatch of two jobs with keys
// Prints {"event": "calling"} before the call, then {"event": "done", "results": [...]} or
// {"event": "done", "error": "<code>"}.

import { Client, ConveyorError } from '../../sdk/node/src/index.js';

const [address, mode] = process.argv.slice(2);
const client = new Client({
  address,
  autoIdempotencyKeys: mode === 'auto',
  // Retries often and long enough that no restart in the tests outlasts them.
  enqueueRetry: { maxAttempts: 1000, initialBackoffMs: 10, maxBackoffMs: 50 },
});

/** @param {object} event */
const emit = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);

emit({ event: 'calling' });
try {
  let results;
  if (mode === 'batch') {
    results = await client.enqueueBatch([
      { queue: 'q', taskType: 't', idempotencyKey: 'a' },
      { queue: 'q', taskType: 't', idempotencyKey: 'b' },
    ]);
  } else {
    const key = mode === 'key' ? { idempotencyKey: 'order-17' } : {};
    results = [await client.enqueue('q', 't', 'x', key)];
  }
  emit({ event: 'done', results });
} catch (error) {
  if (!(error instanceof ConveyorError)) throw error;
  emit({ event: 'done', error: error.code });
} finally {
  client.close();
}
