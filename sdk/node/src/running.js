// The worker's record of one job it is running, shared by its phases (execute, heartbeat,
// shutdown), and why the worker may cut a handler short.

import { msOf } from './proto.js';

/** @typedef {'cancel_requested' | 'lease_lost' | 'shutdown' | 'timeout'} StopReason */

export const StopReason = Object.freeze({
  /** A heartbeat reply said so: report a failure, the job ends CANCELLED. */
  CANCEL_REQUESTED: /** @type {StopReason} */ ('cancel_requested'),
  /** Someone else owns the job now: send nothing. */
  LEASE_LOST: /** @type {StopReason} */ ('lease_lost'),
  /** The shutdown grace period ran out: hand the job back (RELEASE). */
  SHUTDOWN: /** @type {StopReason} */ ('shutdown'),
  /** The task's timeoutMs passed: a retryable failure. */
  TIMEOUT: /** @type {StopReason} */ ('timeout'),
});

/** The reason a job's signal carries when the worker aborts it. */
export class JobStoppedError extends Error {
  /** @param {StopReason} stopReason @param {string} message */
  constructor(stopReason, message) {
    super(message);
    this.name = 'JobStoppedError';
    this.stopReason = stopReason;
  }
}

// A job leased without a lease_duration (an older coordinator) is heartbeated as if 30 s.
const DEFAULT_LEASE_MS = 30_000;
const MIN_HEARTBEAT_INTERVAL_MS = 50;

export class RunningJob {
  /** @type {StopReason | null} */
  stopReason = null;
  /** @type {Promise<void> | null} settles when the job's receipt (if any) is handed over */
  done = null;

  /**
   * @param {any} job the LeasedJob
   * @param {import('./context.js').JobContext} context
   * @param {number} intervalMs between heartbeats
   * @param {number} now performance.now()
   */
  constructor(job, context, intervalMs, now) {
    this.job = job;
    this.context = context;
    this.intervalMs = intervalMs;
    this.nextHeartbeat = now + intervalMs;
  }

  /**
   * Aborts the handler's signal. The first reason wins (a job cancelled and then shut down
   * still reports CANCELLED), except that a lost lease always silences the receipt.
   * @param {StopReason} reason
   * @param {string} message
   */
  stop(reason, message) {
    if (this.stopReason === null || reason === StopReason.LEASE_LOST) this.stopReason = reason;
    this.context._abort(new JobStoppedError(reason, message));
  }
}

/**
 * Milliseconds between heartbeats: a fraction (a third) of the lease, so that two can be lost
 * in a row before the lease runs out.
 * @param {any} job the LeasedJob
 * @param {number} fraction
 */
export function heartbeatIntervalMs(job, fraction) {
  const lease = msOf(job.leaseDuration) ?? DEFAULT_LEASE_MS;
  return Math.max(lease * fraction, MIN_HEARTBEAT_INTERVAL_MS);
}
