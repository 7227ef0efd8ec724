// The producer and admin client: enqueue jobs, look at them, wait for them, cancel and retry
// them; publish task contracts; set queue limits; manage schedules. The Python SDK's Client
// (sdk/python/conveyor/client.py) has the same calls, in snake_case.
//
// Jobs come back as the decoded `conveyor.v1.Job` messages: camelCase fields, enum values by
// name ('JOB_STATE_SUCCEEDED'), bytes as Buffers, Timestamps and Durations as
// {seconds, nanos}. A failed call rejects with a ConveyorError whose `code` is the gRPC
// status name ('NOT_FOUND', 'INVALID_ARGUMENT', ...).

import { randomUUID } from 'node:crypto';

import protobuf from 'protobufjs';

import { contractOf, isMessageType, parseVersion } from './contracts.js';
import { fromGrpcError } from './errors.js';
import {
  coordinatorService,
  DEFAULT_ADDRESS,
  durationOf,
  openStub,
  timestampOf,
  unary,
} from './proto.js';
import { enqueueMetadata } from './tracing.js';

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

/**
 * @typedef {object} EnqueueRetry how enqueue and enqueueBatch retry on UNAVAILABLE (only
 *   when every job carries an idempotency key: see Client)
 * @property {number} [maxAttempts] calls in all, the first included (default 8; 1: no retry)
 * @property {number} [initialBackoffMs] before the second call (default 100)
 * @property {number} [maxBackoffMs] the cap on one pause (default 5000)
 * @property {number} [multiplier] growth per retry (default 2)
 * @property {number} [jitter] each pause is cut by up to this fraction at random (default 0.5)
 */

/**
 * @typedef {object} RetryPolicyOptions
 * @property {number} [initialBackoffMs]
 * @property {number} [multiplier]
 * @property {number} [maxBackoffMs]
 * @property {number} [jitter]
 */

/**
 * @typedef {{rate: number, burst: number}} RateLimit a token bucket: `burst` tokens, refilled
 *   at `rate` per second
 */

/**
 * @typedef {object} QueueSettings what updateQueue changes; a key left out stays as it is
 * @property {RateLimit | null} [rateLimit] null: no limit
 * @property {RateLimit | null} [perKeyRateLimit] one bucket per throttle key; null: no limit
 * @property {number} [maxConcurrency] jobs leased at once across all workers; 0: no cap
 * @property {boolean} [paused]
 * @property {RetryPolicyOptions} [retryPolicy] the default for jobs without their own
 * @property {number | null} [leaseDurationMs] the default lease; null: the coordinator's (30 s)
 * @property {number | null} [maxAttempts] the default; null: the coordinator's (20)
 * @property {{succeededMs?: number, failedMs?: number, cancelledMs?: number}} [retention]
 *   how long finished jobs are kept
 * @property {boolean} [strictTaskTypes] every job must name a registered task type version
 */

/**
 * @typedef {object} ScheduleOptions
 * @property {string} [timezone] an IANA name (default 'UTC')
 * @property {'SKIP' | 'RUN_ONCE' | 'CATCH_UP'} [misfirePolicy] default 'RUN_ONCE'
 * @property {number} [catchUpLimit] fires CATCH_UP replays at most
 * @property {'ALLOW' | 'SKIP'} [overlapPolicy] default 'ALLOW'
 * @property {boolean} [paused]
 */

/**
 * @typedef {object} JobTemplate a schedule's job: what enqueue takes, as one object
 * @property {string} queue
 * @property {string} taskType
 * @property {Buffer | Uint8Array | string} [payload]
 * @property {string} [taskVersion]
 * @property {number} [priority]
 * @property {number} [maxAttempts]
 * @property {number} [leaseDurationMs]
 * @property {RetryPolicyOptions} [retryPolicy]
 * @property {string} [throttleKey]
 */

/** @typedef {JobTemplate & EnqueueOptions} BatchJob one job of enqueueBatch */

/** @type {Readonly<Required<EnqueueRetry>>} */
const DEFAULT_ENQUEUE_RETRY = Object.freeze({
  maxAttempts: 8,
  initialBackoffMs: 100,
  maxBackoffMs: 5_000,
  multiplier: 2,
  jitter: 0.5,
});

