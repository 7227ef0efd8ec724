// Task contracts in the Node SDK, for tests/node/test_node_versions.py.
// Usage: node contracts_script.mjs registration
//          prints {"<case>": "<the error worker.task() threw>", ...}
//        node contracts_script.mjs enqueue ADDRESS TO
//          enqueues acme.email.v1.SendEmail{to: TO} with the Node Client; prints {"jobId": ...}

import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Client, loadContracts, Worker } from '../../sdk/node/src/index.js';

const protos = path.join(path.dirname(fileURLToPath(import.meta.url)), 'protos');
const contracts = loadContracts('acme_email.proto', { includeDirs: [protos] });
const SendEmail = contracts.lookupType('acme.email.v1.SendEmail');
const handler = () => 'unused';

/** @param {(worker: Worker) => void} register @returns {string | null} what it threw */
function refused(register) {
  try {
    register(new Worker());
    return null;
  } catch (error) {
    return /** @type {Error} */ (error).message;
  }
}

const [command, address, to] = process.argv.slice(2);
let output;
if (command === 'registration') {
  output = {
    sameMajor: refused((w) =>
      w.task('t', handler, { version: '1.0.0' }).task('t', handler, { version: '1.3.0' }),
    ),
    versionedAndNot: refused((w) => w.task('t', handler, { version: '1.0.0' }).task('t', handler)),
    badVersion: refused((w) => w.task('t', handler, { version: '1.2' })),
    messageTypeWithVersion: refused((w) => w.task(SendEmail, handler, { version: '1.0.0' })),
    twoMajors: refused((w) =>
      w.task('t', handler, { version: '1.0.0' }).task('t', handler, { version: '2.0.0' }),
    ),
  };
} else if (command === 'enqueue') {
  const client = new Client({ address });
  try {
    output = await client.enqueue('q', SendEmail, { to });
  } finally {
    client.close();
  }
} else {
  throw new Error(`unknown command ${command}`);
}
process.stdout.write(`${JSON.stringify(output)}\n`);
