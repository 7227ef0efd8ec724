// Push: run handlers behind a URL. The coordinator POSTs each job of a push queue to it
// (issue 12): body = the raw payload, headers Conveyor-Job-Id, -Attempt, -Lease-Token,
// -Deadline, -Task-Type, -Queue, -Max-Attempts and, with a secret,
// Conveyor-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>.

import { createHmac, timingSafeEqual } from 'node:crypto';

import { JobContext } from './context.js';
import { failureError, resultBytes } from './outcome.js';

/** A signature older (or further ahead) than this is refused: a captured request cannot be replayed. */
export const SIGNATURE_TOLERANCE_SECONDS = 300;
/** Requests larger than this are refused (413) before a handler runs. */
export const MAX_BODY_BYTES = 32 * 1024 * 1024;

/**
 * The Conveyor-Signature header value for `body` at `timestamp` (unix seconds).
 * @param {string} secret
 * @param {number} timestamp
 * @param {Buffer} body
 */
export function sign(secret, timestamp, body) {
  const mac = createHmac('sha256', secret).update(`${timestamp}.`).update(body).digest('hex');
  return `t=${timestamp},v1=${mac}`;
}

/**
 * Whether `header` signs `body` with `secret` and is at most five minutes from `nowSeconds`.
 * Several v1= values are accepted (any one matching), for secret rotation.
 * @param {string} secret
 * @param {string | undefined | null} header
 * @param {Buffer} body
 * @param {number} [nowSeconds]
 */
export function verifySignature(secret, header, body, nowSeconds = Date.now() / 1000) {
  if (!header) return false;
  let timestamp = null;
  const candidates = [];
  for (const part of header.split(',')) {
    const [key, value = ''] = part.trim().split('=', 2);
    if (key === 't' && /^\d+$/.test(value)) timestamp = Number(value);
    else if (key === 'v1') candidates.push(value);
  }
  if (timestamp === null || candidates.length === 0) return false;
  if (Math.abs(nowSeconds - timestamp) > SIGNATURE_TOLERANCE_SECONDS) return false;
  const expected = Buffer.from(sign(secret, timestamp, body).split('v1=')[1]);
  return candidates.some((candidate) => {
    const given = Buffer.from(candidate);
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
}

/**
 * A plain `http` request handler running `handlers` (an object: task type -> handler, as
 * registered with worker.task) for pushed jobs: 401 for a bad or old signature, 200 with the
 * result, 422 for a non-retryable error, 503 (+ Retry-After) for Retry, 500 otherwise.
 *
 *   http.createServer(pushHandler({ send_email: async (job) => ... }, { secret })).listen(8080)
 *
 * @param {Record<string, (job: JobContext) => unknown>} handlers
 * @param {{secret: string | null}} options null turns the signature check off
 * @returns {(req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => void}
 */
export function pushHandler(handlers, { secret }) {
  return (req, res) => {
    readBody(req).then(
      async (body) => {
        if (req.method !== 'POST') return reply(res, 405, 'push requests are POSTs');
        if (body === null) return reply(res, 413, 'request body too large');
        const header = /** @type {string | undefined} */ (req.headers['conveyor-signature']);
        if (secret !== null && !verifySignature(secret, header, body)) {
          return reply(res, 401, 'bad or expired Conveyor-Signature');
        }
        const [status, text, extra] = await run(handlers, req.headers, body);
        return reply(res, status, text, extra);
      },
      () => reply(res, 400, 'could not read the request'),
    );
  };
}

/**
 * @param {Record<string, (job: JobContext) => unknown>} handlers
 * @param {import('node:http').IncomingHttpHeaders} headers
 * @param {Buffer} body
 * @returns {Promise<[number, Buffer | string, Record<string, string>?]>}
 */
async function run(handlers, headers, body) {
  const header = (/** @type {string} */ name) => String(headers[name] ?? '');
  const taskType = header('conveyor-task-type');
  const handler = Object.hasOwn(handlers, taskType) ? handlers[taskType] : undefined;
  if (typeof handler !== 'function') {
    return [500, `no handler for task type ${JSON.stringify(taskType.slice(0, 100))}`];
  }
  const job = new JobContext({
    jobId: header('conveyor-job-id'),
    queue: header('conveyor-queue'),
    taskType,
    taskVersion: header('conveyor-task-version'),
    payload: body,
    attempt: Number(header('conveyor-attempt')) || 1,
    maxAttempts: Number(header('conveyor-max-attempts')) || 1,
    checkpoint: null,
    parentJobId: null,
  });
  try {
    return [200, resultBytes(await handler(job))];
  } catch (error) {
    const failure = failureError(error);
    const afterMs = /** @type {any} */ (error)?.afterMs;
    if (failure.type === 'Retry') {
      /** @type {Record<string, string>} */
      const extra = {};
      if (afterMs !== undefined) extra['Retry-After'] = String(Math.ceil(afterMs / 1000));
      return [503, failure.message, extra];
    }
    return [failure.nonRetryable ? 422 : 500, `${failure.type}: ${failure.message}`];
  }
}

/** @param {import('node:http').IncomingMessage} req @returns {Promise<Buffer | null>} */
async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) return null;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/**
 * @param {import('node:http').ServerResponse} res
 * @param {number} status
 * @param {Buffer | string} body
 * @param {Record<string, string>} [extra]
 */
function reply(res, status, body, extra = {}) {
  const bytes = Buffer.isBuffer(body) ? body : Buffer.from(body);
  res.writeHead(status, {
    'Content-Type': 'application/octet-stream',
    'Content-Length': String(bytes.length),
    ...extra,
  });
  res.end(bytes);
}
