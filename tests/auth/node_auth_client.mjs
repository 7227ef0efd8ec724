// Enqueues one job with the Node SDK and prints {"ok": jobId} or {"code": "UNAUTHENTICATED"}.
// argv: address [caPemPath]; the token comes from $CONVEYOR_TOKEN (or none).
import { readFileSync } from 'node:fs';
import { Client } from '../../sdk/node/src/index.js';

const [address, caPath] = process.argv.slice(2);
const client = new Client({
  address,
  timeoutMs: 10_000,
  ...(caPath ? { tlsRootCertificates: readFileSync(caPath) } : {}),
});
try {
  const result = await client.enqueue('node-q', 'task', Buffer.from('x'));
  console.log(JSON.stringify({ ok: result.jobId }));
} catch (error) {
  console.log(JSON.stringify({ code: error.code }));
} finally {
  client.close();
}
