// The "202 now, receipt later" mode of pushHandler (issue 12): for work longer than an HTTP
// request may stay open. The handler answers 202 Accepted at once; the job's handler runs on
// while this module heartbeats its lease over the coordinator's HTTP/JSON API (the lease
// token and deadline came in the push headers) and posts its receipt there when it ends.
// HTTP rather than gRPC: a function behind a URL may have only HTTP egress.

import { StopReason } from './running.js';
import { sleep, Wakeup } from './wakeup.js';

// gRPC status numbers in the API's google.rpc.Status bodies meaning "this lease is over"
// (FAILED_PRECONDITION: fenced; NOT_FOUND: the job is gone).
const LEASE_OVER_CODES = new Set([5, 9]);
const INVALID_ARGUMENT = 3;
// HTTP statuses worth trying again: the coordinator is busy, restarting or behind a proxy.
const TRANSIENT_STATUSES = new Set([408, 429, 500, 502, 503, 504]);
const MIN_HEARTBEAT_MS = 50;
const RECEIPT_BACKOFF_FIRST_MS = 100;
const RECEIPT_BACKOFF_MAX_MS = 5_000;
const REQUEST_TIMEOUT_MS = 10_000;

class Transient extends Error {}

/**
 * Conveyor-Deadline (RFC 3339) as epoch milliseconds; null when absent or malformed.
 * @param {string} value
 */
export function parseDeadline(value) {
  const ms = value ? Date.parse(value) : NaN;
  return Number.isFinite(ms) ? ms : null;
}

/** Runs accepted jobs to their end: handler, heartbeats, receipt. One per pushHandler. */
export class BackgroundRunner {
  /** @type {Map<string, import('./running.js').RunningJob>} by lease token */
  #running = new Map();

  /**
   * @param {import('./worker.js').Worker} worker
   * @param {string} coordinatorUrl
   * @param {Record<string, string>} headers
   */
  constructor(worker, coordinatorUrl, headers) {
    this.worker = worker;
    this.base = coordinatorUrl.replace(/\/+$/, '');
    this.headers = { 'Content-Type': 'application/json', ...headers };
    /** Receipts the coordinator took, and refused because the lease had ended. */
    this.receiptsSent = 0;
    this.receiptsRefused = 0;
  }