export class Client {
  /**
   * A producer's retry is only safe with an idempotency key: without one, an Enqueue whose
   * reply was lost may have stored the job, and sending it again stores a second. So enqueue
   * and enqueueBatch retry UNAVAILABLE (a coordinator restarting, say) only when every job
   * has a key, with capped exponential backoff and jitter (`enqueueRetry`); otherwise they
   * reject at once. `autoIdempotencyKeys` gives each job without a key a random one, so that
   * every enqueue can be retried.
   * @param {object} [options]
   * @param {string} [options.address] host:port (default 127.0.0.1:7345)
   * @param {number} [options.timeoutMs] bounds each call except waitJob (default 30 s)
   * @param {string} [options.protoPath] directory holding conveyor/v1/coordinator.proto
   * @param {import('@grpc/grpc-js').ChannelCredentials} [options.credentials] for TLS
   *   (grpc.credentials.createSsl(root, key, certChain) for mutual TLS)
   * @param {Buffer} [options.tlsRootCertificates] TLS trusting this CA (PEM), instead
   * @param {string} [options.token] bearer token (default: $CONVEYOR_TOKEN)
   * @param {import('@grpc/grpc-js').ChannelOptions} [options.channelOptions] gRPC channel
   *   arguments, winning over the SDK's own
   * @param {boolean} [options.autoIdempotencyKeys] default false
   * @param {EnqueueRetry} [options.enqueueRetry]
   */
  constructor({
    address = DEFAULT_ADDRESS,
    timeoutMs = 30_000,
    protoPath,
    credentials,
    tlsRootCertificates,
    token,
    channelOptions,
    autoIdempotencyKeys = false,
    enqueueRetry = {},
  } = {}) {
    this.address = address;
    this.timeoutMs = timeoutMs;
    this.autoIdempotencyKeys = autoIdempotencyKeys;
    this.enqueueRetry = { ...DEFAULT_ENQUEUE_RETRY, ...enqueueRetry };
    this.protoPath = protoPath;
    this.stub = openStub(address, {
      protoPath,
      credentials,
      tlsRootCertificates,
      token,
      channelOptions,
    });
  }

  close() {
    this.stub.close();
  }

  // -- jobs ----------------------------------------------------------------------------------

  /**
   * Stores one job; resolves once it is on the coordinator's disk.
   *
   * `taskType` is a name, with `payload` as bytes; or a protobufjs message type whose
   * `(conveyor.v1.task)` option names the task type and version, with `payload` a message
   * (or plain object) that it encodes: `enqueue('email', SendEmail, {to: 'ada@example.com'})`.
   * @param {string} queue
   * @param {string | import('./contracts.js').MessageType} taskType
   * @param {Buffer | Uint8Array | string | object} [payload] a string is sent as UTF-8
   * @param {EnqueueOptions & {autoIdempotencyKey?: boolean}} [options] `autoIdempotencyKey`
   *   overrides the client's `autoIdempotencyKeys` for this call
   * @returns {Promise<{jobId: string, deduplicated: boolean, state: string}>}
   */
  async enqueue(queue, taskType, payload = Buffer.alloc(0), options = {}) {
    const auto = options.autoIdempotencyKey ?? this.autoIdempotencyKeys;
    const job = withKey(taskSpec(queue, taskType, payload, options), auto);
    return this.#enqueueCall('Enqueue', { job }, Boolean(job.idempotencyKey));
  }

  /**
   * Stores several jobs in one transaction: all of them, or none and an error.
   * @param {BatchJob[]} jobs
   * @param {{autoIdempotencyKeys?: boolean}} [options] overrides the client's for this call
   * @returns {Promise<{jobId: string, deduplicated: boolean, state: string}[]>}
   */
  async enqueueBatch(jobs, { autoIdempotencyKeys = this.autoIdempotencyKeys } = {}) {
    const specs = jobs.map(({ queue, taskType, payload, ...options }) =>
      withKey(jobSpec(queue, taskType, payload ?? Buffer.alloc(0), options), autoIdempotencyKeys),
    );
    const keyed = specs.every((spec) => Boolean(spec.idempotencyKey));
    const reply = await this.#enqueueCall('EnqueueBatch', { jobs: specs }, keyed);
    return reply.results;
  }

