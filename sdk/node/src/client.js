// The producer and admin client: enqueue jobs, look at them, wait for them, cancel them.
//
// Jobs come back as the decoded `conveyor.v1.Job` messages: camelCase fields, enum values by
// name ('JOB_STATE_SUCCEEDED'), bytes as Buffers, Timestamps and Durations as
// {seconds, nanos}. A failed call rejects with a ConveyorError whose `code` is the gRPC
// status name ('NOT_FOUND', 'INVALID_ARGUMENT', ...).

import { contractOf, isMessageType } from './contracts.js';
import { fromGrpcError } from './errors.js';
import { DEFAULT_ADDRESS, durationOf, openStub, timestampOf, unary } from './proto.js';

// WaitJob long-polls at most this long per call (the coordinator's limit); longer waits loop.
const MAX_WAIT_PER_CALL_MS = 300_000;
// A WaitJob call may take this much longer than its long-poll before it is abandoned.
const WAIT_CALL_SLACK_MS = 10_000;
const TERMINAL_STATES = new Set(['JOB_STATE_SUCCEEDED', 'JOB_STATE_FAILED', 'JOB_STATE_CANCELLED']);

/**
 * @typedef {object} EnqueueOptions
 * @property {string} [taskVersion] the contract version (MAJOR.MINOR.PATCH) the payload
 *   follows: only workers declaring that major version at that minor.patch or later get it
 * @property {Date} [runAt] earliest time to run (set runAt or delayMs, not both)
 * @property {number} [delayMs] run after this delay
 * @property {number} [priority] higher runs first (default 0)
 * @property {number} [maxAttempts] default: the queue's, else 20
 * @property {number} [leaseDurationMs] the visibility timeout; default: the queue's, else 30 s
 * @property {{initialBackoffMs?: number, multiplier?: number, maxBackoffMs?: number,
 *   jitter?: number}} [retryPolicy]
 * @property {string} [idempotencyKey] unique within the queue
 * @property {string} [parentJobId]
 * @property {string} [throttleKey] jobs with the same key share the per-key rate limit
 */

export class Client {
  /**
   * @param {object} [options]
   * @param {string} [options.address] host:port (default 127.0.0.1:7345)
   * @param {number} [options.timeoutMs] bounds each call except waitJob (default 30 s)
   * @param {string} [options.protoPath] directory holding conveyor/v1/coordinator.proto
   * @param {import('@grpc/grpc-js').ChannelCredentials} [options.credentials] for TLS
   */
  constructor({ address = DEFAULT_ADDRESS, timeoutMs = 30_000, protoPath, credentials } = {}) {
    this.address = address;
    this.timeoutMs = timeoutMs;
    this.stub = openStub(address, { protoPath, credentials });
  }

  close() {
    this.stub.close();
  }

  /**
   * Stores one job; resolves once it is on the coordinator's disk.
   *
   * `taskType` is a name, with `payload` as bytes; or a protobufjs message type whose
   * `(conveyor.v1.task)` option names the task type and version, with `payload` a message
   * (or plain object) that it encodes: `enqueue('email', SendEmail, {to: 'ada@example.com'})`.
   * @param {string} queue
   * @param {string | import('./contracts.js').MessageType} taskType
   * @param {Buffer | Uint8Array | string | object} [payload] a string is sent as UTF-8
   * @param {EnqueueOptions} [options]
   * @returns {Promise<{jobId: string, deduplicated: boolean, state: string}>}
   */
  async enqueue(queue, taskType, payload = Buffer.alloc(0), options = {}) {
    if (isMessageType(taskType)) {
      const { name, version } = contractOf(taskType);
      if (options.taskVersion !== undefined && options.taskVersion !== version) {
        throw new TypeError(
          `taskVersion '${options.taskVersion}' contradicts the message type's option ` +
            `(${version}); leave it out`,
        );
      }
      const message = taskType.fromObject(/** @type {object} */ (payload));
      const bytes = Buffer.from(taskType.encode(message).finish());
      return this.#call('Enqueue', {
        job: jobSpec(queue, name, bytes, { ...options, taskVersion: version }),
      });
    }
    return this.#call('Enqueue', { job: jobSpec(queue, taskType, payload, options) });
  }

  /**
   * @param {string} jobId
   * @returns {Promise<any>} the Job, with its attempt history
   */
  async getJob(jobId) {
    return this.#call('GetJob', { jobId });
  }

  /**
   * Cancels a job at once, or asks its worker to stop when it is leased.
   * @param {string} jobId
   * @returns {Promise<any>} the Job
   */
  async cancelJob(jobId) {
    return this.#call('CancelJob', { jobId });
  }

  /**
   * Waits until the job is finished (SUCCEEDED, FAILED or CANCELLED) or `timeoutMs` passes,
   * and returns it as it is then: look at its `state`.
   * @param {string} jobId
   * @param {number} [timeoutMs] default 30 s
   * @returns {Promise<any>} the Job
   */
  async waitJob(jobId, timeoutMs = 30_000) {
    const until = performance.now() + timeoutMs;
    for (;;) {
      const waitMs = Math.max(Math.min(until - performance.now(), MAX_WAIT_PER_CALL_MS), 0);
      const job = await this.#call(
        'WaitJob',
        { jobId, timeout: durationOf(waitMs) },
        waitMs + WAIT_CALL_SLACK_MS,
      );
      if (TERMINAL_STATES.has(job.state) || performance.now() >= until) return job;
    }
  }

  /**
   * @param {string} method
   * @param {object} request
   * @param {number} [timeoutMs]
   */
  async #call(method, request, timeoutMs = this.timeoutMs) {
    try {
      return await unary(this.stub, method, request, { timeoutMs });
    } catch (error) {
      throw fromGrpcError(error);
    }
  }
}

/**
 * @param {string} queue
 * @param {string} taskType
 * @param {Buffer | Uint8Array | string} payload
 * @param {EnqueueOptions} options
 */
function jobSpec(queue, taskType, payload, options) {
  /** @type {Record<string, unknown>} */
  const spec = {
    queue,
    taskType,
    taskVersion: options.taskVersion ?? '',
    payload: Buffer.from(/** @type {any} */ (payload)),
    priority: options.priority ?? 0,
    maxAttempts: options.maxAttempts ?? 0, // 0: the queue's default
    idempotencyKey: options.idempotencyKey ?? '',
    parentJobId: options.parentJobId ?? '',
    throttleKey: options.throttleKey ?? '',
  };
  if (options.runAt !== undefined) spec.runAt = timestampOf(options.runAt);
  if (options.delayMs !== undefined) spec.delay = durationOf(options.delayMs);
  if (options.leaseDurationMs !== undefined) {
    spec.leaseDuration = durationOf(options.leaseDurationMs);
  }
  if (options.retryPolicy !== undefined) spec.retryPolicy = retryPolicy(options.retryPolicy);
  return spec;
}

/** @param {NonNullable<EnqueueOptions['retryPolicy']>} policy */
function retryPolicy({ initialBackoffMs, multiplier, maxBackoffMs, jitter }) {
  /** @type {Record<string, unknown>} */
  const message = {};
  if (initialBackoffMs !== undefined) message.initialBackoff = durationOf(initialBackoffMs);
  if (multiplier !== undefined) message.multiplier = multiplier;
  if (maxBackoffMs !== undefined) message.maxBackoff = durationOf(maxBackoffMs);
  if (jitter !== undefined) message.jitter = jitter;
  return message;
}
