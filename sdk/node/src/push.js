// Push: run handlers behind a URL. The coordinator POSTs each job of a push queue to it
// (issue 12): body = the raw payload, headers Conveyor-Job-Id, -Attempt, -Lease-Token,
// -Deadline, -Task-Type, -Queue, -Max-Attempts and, with a secret,
// Conveyor-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>.

import { createHmac, timingSafeEqual } from 'node:crypto';

import { jobContextOf } from './context.js';
import { msOf } from './proto.js';
import { BackgroundRunner, parseDeadline } from './push_background.js';
import { RunningJob } from './running.js';
import { Worker } from './worker.js';

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
 * A plain `http` request handler running pushed jobs: 401 for a bad or old signature, 200
 * with the result, 422 for a non-retryable error, 503 (+ Retry-After) for Retry, 500
 * otherwise. `handlers` is a Worker (so the handlers registered with worker.task(), message
 * types, versions and timeouts included, serve pull and push alike) or a plain object:
 * task type -> handler.
 *
 *   http.createServer(pushHandler(worker, { secret })).listen(8080)
 *   http.createServer(pushHandler({ send_email: async (job) => ... }, { secret })).listen(8080)
 *
 * `background` (true, or the task types it applies to) answers 202 Accepted at once and runs
 * the handler on, heartbeating the lease and posting the receipt over the coordinator's
 * HTTP/JSON API at `coordinatorUrl` (its --http-listen address), with `coordinatorHeaders`
 * on each call. The returned handler's `close(graceMs)` lets background jobs finish, then
 * hands the rest back; `background` holds their counters (receiptsSent, receiptsRefused).
 *
 * @param {Worker | Record<string, import('./worker.js').Handler>} handlers
 * @param {PushOptions} options
 * @returns {PushRequestHandler}
 */
export function pushHandler(handlers, options) {
  const { secret } = options;
  const worker = handlers instanceof Worker ? handlers : workerOf(handlers);
  const runner = backgroundRunner(worker, options);
  const { background } = options;
  const accepts = (/** @type {string} */ taskType) =>
    runner !== null &&
    (background === true || (Array.isArray(background) && background.includes(taskType)));
  /** @type {PushRequestHandler} */
  const handle = (req, res) => {
    readBody(req).then(
      async (body) => {
        if (req.method !== 'POST') return reply(res, 405, 'push requests are POSTs');
        if (body === null) return reply(res, 413, 'request body too large');
        const header = /** @type {string | undefined} */ (req.headers['conveyor-signature']);
        if (secret !== null && !verifySignature(secret, header, body)) {
          return reply(res, 401, 'bad or expired Conveyor-Signature');
        }
        const running = runningJob(leasedJob(req.headers, body));
        if (runner !== null && accepts(running.job.taskType)) {
          runner.accept(running, parseDeadline(String(req.headers['conveyor-deadline'] ?? '')));
          return reply(res, 202, 'accepted; the receipt follows');
        }
        const [status, text, extra] = replyOf(await worker.runPushed(running));
        return reply(res, status, text, extra);
      },
      () => reply(res, 400, 'could not read the request'),
    );
  };
  handle.background = runner;
  handle.close = async (graceMs = worker.config.shutdownGraceMs) => runner?.close(graceMs);
  return handle;
}

/**
 * @typedef {object} PushOptions
 * @property {string | null} secret null turns the signature check off
 * @property {boolean | string[]} [background] 202 now, receipt later (all or these task types)
 * @property {string} [coordinatorUrl] the coordinator's HTTP API, for background jobs
 * @property {Record<string, string>} [coordinatorHeaders] sent with each call to it
 *
 * @typedef {((req: import('node:http').IncomingMessage,
 *   res: import('node:http').ServerResponse) => void) & {
 *   background: BackgroundRunner | null, close: (graceMs?: number) => Promise<void>}}
 *   PushRequestHandler
 */

/**
 * @param {Worker} worker
 * @param {PushOptions} options
 */
function backgroundRunner(worker, { background = false, coordinatorUrl, coordinatorHeaders }) {
  if (background === false || (Array.isArray(background) && background.length === 0)) {
    return null;
  }
  if (!coordinatorUrl || !/^https?:\/\//.test(coordinatorUrl)) {
    throw new TypeError(
      'background posts receipts over the coordinator\'s HTTP API: pass coordinatorUrl, ' +
        'its --http-listen address as an http(s) URL (e.g. http://conveyor:8081)',
    );
  }
  return new BackgroundRunner(worker, coordinatorUrl, coordinatorHeaders ?? {});
}

/**
 * A pushed job as the worker's record of a running one (no heartbeat interval: background
 * heartbeats go by the deadline).
 * @param {any} job
 */
function runningJob(job) {
  return new RunningJob(job, jobContextOf(job), 0, performance.now());
}

/**
 * The old form, a map of handlers, as a Worker that is never run.
 * @param {Record<string, import('./worker.js').Handler>} handlers
 */
function workerOf(handlers) {
  const worker = new Worker({ queues: ['push'] });
  for (const [taskType, handler] of Object.entries(handlers)) worker.task(taskType, handler);
  return worker;
}

/**
 * A LeasedJob from the push request.
 * @param {import('node:http').IncomingHttpHeaders} headers
 * @param {Buffer} body
 */
function leasedJob(headers, body) {
  const header = (/** @type {string} */ name) => String(headers[name] ?? '');
  return {
    jobId: header('conveyor-job-id'),
    leaseToken: header('conveyor-lease-token'),
    queue: header('conveyor-queue'),
    taskType: header('conveyor-task-type'),
    taskVersion: header('conveyor-task-version'),
    payload: body,
    attempt: Number(header('conveyor-attempt')) || 1,
    maxAttempts: Number(header('conveyor-max-attempts')) || 1,
  };
}

/**
 * The HTTP reply the coordinator reads as this receipt.
 * @param {import('./outcome.js').ReceiptRequest | null} receipt
 * @returns {[number, Buffer | string, Record<string, string>?]}
 */
function replyOf(receipt) {
  if (receipt === null || receipt.outcome === 'OUTCOME_RELEASE') {
    return [503, 'the job was not run; try again'];
  }
  if (receipt.outcome === 'OUTCOME_SUCCESS') return [200, receipt.result ?? Buffer.alloc(0)];
  const error = receipt.error ?? { type: 'Error', message: 'failed', nonRetryable: false };
  if (error.type === 'Retry') {
    /** @type {Record<string, string>} */
    const extra = {};
    const afterMs = msOf(receipt.retryAfter);
    if (afterMs !== null) extra['Retry-After'] = String(Math.ceil(afterMs / 1000));
    return [503, error.message, extra];
  }
  return [error.nonRetryable ? 422 : 500, `${error.type}: ${error.message}`];
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
