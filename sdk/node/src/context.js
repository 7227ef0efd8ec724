// What a handler sees of its job, and the errors it throws to steer the outcome.

/**
 * Throw (or extend) to fail the job for good: it goes straight to JOB_STATE_FAILED, whatever
 * attempts are left. Any error with a true `nonRetryable` property does the same.
 */
export class NonRetryableError extends Error {
  /** @param {string} [message] @param {ErrorOptions} [options] */
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name;
    this.nonRetryable = true;
  }
}

/**
 * Throw to fail this attempt and run the job again after `afterMs` instead of the retry
 * policy's backoff (no argument: the policy decides). It still counts as an attempt.
 */
export class Retry extends Error {
  /** @param {number} [afterMs] @param {string} [message] */
  constructor(afterMs, message = '') {
    super(message || 'retry requested');
    if (afterMs !== undefined && !(afterMs >= 0)) {
      throw new RangeError(`Retry(afterMs) must be a non-negative number, got ${afterMs}`);
    }
    this.name = 'Retry';
    /** @type {number | undefined} */
    this.afterMs = afterMs;
  }
}

/**
 * One attempt of one job, as its handler sees it. `signal` aborts when the handler should
 * stop: the job was cancelled, its lease was lost, its timeout passed, or the worker is
 * shutting down past its grace period. Pass it on (fetch, timers) or check `cancelled`.
 * `taskVersion` is the contract version the producer named ('' if none); `message` is the
 * payload decoded by the handler's message type or `decode` function (null without one).
 */
export class JobContext {
  /** @type {Buffer | null} the newest checkpoint of this attempt */
  #saved = null;
  /** whether the coordinator has not got #saved yet */
  #unsent = false;
  #controller = new AbortController();
  /** @type {(() => void) | null} set by the worker: asks its heartbeat loop for a beat now */
  #onHeartbeatRequest = null;

  /**
   * @param {object} job
   * @param {string} job.jobId
   * @param {string} job.queue
   * @param {string} job.taskType
   * @param {string} job.taskVersion '' when the job names no contract version
   * @param {Buffer} job.payload
   * @param {number} job.attempt 1-based
   * @param {number} job.maxAttempts
   * @param {Buffer | null} job.checkpoint what an earlier attempt saved, if anything
   * @param {string | null} job.parentJobId
   */
  constructor({
    jobId,
    queue,
    taskType,
    taskVersion,
    payload,
    attempt,
    maxAttempts,
    checkpoint,
    parentJobId,
  }) {
    this.jobId = jobId;
    this.queue = queue;
    this.taskType = taskType;
    this.taskVersion = taskVersion;
    this.payload = payload;
    /** @type {unknown} set by the worker before the handler runs, when the task decodes */
    this.message = null;
    this.attempt = attempt;
    this.maxAttempts = maxAttempts;
    this.checkpoint = checkpoint;
    this.parentJobId = parentJobId;
  }

  /** @returns {AbortSignal} */
  get signal() {
    return this.#controller.signal;
  }

  /** True once the handler should stop (see `signal`). */
  get cancelled() {
    return this.#controller.signal.aborted;
  }

  get isLastAttempt() {
    return this.attempt >= this.maxAttempts;
  }

  /** @returns {Buffer | null} the newest checkpoint this attempt saved */
  get savedCheckpoint() {
    return this.#saved;
  }

  /**
   * Stores progress for a later attempt (a string is sent as UTF-8). It travels with the next
   * heartbeat (only the newest is sent), or just before the receipt if the attempt ends first
   * without succeeding.
   * @param {Buffer | Uint8Array | string} data
   */
  saveCheckpoint(data) {
    // A copy: the caller may reuse its buffer before the heartbeat sends this one.
    this.#saved = Buffer.from(data);
    this.#unsent = true;
  }

  /**
   * Asks for a heartbeat as soon as possible (say, to send a checkpoint at once, or to learn
   * sooner whether the job was cancelled). Beats requested together go in one call.
   */
  heartbeatNow() {
    this.#onHeartbeatRequest?.();
  }

  // -- for the worker ------------------------------------------------------------------------

  /** @param {() => void} callback */
  _setHeartbeatRequest(callback) {
    this.#onHeartbeatRequest = callback;
  }

  /** @param {Error} reason */
  _abort(reason) {
    this.#controller.abort(reason);
  }

  /** @returns {Buffer | null} the checkpoint to send now, if the coordinator lacks it */
  _takeUnsentCheckpoint() {
    if (!this.#unsent) return null;
    this.#unsent = false;
    return this.#saved;
  }

  /**
   * A heartbeat carrying `value` failed: send it again, unless a newer one was saved since.
   * @param {Buffer} value
   */
  _unsentAgain(value) {
    if (this.#saved === value) this.#unsent = true;
  }
}

/**
 * The JobContext of a LeasedJob, for the worker (a job it leased) and push.js (a job built
 * from a push request, which carries no checkpoint and no parent; background mode fetches the
 * checkpoint with its first heartbeat): an empty or missing checkpoint or parent job id is null.
 * @param {any} job a LeasedJob
 * @returns {JobContext}
 */
export function jobContextOf(job) {
  return new JobContext({
    jobId: job.jobId,
    queue: job.queue,
    taskType: job.taskType,
    taskVersion: job.taskVersion,
    payload: job.payload,
    attempt: job.attempt,
    maxAttempts: job.maxAttempts,
    checkpoint: job.checkpoint?.length > 0 ? job.checkpoint : null,
    parentJobId: job.parentJobId || null,
  });
}
