// What a handler's return value or thrown error amounts to: the ReceiptRequest the worker
// sends for it.

import { NonRetryableError, Retry } from './context.js';
import { durationOf } from './proto.js';

// The error types the worker reports for failures it makes itself.
export const CANCELLED_ERROR_TYPE = 'Cancelled';
export const TIMEOUT_ERROR_TYPE = 'HandlerTimeout';
export const UNKNOWN_TASK_ERROR_TYPE = 'UnknownTaskType';
export const PAYLOAD_DECODE_ERROR_TYPE = 'PayloadDecodeError';
// The coordinator keeps this much of an error message; sending more is wasted bytes.
export const MAX_ERROR_MESSAGE = 16 * 1024;

/**
 * @typedef {{message: string, type: string, nonRetryable: boolean}} JobError
 * @typedef {'OUTCOME_SUCCESS' | 'OUTCOME_FAILURE' | 'OUTCOME_RELEASE'} Outcome
 * @typedef {{jobId: string, leaseToken: string, outcome: Outcome, result?: Buffer,
 *   error?: JobError, retryAfter?: {seconds: number, nanos: number}}} ReceiptRequest
 */

/**
 * A handler's return value as the job's result: a Buffer (or other bytes) as it is, a string
 * as UTF-8, undefined/null as empty.
 * @param {unknown} value
 * @returns {Buffer}
 */
export function resultBytes(value) {
  if (value === undefined || value === null) return Buffer.alloc(0);
  if (typeof value === 'string') return Buffer.from(value);
  if (value instanceof Uint8Array) return Buffer.from(value);
  throw new TypeError(
    `a handler must return a Buffer, a string or undefined, not ${typeof value}; ` +
      'serialise structured results yourself (JSON.stringify(...), say)',
  );
}

/** @param {unknown} error */
export function isNonRetryable(error) {
  return error instanceof NonRetryableError || Boolean(/** @type {any} */ (error)?.nonRetryable);
}

/**
 * The error reported for a thrown value: its message and name (never the payload).
 * @param {unknown} error
 * @returns {JobError}
 */
export function failureError(error) {
  const name = error instanceof Error ? error.name : typeof error;
  const message = error instanceof Error ? error.message : String(error);
  return {
    message: (message || name).slice(0, MAX_ERROR_MESSAGE),
    type: name,
    nonRetryable: isNonRetryable(error),
  };
}

/**
 * @param {any} job the LeasedJob
 * @param {Outcome} outcome
 * @param {{result?: Buffer, error?: JobError, retryAfterMs?: number}} [fields]
 * @returns {ReceiptRequest}
 */
export function receipt(job, outcome, { result, error, retryAfterMs } = {}) {
  /** @type {ReceiptRequest} */
  const request = { jobId: job.jobId, leaseToken: job.leaseToken, outcome };
  if (result !== undefined) request.result = result;
  if (error !== undefined) request.error = error;
  if (retryAfterMs !== undefined) request.retryAfter = durationOf(retryAfterMs);
  return request;
}

/**
 * The receipt for a handler that threw: FAILURE, with retry_after for a Retry.
 * @param {any} job
 * @param {unknown} error
 */
export function failureReceipt(job, error) {
  const retryAfterMs = error instanceof Retry ? error.afterMs : undefined;
  return receipt(job, 'OUTCOME_FAILURE', { error: failureError(error), retryAfterMs });
}

/**
 * @param {any} job
 * @param {string} type one of the error types above
 * @param {string} message
 * @param {{nonRetryable?: boolean}} [options]
 */
export function workerFailureReceipt(job, type, message, { nonRetryable = false } = {}) {
  const error = { message: message.slice(0, MAX_ERROR_MESSAGE), type, nonRetryable };
  return receipt(job, 'OUTCOME_FAILURE', { error });
}
