// The worker's heartbeat loop: extends the leases of running jobs a third of the way through
// each lease, in one HeartbeatBatch for every job due at about the same time, carrying only
// the newest unsent checkpoint of each. Replies saying a job was cancelled, or that its lease
// is gone, are handed back to the worker.

import grpc from '@grpc/grpc-js';

import { codeName } from './errors.js';
import { msOf, unary } from './proto.js';
import { Wakeup } from './wakeup.js';

// A job whose heartbeat falls due within this fraction of its interval goes along with the
// batch being sent now (early is harmless; it saves a call).
const EARLY_FRACTION = 0.25;
// After a failed HeartbeatBatch call, try again this soon (leases last at least 1 s).
const RETRY_AFTER_FAILURE_MS = 250;
const MAX_SLEEP_MS = 1_000;
const MAX_BATCH = 500;
const CALL_TIMEOUT_MS = 10_000;
// A confirmation call ends this long before the earliest lease it confirms would expire.
const CONFIRM_MARGIN_MS = 50;

/** @typedef {import('./running.js').RunningJob} RunningJob */

export class Heartbeats {
  #wakeup = new Wakeup();
  #sleepingUntil = 0;
  #stopped = false;
  /** @type {Set<string>} lease tokens of jobs whose handler called heartbeatNow() */
  #asked = new Set();

  /**
   * @param {Record<string, Function>} stub
   * @param {Map<string, RunningJob>} running by lease token
   * @param {object} handlers
   * @param {(running: RunningJob) => void} handlers.onCancelRequested
   * @param {(running: RunningJob, message: string) => void} handlers.onLeaseLost
   * @param {import('./receipts.js').Logger} handlers.logger
   */
  constructor(stub, running, { onCancelRequested, onLeaseLost, logger }) {
    this.stub = stub;
    this.running = running;
    this.onCancelRequested = onCancelRequested;
    this.onLeaseLost = onLeaseLost;
    this.logger = logger;
  }

  /** Call after adding a job to `running`: wakes the loop if it sleeps past its due time. */
  tracked(/** @type {RunningJob} */ running) {
    if (running.nextHeartbeat < this.#sleepingUntil) this.#wakeup.set();
  }

  /**
   * A heartbeat as soon as possible for this job (JobContext.heartbeatNow()).
   * @param {string} leaseToken
   */
  ask(leaseToken) {
    this.#asked.add(leaseToken);
    this.#wakeup.set();
  }

  /** Ends `run` after the call in flight, if any. */
  stop() {
    this.#stopped = true;
    this.#wakeup.set();
  }

  async run() {
    while (!this.#stopped) {
      const due = this.#due(performance.now());
      for (let start = 0; start < due.length && !this.#stopped; start += MAX_BATCH) {
        await this.#send(due.slice(start, start + MAX_BATCH));
      }
      await this.#sleepUntilNext();
    }
  }

  /** @param {number} now */
  #due(now) {
    const asked = this.#asked;
    this.#asked = new Set();
    return [...this.running.values()].filter(
      (r) =>
        r.nextHeartbeat - now <= r.intervalMs * EARLY_FRACTION || asked.has(r.job.leaseToken),
    );
  }

  async #sleepUntilNext() {
    const now = performance.now();
    let upcoming = now + MAX_SLEEP_MS;
    for (const r of this.running.values()) upcoming = Math.min(upcoming, r.nextHeartbeat);
    this.#sleepingUntil = upcoming;
    this.#wakeup.clear();
    if (this.#stopped || this.#asked.size > 0) return;
    await this.#wakeup.wait(upcoming - now);
    this.#sleepingUntil = 0;
  }