  /**
   * @param {string} jobId
   * @returns {Promise<any>} the Job, with its attempt history
   */
  async getJob(jobId) {
    return this.#call('GetJob', { jobId });
  }

  /**
   * One page of jobs, newest first. Pass the page's `nextPageToken` back as `pageToken` for
   * the next page; it is '' on the last one. A coordinator of this release leaves out
   * payload, result and checkpoint unless `full` (ListJobsRequest.view), and may cut a page
   * of large jobs short (with a token for the rest); older ones ignore `full`.
   * @param {{queue?: string, state?: string, pageSize?: number, pageToken?: string,
   *   full?: boolean}} [filter] `state` as 'FAILED' or 'JOB_STATE_FAILED'; leave `queue` or
   *   `state` out for any
   * @returns {Promise<{jobs: any[], nextPageToken: string}>}
   */
  async listJobs({ queue = '', state, pageSize = 50, pageToken = '', full = false } = {}) {
    const request = {
      queue,
      state: enumName('JOB_STATE_', state),
      pageSize,
      pageToken,
      view: full ? 'JOB_VIEW_FULL' : 'JOB_VIEW_BASIC',
    };
    return this.#call('ListJobs', request);
  }

  /**
   * Every matching job, newest first, fetching page after page as it goes.
   * @param {{queue?: string, state?: string, pageSize?: number, full?: boolean}} [filter]
   * @returns {AsyncGenerator<any>}
   */
  async *iterJobs({ queue, state, pageSize = 500, full = false } = {}) {
    let pageToken = '';
    do {
      const page = await this.listJobs({ queue, state, pageSize, pageToken, full });
      yield* page.jobs;
      pageToken = page.nextPageToken;
    } while (pageToken);
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
   * Replays a FAILED or CANCELLED job with a fresh attempt budget.
   * @param {string} jobId
   * @returns {Promise<any>} the Job
   */
  async retryJob(jobId) {
    return this.#call('RetryJob', { jobId });
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

  // -- task contracts ------------------------------------------------------------------------

  /**
   * Publishes one version of a task contract. `messageType` is a protobufjs message type
   * (its `(conveyor.v1.task)` option gives the name and version unless passed) or the full
   * name of the message ('acme.email.v1.SendEmail', with `name` and `version`).
   * `descriptors` is a serialized FileDescriptorSet holding the message's file and every
   * file it imports: `buf build -o contracts.binpb` or
   * `protoc --include_imports --descriptor_set_out=contracts.binpb acme/email.proto`.
   * Registering the same version again with the same message is harmless; another message
   * is ALREADY_EXISTS.
   * @param {import('./contracts.js').MessageType | string} messageType
   * @param {{descriptors: Buffer | Uint8Array, name?: string, version?: string}} options
   * @returns {Promise<any>} the TaskType
   */
  async registerTaskType(messageType, { descriptors, name, version }) {
    let fullName = /** @type {string} */ (messageType);
    if (isMessageType(messageType)) {
      const contract = contractOf(messageType);
      name ??= contract.name;
      version ??= contract.version;
      fullName = messageType.fullName.replace(/^\./, '');
    }
    if (!name || !version) {
      throw new TypeError('registerTaskType needs a name and a version for a message name');
    }
    parseVersion(version);
    const request = encodeRegisterTaskType(name, version, fullName, descriptors);
    return this.#callEncoded('RegisterTaskType', request);
  }

  /**
   * One registered version of a task type; '' (the default) is the highest registered.
   * @param {string} name
   * @param {string} [version]
   * @returns {Promise<any>} the TaskType
   */
  async getTaskType(name, version = '') {
    return this.#call('GetTaskType', { name, version });
  }

  /**
   * One page of registered versions, by name then version.
   * @param {{pageSize?: number, pageToken?: string}} [page]
   * @returns {Promise<{taskTypes: any[], nextPageToken: string}>}
   */
  async listTaskTypes({ pageSize = 100, pageToken = '' } = {}) {
    return this.#call('ListTaskTypes', { pageSize, pageToken });
  }

  // -- queues --------------------------------------------------------------------------------

  /**
   * A queue's settings and statistics (`stats`).
   * @param {string} name
   * @returns {Promise<any>} the Queue
   */
  async getQueue(name) {
    return this.#call('GetQueue', { name });
  }

  /**
   * @param {{pageSize?: number, pageToken?: string}} [page]
   * @returns {Promise<{queues: any[], nextPageToken: string}>}
   */
  async listQueues({ pageSize = 100, pageToken = '' } = {}) {
    return this.#call('ListQueues', { pageSize, pageToken });
  }

  /**
   * Changes only the settings passed (a key set to undefined counts as left out).
   * @param {string} name
   * @param {QueueSettings} settings
   * @returns {Promise<any>} the Queue
   */
  async updateQueue(name, settings) {
    const { queue, paths } = queueUpdate(name, settings);
    return this.#call('UpdateQueue', { queue, updateMask: { paths } });
  }

  /** @param {string} name @returns {Promise<any>} the Queue */
  async pauseQueue(name) {
    return this.updateQueue(name, { paused: true });
  }

  /** @param {string} name @returns {Promise<any>} the Queue */
  async resumeQueue(name) {
    return this.updateQueue(name, { paused: false });
  }

  // -- schedules -----------------------------------------------------------------------------

  /**
   * A recurring job. `cron` has 5 fields, or 6 with seconds first.
   * @param {string} name
   * @param {string} cron
   * @param {JobTemplate} job
   * @param {ScheduleOptions} [options]
   * @returns {Promise<any>} the Schedule
   */
  async createSchedule(name, cron, job, options = {}) {
    const schedule = {
      name,
      cron,
      job: templateSpec(job),
      timezone: options.timezone ?? 'UTC',
      misfirePolicy: enumName('MISFIRE_POLICY_', options.misfirePolicy ?? 'RUN_ONCE'),
      catchUpLimit: options.catchUpLimit ?? 0,
      overlapPolicy: enumName('OVERLAP_POLICY_', options.overlapPolicy ?? 'ALLOW'),
      paused: options.paused ?? false,
    };
    return this.#call('CreateSchedule', { schedule });
  }

  /** @param {string} name @returns {Promise<any>} the Schedule */
  async getSchedule(name) {
    return this.#call('GetSchedule', { name });
  }

  /**
   * @param {{pageSize?: number, pageToken?: string}} [page]
   * @returns {Promise<{schedules: any[], nextPageToken: string}>}
   */
  async listSchedules({ pageSize = 100, pageToken = '' } = {}) {
    return this.#call('ListSchedules', { pageSize, pageToken });
  }

  /**
   * Changes only the settings passed.
   * @param {string} name
   * @param {ScheduleOptions & {cron?: string, job?: JobTemplate}} changes
   * @returns {Promise<any>} the Schedule
   */
  async updateSchedule(name, changes) {
    /** @type {Record<string, unknown>} */
    const schedule = { name };
    const paths = [];
    for (const [key, field] of SCHEDULE_FIELDS) {
      const value = /** @type {Record<string, unknown>} */ (changes)[key];
      if (value === undefined) continue;
      if (key === 'job') schedule.job = templateSpec(/** @type {JobTemplate} */ (value));
      else if (key === 'misfirePolicy') schedule[key] = enumName('MISFIRE_POLICY_', value);
      else if (key === 'overlapPolicy') schedule[key] = enumName('OVERLAP_POLICY_', value);
      else schedule[key] = value;
      paths.push(field);
    }
    return this.#call('UpdateSchedule', { schedule, updateMask: { paths } });
  }

  /** @param {string} name @returns {Promise<void>} */
  async deleteSchedule(name) {
    await this.#call('DeleteSchedule', { name });
  }

  /** @param {string} name @returns {Promise<any>} the Schedule */
  async pauseSchedule(name) {
    return this.#call('PauseSchedule', { name });
  }

  /** @param {string} name @returns {Promise<any>} the Schedule */
  async resumeSchedule(name) {
    return this.#call('ResumeSchedule', { name });
  }

  // -- calls ---------------------------------------------------------------------------------

  /**
   * @param {string} method
   * @param {object} request
   * @param {number} [timeoutMs]
   * @param {import('@grpc/grpc-js').Metadata} [metadata] sent with the call (a traceparent)
   */
  async #call(method, request, timeoutMs = this.timeoutMs, metadata = undefined) {
    try {
      return await unary(this.stub, method, request, { timeoutMs, metadata });
    } catch (error) {
      throw fromGrpcError(error);
    }
  }

  /**
   * An Enqueue or EnqueueBatch call, retried on UNAVAILABLE when `retryable` (every job
   * has an idempotency key, so a repeat cannot store a second copy).
   * @param {string} method
   * @param {object} request
   * @param {boolean} retryable
   */
  async #enqueueCall(method, request, retryable) {
    const policy = this.enqueueRetry;
    const attempts = retryable ? Math.max(1, policy.maxAttempts) : 1;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#call(method, request, this.timeoutMs, enqueueMetadata());
      } catch (error) {
        const conveyorError = /** @type {import('./errors.js').ConveyorError} */ (error);
        if (conveyorError.code !== 'UNAVAILABLE' || attempt >= attempts) throw error;
      }
      await sleep(backoffMs(policy, attempt));
    }
  }

  /**
   * A unary call whose request is already encoded (RegisterTaskType: its FileDescriptorSet
   * travels as the caller's bytes, untouched).
   * @param {string} method
   * @param {Uint8Array} request
   */
  async #callEncoded(method, request) {
    const definition = coordinatorService(this.protoPath).service[method];
    try {
      return await new Promise((resolve, reject) => {
        this.stub.makeUnaryRequest(
          definition.path,
          (/** @type {Uint8Array} */ bytes) => Buffer.from(bytes),
          definition.responseDeserialize,
          request,
          { deadline: Date.now() + this.timeoutMs },
          (/** @type {any} */ error, /** @type {any} */ reply) =>
            error ? reject(error) : resolve(reply),
        );
      });
    } catch (error) {
      throw fromGrpcError(error);
    }
  }
}

