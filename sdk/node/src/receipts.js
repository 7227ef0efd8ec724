// The worker's report phase: receipts are coalesced into ReceiptBatch calls, sent when
// `batchSize` are pending or `flushIntervalMs` after the first one arrived, one call at a time.
//
// `send` is synchronous, so a receipt handed over is never lost to whatever the handler does
// next. Receipts are idempotent per (job, lease token): a batch whose call failed in transit
// (UNAVAILABLE, deadline) is sent again with backoff. A checkpoint saved after the last
// heartbeat travels in a HeartbeatBatch sent just before the receipts.

import grpc from '@grpc/grpc-js';

import { codeName } from './errors.js';
import { MAX_ERROR_MESSAGE } from './outcome.js';
import { unary } from './proto.js';
import { sleep, Wakeup } from './wakeup.js';

const RETRYABLE = new Set([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED]);
const CALL_TIMEOUT_MS = 10_000;
const FIRST_BACKOFF_MS = 50;
const MAX_BACKOFF_MS = 2_000;
// The error type of the failure sent in place of a receipt the coordinator refused as invalid.
const INVALID_RECEIPT_ERROR_TYPE = 'InvalidReceipt';

/** @typedef {import('./outcome.js').ReceiptRequest} ReceiptRequest */
/** @typedef {{info: Function, warn: Function, error: Function}} Logger */

export class Receipts {
  /** @type {ReceiptRequest[]} */
  #pending = [];
  /** @type {{jobId: string, leaseToken: string, checkpoint: Buffer}[]} */
  #checkpoints = [];
  #wakeup = new Wakeup();
  #full = new Wakeup();
  #closing = false;

  /**
   * @param {Record<string, Function>} stub
   * @param {object} options
   * @param {number} options.flushIntervalMs
   * @param {number} options.batchSize
   * @param {number} options.retryForMs
   * @param {Logger} options.logger
   */
  constructor(stub, { flushIntervalMs, batchSize, retryForMs, logger }) {
    this.stub = stub;
    this.flushIntervalMs = flushIntervalMs;
    this.batchSize = batchSize;
    this.retryForMs = retryForMs;
    this.logger = logger;
  }

  /**
   * Queues a receipt, and before it the attempt's last unsent checkpoint.
   * @param {ReceiptRequest} receipt
   * @param {Buffer | null} [checkpoint]
   */
  send(receipt, checkpoint = null) {
    if (checkpoint !== null) {
      this.#checkpoints.push({ jobId: receipt.jobId, leaseToken: receipt.leaseToken, checkpoint });
    }
    this.#pending.push(receipt);
    if (this.#pending.length === 1) this.#wakeup.set();
    if (this.#pending.length >= this.batchSize) this.#full.set();
  }

  /** Sends what is pending at once, then `run` resolves. */
  close() {
    this.#closing = true;
    this.#wakeup.set();
    this.#full.set();
  }

  async run() {
    for (;;) {
      await this.#wakeup.wait();
      if (!this.#closing && this.#pending.length < this.batchSize) {
        await this.#full.wait(this.flushIntervalMs);
      }
      this.#wakeup.clear();
      this.#full.clear();
      while (this.#pending.length > 0) {
        const batch = this.#pending.splice(0, this.batchSize);
        const checkpoints = this.#checkpoints.splice(0);
        if (checkpoints.length > 0) await this.#deliverCheckpoints(checkpoints);
        await this.#deliver(batch);
      }
      if (this.#closing) return;
    }
  }

  /** @param {{jobId: string, leaseToken: string, checkpoint: Buffer}[]} heartbeats */
  async #deliverCheckpoints(heartbeats) {
    // A refused item means the lease is gone; its receipt will be refused too.
    await this.#withRetry(() =>
      unary(this.stub, 'HeartbeatBatch', { heartbeats }, { timeoutMs: CALL_TIMEOUT_MS }),
    );
  }

  /** @param {ReceiptRequest[]} batch */
  async #deliver(batch) {
    const reply = await this.#withRetry(() =>
      unary(this.stub, 'ReceiptBatch', { receipts: batch }, { timeoutMs: CALL_TIMEOUT_MS }),
    );
    if (reply === null) {
      this.logger.error(
        `gave up on ${batch.length} receipts; their leases will expire and the jobs run again`,
      );
      return;
    }
    batch.forEach((receipt, i) => {
      const result = reply.results[i];
      if (result.code !== grpc.status.OK) this.#refused(receipt, result.code, result.message);
    });
  }

  /**
   * @param {ReceiptRequest} receipt
   * @param {number} code
   * @param {string} message
   */
  #refused(receipt, code, message) {
    if (code === grpc.status.FAILED_PRECONDITION) {
      this.logger.warn(`receipt for job ${receipt.jobId} dropped: lease lost (${message})`);
    } else if (
      code === grpc.status.INVALID_ARGUMENT &&
      receipt.error?.type !== INVALID_RECEIPT_ERROR_TYPE
    ) {
      // An oversized result, say: fail the attempt with the reason instead of leaving the job
      // leased until its lease runs out.
      this.logger.warn(`receipt for job ${receipt.jobId} refused: ${message}`);
      this.send(fallbackFailure(receipt, message));
    } else {
      this.logger.warn(`receipt for job ${receipt.jobId} refused (${codeName(code)}): ${message}`);
    }
  }

  /**
   * The reply, retrying transient failures for up to `retryForMs`; null on giving up.
   * @param {() => Promise<any>} call
   */
  async #withRetry(call) {
    const giveUpAt = performance.now() + this.retryForMs;
    let backoff = FIRST_BACKOFF_MS;
    for (;;) {
      try {
        return await call();
      } catch (/** @type {any} */ error) {
        if (!RETRYABLE.has(error.code) || performance.now() + backoff > giveUpAt) {
          this.logger.error(`${codeName(error.code)}: ${error.details ?? error.message}`);
          return null;
        }
        this.logger.warn(`coordinator ${codeName(error.code)}; retrying in ${backoff} ms`);
      }
      await sleep(backoff);
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
    }
  }
}

/**
 * @param {ReceiptRequest} receipt
 * @param {string} message
 * @returns {ReceiptRequest}
 */
function fallbackFailure(receipt, message) {
  return {
    jobId: receipt.jobId,
    leaseToken: receipt.leaseToken,
    outcome: 'OUTCOME_FAILURE',
    error: {
      message: `the coordinator refused this attempt's receipt: ${message}`.slice(
        0,
        MAX_ERROR_MESSAGE,
      ),
      type: INVALID_RECEIPT_ERROR_TYPE,
      nonRetryable: false,
    },
  };
}
