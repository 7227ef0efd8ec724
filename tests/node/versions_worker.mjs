// A Node worker for tests/node/test_node_versions.py, over the real SDK, with the handlers
// the test asks for. Usage: node versions_worker.mjs ADDRESS HANDLERS [--no-declare]
// HANDLERS is a JSON array; each entry registers one handler, as
//   {"name": "send_email", "version": "1.2.0", "decode": "json"}   (version, decode optional)
//   {"messageType": "acme.email.v1.SendEmail"}                      (from protos/acme_email.proto)
// Every handler returns JSON saying which handler ran and what it saw. Prints {"event":
// "ready"} once registered and {"event": "stopped"} after SIGTERM, one JSON object a line.

import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { loadContracts, Worker } from '../../sdk/node/src/index.js';

const [address, handlers, flag] = process.argv.slice(2);
const worker = new Worker({
  address,
  queues: ['q'],
  shutdownGraceMs: 1000,
  leaseWaitMs: 5_000,
  declareTaskTypes: flag !== '--no-declare',
});
const protos = path.join(path.dirname(fileURLToPath(import.meta.url)), 'protos');
const contracts = loadContracts('acme_email.proto', { includeDirs: [protos] });

/** @param {object} event */
const emit = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);

/**
 * A handler that answers which handler ran and what it saw.
 * @param {string} label
 * @returns {(job: import('../../sdk/node/src/index.js').JobContext) => string}
 */
const report = (label) => (job) =>
  JSON.stringify({ handler: label, taskVersion: job.taskVersion, message: job.message });

for (const spec of JSON.parse(handlers)) {
  if (spec.messageType) {
    worker.task(contracts.lookupType(spec.messageType), report(spec.messageType));
  } else {
    const decode =
      spec.decode === 'json'
        ? (/** @type {Buffer} */ payload) => JSON.parse(payload.toString())
        : undefined;
    const label = `${spec.name}@${spec.version ?? '*'}`;
    worker.task(spec.name, report(label), { version: spec.version, decode });
  }
}

emit({ event: 'ready' });
await worker.run({ installSignalHandlers: true });
emit({ event: 'stopped', processed: worker.processed });