/** [option key, Schedule field path] for updateSchedule */
const SCHEDULE_FIELDS = [
  ['cron', 'cron'],
  ['timezone', 'timezone'],
  ['job', 'job'],
  ['misfirePolicy', 'misfire_policy'],
  ['catchUpLimit', 'catch_up_limit'],
  ['overlapPolicy', 'overlap_policy'],
  ['paused', 'paused'],
];

/**
 * The pause before retry number `attempt` (1 = the first retry): exponential, capped, cut by
 * a random fraction of at most `jitter` so that many producers do not retry in step.
 * @param {Required<EnqueueRetry>} policy
 * @param {number} attempt
 */
export function backoffMs(policy, attempt) {
  const full = Math.min(
    policy.initialBackoffMs * policy.multiplier ** (attempt - 1),
    policy.maxBackoffMs,
  );
  return full * (1 - policy.jitter * Math.random());
}

/** @param {number} ms */
function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * An enum value by its full name: 'FAILED' and 'JOB_STATE_FAILED' are the same.
 * @param {string} prefix
 * @param {unknown} value
 */
function enumName(prefix, value) {
  if (value === undefined || value === null || value === '') return undefined;
  const text = String(value);
  return text.startsWith(prefix) ? text : prefix + text;
}

/**
 * @param {Record<string, unknown>} spec a JobSpec
 * @param {boolean} auto generate a key when it has none
 */