  /** @param {RunningJob[]} due */
  async #send(due) {
    const requests = due.map((r) => this.#request(r));
    let reply;
    try {
      reply = await unary(
        this.stub,
        'HeartbeatBatch',
        { heartbeats: requests },
        // waitForReady: during a coordinator blip, wait for the reconnect; the lease holds.
        { timeoutMs: CALL_TIMEOUT_MS, waitForReady: true },
      );
    } catch (/** @type {any} */ error) {
      this.logger.warn(`heartbeats failed (${codeName(error.code)}: ${error.details}); retrying`);
      this.#failed(due, requests);
      return;
    }
    due.forEach((running, i) => {
      const result = reply.results[i];
      if (this.running.get(running.job.leaseToken) !== running) {
        return; // it finished while the call was in flight: its receipt decides
      }
      if (result.code === grpc.status.OK) {
        if (result.response?.cancelRequested && running.stopReason === null) {
          this.onCancelRequested(running);
        }
      } else if (
        result.code === grpc.status.FAILED_PRECONDITION ||
        result.code === grpc.status.NOT_FOUND
      ) {
        this.onLeaseLost(running, result.message);
      } else {
        this.logger.warn(
          `heartbeat for job ${running.job.jobId} refused (${codeName(result.code)}): ` +
            result.message,
        );
        this.#failed([running], [requests[i]]);
      }
    });
  }

  /**
   * Confirms the leases of a Lease reply taken with confirm, in one HeartbeatBatch, before any
   * of its jobs runs; resolves to the jobs to run and those cancelled meanwhile. A job the
   * coordinator refused (its window passed) is in neither: it is AVAILABLE again. A job
   * confirmed with cancel_requested (a CancelJob came between the claim and the confirmation)
   * is in `cancelled`: it must not run, and the caller reports it. If the call fails until the
   * first window would pass, none is run: the coordinator hands them back unconfirmed.
   * @param {any[]} jobs LeasedJobs
   * @param {number} windowMs the confirm_within the Lease asked for
   * @returns {Promise<{confirmed: any[], cancelled: any[]}>}
   */
  async confirm(jobs, windowMs) {
    // The window as the coordinator cut it to each job's lease, measured here rather than by
    // comparing clocks with the coordinator's leaseExpiresAt.
    let timeoutMs = windowMs;
    for (const job of jobs) {
      const leaseMs = msOf(job.leaseDuration);
      if (leaseMs !== null) timeoutMs = Math.min(timeoutMs, leaseMs);
    }
    const requests = jobs.map((job) => ({ jobId: job.jobId, leaseToken: job.leaseToken }));
    let reply;
    try {
      reply = await unary(
        this.stub,
        'HeartbeatBatch',
        { heartbeats: requests },
        { timeoutMs: Math.max(timeoutMs - CONFIRM_MARGIN_MS, CONFIRM_MARGIN_MS), waitForReady: true },
      );
    } catch (/** @type {any} */ error) {
      this.logger.warn(
        `confirming ${jobs.length} leases failed (${codeName(error.code)}: ${error.details}); ` +
          'the coordinator hands them back',
      );
      return { confirmed: [], cancelled: [] };
    }
    /** @type {any[]} */
    const confirmed = [];
    /** @type {any[]} */
    const cancelled = [];
    jobs.forEach((job, i) => {
      const result = reply.results[i];
      if (result.code !== grpc.status.OK) {
        this.logger.warn(`lease on job ${job.jobId} not confirmed: ${result.message}`);
      } else if (result.response?.cancelRequested) {
        cancelled.push(job);
      } else {
        confirmed.push(job);
      }
    });
    return { confirmed, cancelled };
  }

  /** @param {RunningJob} running */
  #request(running) {
    running.nextHeartbeat = performance.now() + running.intervalMs;
    /** @type {{jobId: string, leaseToken: string, checkpoint?: Buffer}} */
    const request = { jobId: running.job.jobId, leaseToken: running.job.leaseToken };
    const checkpoint = running.context._takeUnsentCheckpoint();
    if (checkpoint !== null) request.checkpoint = checkpoint;
    return request;
  }

  /**
   * @param {RunningJob[]} due
   * @param {{checkpoint?: Buffer}[]} requests
   */
  #failed(due, requests) {
    const retryAt = performance.now() + RETRY_AFTER_FAILURE_MS;
    due.forEach((running, i) => {
      running.nextHeartbeat = Math.min(running.nextHeartbeat, retryAt);
      const { checkpoint } = requests[i];
      if (checkpoint !== undefined) running.context._unsentAgain(checkpoint);
    });
  }
}