  /**
   * Starts the job unless its lease already runs here.
   * @param {import('./running.js').RunningJob} running
   * @param {number | null} deadlineMs
   */
  accept(running, deadlineMs) {
    const token = running.job.leaseToken;
    if (this.#running.has(token)) return;
    this.#running.set(token, running);
    running.done = this.#run(running, deadlineMs).catch((error) => {
      this.worker.logger.error(`background job ${running.job.jobId} failed: ${error}`);
    });
  }

  /**
   * Lets accepted jobs finish for `graceMs`, then stops the rest and hands them back.
   * @param {number} graceMs
   */
  async close(graceMs) {
    const done = () => Promise.all([...this.#running.values()].map((r) => r.done));
    const timer = new Promise((resolve) => setTimeout(resolve, graceMs).unref());
    await Promise.race([done(), timer]);
    for (const running of this.#running.values()) {
      running.stop(StopReason.SHUTDOWN, 'the function is shutting down');
    }
    await done();
  }

  /**
   * @param {import('./running.js').RunningJob} running
   * @param {number | null} deadlineMs
   */
  async #run(running, deadlineMs) {
    const expiresAt = await this.#handCheckpoint(running, deadlineMs);
    const finished = new Wakeup();
    const beats = this.#heartbeats(running, expiresAt, finished);
    let receipt;
    try {
      receipt = await this.worker.runPushed(running);
    } finally {
      finished.set();
      await beats;
      this.#running.delete(running.job.leaseToken);
    }
    if (receipt === null || running.stopReason === StopReason.LEASE_LOST) return;
    if (receipt.outcome !== 'OUTCOME_SUCCESS') {
      // Progress saved since the last heartbeat is meant for the next attempt.
      const checkpoint = running.context._takeUnsentCheckpoint();
      if (checkpoint !== null) await this.#heartbeatOnce(running, checkpoint);
    }
    await this.#sendReceipt(receipt);
  }

  /**
   * Before the handler starts: one heartbeat asking for the checkpoint an earlier attempt
   * saved (the push request carries only the payload), which the handler then finds in
   * job.checkpoint. Tries again while the coordinator cannot answer and the lease holds; a
   * lease found over, or a job found cancelled, stops the job before its handler runs.
   * Returns the lease's end as that heartbeat left it.
   * @param {import('./running.js').RunningJob} running
   * @param {number | null} deadlineMs
   * @returns {Promise<number | null>}
   */
  async #handCheckpoint(running, deadlineMs) {
    const { jobId, leaseToken } = running.job;
    const body = { lease_token: leaseToken, return_checkpoint: true };
    let backoff = RECEIPT_BACKOFF_FIRST_MS;
    while (running.stopReason === null) {
      let status;
      let reply;
      try {
        [status, reply] = await this.#call(`/v1/jobs/${jobId}:heartbeat`, body);
      } catch (error) {
        if (!(error instanceof Transient)) throw error;
        if (deadlineMs !== null && Date.now() + backoff >= deadlineMs) {
          this.#lose(running, 'the lease ran out before a heartbeat got through');
          break;
        }
        this.worker.logger.warn(`heartbeat of job ${jobId} failed (${error.message}); retrying`);
        await sleep(backoff);
        backoff = Math.min(backoff * 2, RECEIPT_BACKOFF_MAX_MS);
        continue;
      }
      if (status === 200) {
        if (typeof reply.checkpoint === 'string' && reply.checkpoint.length > 0) {
          running.context.checkpoint = Buffer.from(reply.checkpoint, 'base64');
        }
        if (reply.cancel_requested ?? reply.cancelRequested) {
          running.stop(StopReason.CANCEL_REQUESTED, 'the job was cancelled');
        }
        const renewed = Date.parse(reply.lease_expires_at ?? reply.leaseExpiresAt);
        return Number.isFinite(renewed) ? renewed : deadlineMs;
      }
      if (predatesReturnCheckpoint(status, reply)) {
        this.worker.logger.warn(
          `the coordinator does not know return_checkpoint (an older version): job ${jobId} ` +
            "runs without an earlier attempt's checkpoint",
        );
        return deadlineMs;
      }
      this.#lose(running, describe(status, reply));
    }
    return deadlineMs;
  }

  /**
   * A heartbeat each time a fraction (a third) of what is left of the lease has passed, or at
   * once on job.heartbeatNow(); the lease is lost when it runs out unrenewed.
   * @param {import('./running.js').RunningJob} running
   * @param {number | null} deadlineMs
   * @param {Wakeup} finished
   */
  async #heartbeats(running, deadlineMs, finished) {
    const asked = new Wakeup();
    running.context._setHeartbeatRequest(() => asked.set());
    const fraction = this.worker.config.heartbeatFraction;
    let expiresAt = deadlineMs;
    while (!finished.isSet) {
      const now = Date.now();
      if (expiresAt !== null && now >= expiresAt) {
        this.#lose(running, 'the lease ran out before a heartbeat got through');
        return;
      }
      const waitMs = expiresAt === null ? 0 : (expiresAt - now) * fraction;
      await Promise.race([asked.wait(Math.max(waitMs, MIN_HEARTBEAT_MS)), finished.wait()]);
      if (finished.isSet) return;
      asked.clear();
      const reply = await this.#heartbeatOnce(running, running.context._takeUnsentCheckpoint());
      if (reply === null) {
        if (running.stopReason === StopReason.LEASE_LOST) return;
        continue; // a transient failure: try again sooner, while the lease holds
      }
      const renewed = Date.parse(reply.lease_expires_at ?? reply.leaseExpiresAt);
      if (Number.isFinite(renewed)) expiresAt = renewed;
      if ((reply.cancel_requested ?? reply.cancelRequested) && running.stopReason === null) {
        running.stop(StopReason.CANCEL_REQUESTED, 'the job was cancelled');
      }
    }
  }

  /**
   * One heartbeat: the reply, or null when it did not get through.
   * @param {import('./running.js').RunningJob} running
   * @param {Buffer | null} checkpoint
   * @returns {Promise<any>}
   */
  async #heartbeatOnce(running, checkpoint) {
    const { jobId, leaseToken } = running.job;
    /** @type {Record<string, string>} */
    const body = { lease_token: leaseToken };
    if (checkpoint !== null) body.checkpoint = checkpoint.toString('base64');
    try {
      const [status, reply] = await this.#call(`/v1/jobs/${jobId}:heartbeat`, body);
      if (status === 200) return reply;
      this.#lose(running, describe(status, reply));
    } catch (error) {
      if (!(error instanceof Transient)) throw error;
      if (checkpoint !== null) running.context._unsentAgain(checkpoint);
      this.worker.logger.warn(`heartbeat of job ${jobId} failed (${error.message}); retrying`);
    }
    return null;
  }

  /**
   * @param {import('./running.js').RunningJob} running
   * @param {string} why
   */
  #lose(running, why) {
    this.worker.logger.warn(`lease lost on job ${running.job.jobId} (${why}); abandoning it`);
    running.stop(StopReason.LEASE_LOST, `the lease was lost: ${why}`);
  }

  /**
   * Posts the receipt, trying again while the coordinator cannot take it, for up to the
   * worker's receiptRetryForMs.
   * @param {import('./outcome.js').ReceiptRequest} receipt
   */
  async #sendReceipt(receipt) {
    const giveUp = Date.now() + this.worker.config.receiptRetryForMs;
    let backoff = RECEIPT_BACKOFF_FIRST_MS;
    for (;;) {
      try {
        const [status, reply] = await this.#call(
          `/v1/jobs/${receipt.jobId}:receipt`,
          receiptJson(receipt),
        );
        if (status === 200) {
          this.receiptsSent += 1;
          return;
        }
        // Fencing: the lease ended (expired, cancelled, handed on) before the receipt.
        this.receiptsRefused += 1;
        this.worker.logger.warn(`receipt of job ${receipt.jobId} refused: ${describe(status, reply)}`);
        return;
      } catch (error) {
        if (!(error instanceof Transient)) throw error;
        if (Date.now() + backoff > giveUp) {
          this.worker.logger.error(`receipt of job ${receipt.jobId} not delivered (${error.message})`);
          return;
        }
        await sleep(backoff);
        backoff = Math.min(backoff * 2, RECEIPT_BACKOFF_MAX_MS);
      }
    }
  }

  /**
   * POSTs `body` as JSON: the status and JSON body of a final answer, or a Transient error.
   * @param {string} path
   * @param {object} body
   * @returns {Promise<[number, any]>}
   */
  async #call(path, body) {
    let reply;
    try {
      reply = await fetch(this.base + path, {
        method: 'POST',
        headers: this.headers,
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
    } catch (/** @type {any} */ error) {
      throw new Transient(error?.name ?? 'fetch failed');
    }
    if (TRANSIENT_STATUSES.has(reply.status)) throw new Transient(`HTTP ${reply.status}`);
    const text = await reply.text();
    let parsed = {};
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON: described by its status alone
    }
    return [reply.status, parsed ?? {}];
  }
}