function withKey(spec, auto) {
  if (auto && !spec.idempotencyKey) spec.idempotencyKey = `auto-${randomUUID()}`;
  return spec;
}

/**
 * The JobSpec for enqueue's arguments: a task name and bytes, or a message type and a
 * message it encodes.
 * @param {string} queue
 * @param {string | import('./contracts.js').MessageType} taskType
 * @param {Buffer | Uint8Array | string | object} payload
 * @param {EnqueueOptions} options
 */
function taskSpec(queue, taskType, payload, options) {
  if (!isMessageType(taskType)) {
    return jobSpec(queue, taskType, /** @type {Buffer | Uint8Array | string} */ (payload), options);
  }
  const { name, version } = contractOf(taskType);
  if (options.taskVersion !== undefined && options.taskVersion !== version) {
    throw new TypeError(
      `taskVersion '${options.taskVersion}' contradicts the message type's option ` +
        `(${version}); leave it out`,
    );
  }
  const message = taskType.fromObject(/** @type {object} */ (payload));
  const bytes = Buffer.from(taskType.encode(message).finish());
  return jobSpec(queue, name, bytes, { ...options, taskVersion: version });
}

/** @param {JobTemplate} job */
function templateSpec({ queue, taskType, payload, ...options }) {
  return jobSpec(queue, taskType, payload ?? Buffer.alloc(0), options);
}

