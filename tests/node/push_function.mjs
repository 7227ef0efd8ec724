// A push function for tests/node/test_node_push.py: a plain `http` server running handlers
// through the SDK's pushHandler. Prints {"event":"ready","port":N}; with "verify", instead
// prints what verifySignature says about fixed cases and exits. "serve" passes a map of
// handlers; "serve-worker SECRET ADDRESS" passes a Worker, which also runs (pulling the
// queue "pull" from ADDRESS) with the same handlers. "serve-background SECRET HTTP_URL" answers
// 202 and posts receipts to the coordinator's HTTP API at HTTP_URL; it prints
// {"event":"replied","status":N} for each reply; its task "resume" answers with the checkpoint
// an earlier attempt saved.
import http from 'node:http';

import {
  NonRetryableError,
  pushHandler,
  sign,
  verifySignature,
  Worker,
} from '../../sdk/node/src/index.js';

const [mode, secret, address] = process.argv.slice(2);

if (mode === 'verify') {
  const body = Buffer.from('ada');
  const now = 1_800_000_000;
  const good = sign('k', now, body);
  console.log(
    JSON.stringify({
      event: 'verified',
      good: verifySignature('k', good, body, now + 300),
      wrongSecret: verifySignature('other', good, body, now),
      tampered: verifySignature('k', good, Buffer.from('eve'), now),
      replayedLate: verifySignature('k', good, body, now + 301),
      missing: verifySignature('k', undefined, body, now),
      garbage: verifySignature('k', 't=x,v1=zz', body, now),
    }),
  );
  process.exit(0);
}

const handlers = {
  hello: async (/** @type {any} */ job) => Buffer.concat([Buffer.from('hello '), job.payload]),
  refuse: async () => {
    throw new NonRetryableError('never');
  },
};
/** @type {Worker | null} */
let worker = null;
if (mode === 'serve-worker') {
  worker = new Worker({ address, queues: ['pull'], workerId: 'node-push-and-pull' });
  worker.task('hello', handlers.hello).task('refuse', handlers.refuse);
  // The worker's own rules apply when pushed: a timeout (a retryable failure) ...
  worker.task('slow', () => new Promise(() => {}), { timeoutMs: 50 });
  // ... and routing by the contract's major version.
  worker.task('versioned', () => 'v1 handler', { version: '1.0.0' });
  worker.task('versioned', () => 'v2 handler', { version: '2.0.0' });
  worker.run();
}
const options =
  mode === 'serve-background' ? { secret, background: true, coordinatorUrl: address } : { secret };
if (mode === 'serve-background') {
  worker = new Worker({ queues: ['unused'] }); // never run: its handlers serve the pushes
  worker.task('hello', handlers.hello);
  worker.task('flaky', (job) => {
    if (job.attempt === 1) throw new Error('first attempt fails');
    return 'second time';
  });
  // Attempt 1 saves progress and fails; a later one answers with the checkpoint it was handed.
  worker.task('resume', (job) => {
    if (job.attempt === 1) {
      job.saveCheckpoint('step-1');
      throw new Error('first attempt fails after step 1');
    }
    return job.checkpoint ?? 'no checkpoint';
  });
}
const handle = pushHandler(worker ?? handlers, options);
const server = http.createServer((req, res) => {
  res.on('finish', () => console.log(JSON.stringify({ event: 'replied', status: res.statusCode })));
  handle(req, res);
});
server.listen(0, '127.0.0.1', () => {
  const address = /** @type {import('node:net').AddressInfo} */ (server.address());
  console.log(JSON.stringify({ event: 'ready', port: address.port }));
});
process.on('SIGTERM', () => {
  worker?.stop();
  handle.close(1000).then(() => server.close(() => process.exit(0)));
});