/**
 * A ReceiptRequest as the HTTP API's proto JSON.
 * @param {import('./outcome.js').ReceiptRequest} receipt
 */
function receiptJson(receipt) {
  /** @type {Record<string, unknown>} */
  const json = { lease_token: receipt.leaseToken, outcome: receipt.outcome };
  if (receipt.result !== undefined) json.result = Buffer.from(receipt.result).toString('base64');
  if (receipt.error !== undefined) {
    const { message, type, nonRetryable } = receipt.error;
    json.error = { message, type, non_retryable: nonRetryable };
  }
  if (receipt.retryAfter !== undefined) {
    const { seconds, nanos } = receipt.retryAfter;
    json.retry_after = `${Number(seconds) + nanos / 1e9}s`;
  }
  return json;
}

/**
 * A coordinator older than HeartbeatRequest.return_checkpoint refuses the unknown JSON field
 * (HTTP 400, INVALID_ARGUMENT naming it).
 * @param {number} status
 * @param {any} body
 */
function predatesReturnCheckpoint(status, body) {
  return (
    status === 400 &&
    body?.code === INVALID_ARGUMENT &&
    String(body?.message ?? '').includes('return_checkpoint')
  );
}

/**
 * @param {number} status
 * @param {any} body
 */
function describe(status, body) {
  const what = LEASE_OVER_CODES.has(body?.code) ? 'the lease is over' : 'refused';
  return `${what}: HTTP ${status}, code ${body?.code}: ${String(body?.message ?? '').slice(0, 200)}`;
}