/**
 * The Queue message and field mask paths for updateQueue's settings.
 * @param {string} name
 * @param {QueueSettings} settings
 */
function queueUpdate(name, settings) {
  /** @type {Record<string, unknown>} */
  const queue = { name };
  /** @type {string[]} */
  const paths = [];
  /** @param {string} path @param {string} field @param {unknown} value */
  const set = (path, field, value) => {
    if (value !== undefined) queue[field] = value;
    paths.push(path);
  };
  const s = settings;
  if ('rateLimit' in s && s.rateLimit !== undefined) {
    set('rate_limit', 'rateLimit', s.rateLimit ?? undefined);
  }
  if ('perKeyRateLimit' in s && s.perKeyRateLimit !== undefined) {
    set('per_key_rate_limit', 'perKeyRateLimit', s.perKeyRateLimit ?? undefined);
  }
  if (s.maxConcurrency !== undefined) set('max_concurrency', 'maxConcurrency', s.maxConcurrency);
  if (s.paused !== undefined) set('paused', 'paused', s.paused);
  if (s.retryPolicy !== undefined) set('retry_policy', 'retryPolicy', retryPolicy(s.retryPolicy));
  if ('leaseDurationMs' in s && s.leaseDurationMs !== undefined) {
    const lease = s.leaseDurationMs;
    set('lease_duration', 'leaseDuration', lease === null ? undefined : durationOf(lease));
  }
  if ('maxAttempts' in s && s.maxAttempts !== undefined) {
    set('max_attempts', 'maxAttempts', s.maxAttempts ?? 0);
  }
  if (s.retention !== undefined) set('retention', 'retention', retention(s.retention));
  if (s.strictTaskTypes !== undefined) {
    set('strict_task_types', 'strictTaskTypes', s.strictTaskTypes);
  }
  return { queue, paths };
}

/** @param {NonNullable<QueueSettings['retention']>} keep */
function retention({ succeededMs, failedMs, cancelledMs }) {
  /** @type {Record<string, unknown>} */
  const message = {};
  if (succeededMs !== undefined) message.succeeded = durationOf(succeededMs);
  if (failedMs !== undefined) message.failed = durationOf(failedMs);
  if (cancelledMs !== undefined) message.cancelled = durationOf(cancelledMs);
  return message;
}

/**
 * A RegisterTaskTypeRequest, encoded by hand so that `descriptors` (field 4, a
 * FileDescriptorSet) goes on the wire as the very bytes buf or protoc wrote: a message field
 * and a bytes field of the same number have the same encoding.
 * @param {string} name
 * @param {string} version
 * @param {string} messageType
 * @param {Buffer | Uint8Array} descriptors
 */
function encodeRegisterTaskType(name, version, messageType, descriptors) {
  const LENGTH_DELIMITED = 2;
  return protobuf.Writer.create()
    .uint32((1 << 3) | LENGTH_DELIMITED)
    .string(name)
    .uint32((2 << 3) | LENGTH_DELIMITED)
    .string(version)
    .uint32((3 << 3) | LENGTH_DELIMITED)
    .string(messageType)
    .uint32((4 << 3) | LENGTH_DELIMITED)
    .bytes(descriptors)
    .finish();
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
