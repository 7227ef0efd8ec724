// The worker: leases jobs, runs their handlers, heartbeats, reports.
//
// Phases, each a small named piece:
//   lease loop  `#leaseLoop` asks for exactly as many jobs as there are free slots (one
//               long-poll at a time) and starts each one;
//   execute     `#execute` runs one handler (under its timeout, if it has one) and turns what
//               it returned or threw into a receipt;
//   report      `Receipts` (receipts.js) coalesces receipts into ReceiptBatch calls;
//   heartbeat   `Heartbeats` (heartbeats.js), a monitored side loop, extends leases a third of
//               the way through each job's lease and carries the newest checkpoint.
// Shutdown has two phases: stop leasing and let running jobs finish within `shutdownGraceMs`
// (still heartbeating them); then abort the rest and hand them back (OUTCOME_RELEASE).
// Pending receipts are flushed before `run()` resolves.
//
// Delivery is at-least-once: a handler may run again for a job whose receipt never arrived.

import { randomBytes } from 'node:crypto';
import os from 'node:os';

import { jobContextOf } from './context.js';
import { contractOf, isMessageType, parseVersion } from './contracts.js';
import { codeName } from './errors.js';
import { Heartbeats } from './heartbeats.js';
import {
  CANCELLED_ERROR_TYPE,
  failureReceipt,
  PAYLOAD_DECODE_ERROR_TYPE,
  receipt,
  resultBytes,
  TIMEOUT_ERROR_TYPE,
  UNKNOWN_TASK_ERROR_TYPE,
  workerFailureReceipt,
} from './outcome.js';
import { DEFAULT_ADDRESS, durationOf, openStub, unary } from './proto.js';
import { Receipts } from './receipts.js';
import { heartbeatIntervalMs, RunningJob, StopReason } from './running.js';
import { inJobSpan, recordOutcome } from './tracing.js';
import { settlesWithin, Wakeup } from './wakeup.js';

const LEASE_BACKOFF_FIRST_MS = 100;
const LEASE_BACKOFF_MAX_MS = 5_000;
// A Lease call may take this much longer than its long-poll before the worker gives up on it.
const LEASE_CALL_SLACK_MS = 10_000;
const MAX_LEASE_WAIT_MS = 30_000;
// On stop(), how long a Lease call in flight may still bring its reply before it is cancelled.
const LEASE_DRAIN_MS = 200;
// What the handler race resolves with when the worker aborted the job first.
const STOPPED = Symbol('stopped');

/**
 * @typedef {import('./context.js').JobContext} Job
 * @typedef {Buffer | string | undefined | null} Result
 * @typedef {(job: Job) => Promise<Result> | Result} Handler
 * @typedef {import('./receipts.js').Logger} Logger
 * @typedef {import('./outcome.js').ReceiptRequest} ReceiptRequest
 * @typedef {import('./contracts.js').MessageType} MessageType
 */

/**
 * @typedef {object} TaskOptions
 * @property {number} [timeoutMs] fail an attempt that runs longer (retryably)
 * @property {string} [version] the contract version (MAJOR.MINOR.PATCH) the handler implements
 * @property {(payload: Buffer) => unknown} [decode] turns the payload into `job.message`
 */

/**
 * One registered handler.
 * @typedef {object} Task
 * @property {Handler} handler
 * @property {number | undefined} timeoutMs
 * @property {string} version the contract version it implements; '' takes every version
 * @property {number | null} major of `version`; null when unversioned
 * @property {((payload: Buffer) => unknown) | null} decode
 */

/**
 * @typedef {object} WorkerOptions
 * @property {string} [address] host:port of the coordinator (default 127.0.0.1:7345)
 * @property {string[]} [queues] queues to lease from (default ['default'])
 * @property {number} [concurrency] jobs run at once; never more are leased (default 10)
 * @property {string} [workerId] names this process in the coordinator's records
 * @property {number} [shutdownGraceMs] how long running jobs may finish after stop() (30 s)
 * @property {number} [leaseWaitMs] how long one Lease call long-polls, at most 30 s (20 s)
 * @property {number} [heartbeatFraction] heartbeat after this fraction of a lease (1/3)
 * @property {number} [receiptFlushMs] receipts wait at most this long to be batched (2 ms)
 * @property {number} [receiptBatchSize] ... or until this many are pending (100)
 * @property {number} [receiptRetryForMs] how long receipts are retried while the coordinator
 *   is unreachable (30 s)
 * @property {boolean} [declareTaskTypes] name the handlers' task types and versions in every
 *   Lease, so that the coordinator hands out only jobs this worker can run (default true;
 *   false: any job of the queues)
 * @property {boolean} [confirmLeases] lease confirmation: every Lease asks the coordinator to
 *   hold its jobs unconfirmed, and the worker confirms each reply at once with one
 *   HeartbeatBatch before running its jobs, so a reply lost on the way (a long-poll cancelled
 *   as it was sent) costs its jobs only confirmWithinMs, never an attempt (default true)
 * @property {number} [confirmWithinMs] how long the coordinator waits for that confirmation,
 *   at most each job's lease (10 s)
 * @property {string} [protoPath] directory holding conveyor/v1/coordinator.proto
 * @property {import('@grpc/grpc-js').ChannelCredentials} [credentials] for TLS
 * @property {Buffer} [tlsRootCertificates] TLS trusting this CA (PEM), instead of credentials
 * @property {string} [token] bearer token (default: $CONVEYOR_TOKEN)
 * @property {import('@grpc/grpc-js').ChannelOptions} [channelOptions] gRPC channel arguments,
 *   winning over the SDK's own
 * @property {Logger} [logger] default: warnings and errors to stderr, no info lines
 */

/** @type {Logger} */
const WARNINGS_TO_STDERR = {
  info: () => {},
  warn: (/** @type {string} */ message) => console.error(`conveyor worker: ${message}`),
  error: (/** @type {string} */ message) => console.error(`conveyor worker: ${message}`),
};

/**
 * Runs handlers for the task types registered with `worker.task('name', handler)`.
 *
 * A handler takes a JobContext and returns a Buffer, a string (sent as UTF-8) or undefined:
 * the job's result. Throw `new Retry(afterMs)` to try again later, a `NonRetryableError` (or
 * any error with `nonRetryable = true`) to fail for good, anything else to fail and be retried
 * by the job's policy.
 */
export class Worker {
  // Per task type, one handler, or one per major version (highest first).
  /** @type {Map<string, Task[]>} */
  #tasks = new Map();
  // Keyed by lease token: after a lost lease the same job may be leased here again while the
  // abandoned attempt is still winding down.
  /** @type {Map<string, RunningJob>} */
  #running = new Map();
  #stopping = new Wakeup();
  #slotFreed = new Wakeup();
  /** @type {import('@grpc/grpc-js').ClientUnaryCall | null} the long-poll stop() cuts short */
  #leaseCall = null;
  #started = false;
  /** @type {Receipts | null} */
  #receipts = null;
  /** @type {Heartbeats | null} */
  #heartbeats = null;

  /** @param {WorkerOptions} [options] */
  constructor(options = {}) {
    this.config = workerConfig(options);
    this.logger = options.logger ?? WARNINGS_TO_STDERR;
    /** Jobs whose handler returned or threw (not those released or lost), for monitoring. */
    this.processed = 0;
  }

  /**
   * Registers `handler` for `taskType`. `timeoutMs` fails an attempt that runs longer
   * (retryably) and aborts its signal. `version` names the contract version the handler
   * implements; `decode` turns each payload into `job.message` first (a payload it throws on
   * fails the job for good).
   *
   * `taskType` may instead be a protobufjs message type whose `(conveyor.v1.task)` option
   * names the task type and version; payloads are then decoded with it.
   *
   * One task type may have several handlers, one per MAJOR version: a job goes to the one of
   * its task_version's major, a job without a version to the highest.
   * @param {string | MessageType} taskType
   * @param {Handler} handler
   * @param {TaskOptions} [options]
   * @returns {this}
   */
  task(taskType, handler, { timeoutMs, version, decode } = {}) {
    if (typeof handler !== 'function') throw new TypeError('a handler must be a function');
    if (timeoutMs !== undefined && !(timeoutMs > 0)) {
      throw new RangeError(`timeoutMs must be a positive number, got ${timeoutMs}`);
    }
    if (decode !== undefined && typeof decode !== 'function') {
      throw new TypeError('decode must be a function from the payload (a Buffer) to a message');
    }
    let name;
    if (isMessageType(taskType)) {
      if (version !== undefined || decode !== undefined) {
        throw new TypeError('a message type brings its own version and decoding; pass neither');
      }
      const type = taskType;
      ({ name, version } = contractOf(type));
      decode = (payload) => type.decode(payload);
    } else if (typeof taskType === 'string' && taskType !== '') {
      name = taskType;
    } else {
      throw new TypeError('a task type is a name or a protobufjs message type');
    }
    // Parsed now, so that a malformed version fails here rather than at the first job.
    const major = version === undefined ? null : parseVersion(version).major;
    const existing = this.#tasks.get(name) ?? [];
    for (const other of existing) {
      if (other.major === null || major === null) {
        throw new Error(`task type '${name}' already has a handler`);
      }
      if (other.major === major) {
        throw new Error(
          `task type '${name}' already has a handler for major version ${major} ` +
            `(${other.version}); register one handler per major version`,
        );
      }
    }
    /** @type {Task} */
    const task = { handler, timeoutMs, version: version ?? '', major, decode: decode ?? null };
    // Highest major first: a job without a task_version goes to the newest contract.
    const tasks = [...existing, task].sort((a, b) => (b.major ?? 0) - (a.major ?? 0));
    this.#tasks.set(name, tasks);
    return this;
  }

  /**
   * Stops leasing and begins the graceful shutdown; returns at once. Safe to call more than
   * once, and before run().
   */
  stop() {
    if (!this.#stopping.isSet) this.logger.info(`worker ${this.config.workerId} stopping`);
    this.#stopping.set();
    this.#slotFreed.set();
    // A short drain first: cancelling a call whose reply is already on the wire loses the
    // reply (the coordinator sent it, the channel drops it), and its jobs stay leased to
    // nobody until their leases run out. A reply within the drain is handed back by #lease.
    const call = this.#leaseCall;
    if (call) setTimeout(() => call.cancel(), LEASE_DRAIN_MS).unref();
  }

  /**
   * Works until stop() is called (or SIGTERM/SIGINT arrives, with `installSignalHandlers`),
   * then shuts down gracefully and resolves. A Worker runs once.
   * @param {{installSignalHandlers?: boolean}} [options]
   */
  async run({ installSignalHandlers = false } = {}) {
    if (this.#tasks.size === 0) {
      throw new Error('register at least one handler with worker.task() first');
    }
    if (this.#started) throw new Error('a Worker runs once; make a new one');
    this.#started = true;
    const { config } = this;
    const stub = openStub(config.address, config);
    const receipts = new Receipts(stub, {
      flushIntervalMs: config.receiptFlushMs,
      batchSize: config.receiptBatchSize,
      retryForMs: config.receiptRetryForMs,
      logger: this.logger,
    });
    const heartbeats = new Heartbeats(stub, this.#running, {
      onCancelRequested: (running) =>
        running.stop(StopReason.CANCEL_REQUESTED, 'the job was cancelled'),
      onLeaseLost: (running, message) => this.#leaseLost(running, message),
      logger: this.logger,
    });
    this.#receipts = receipts;
    this.#heartbeats = heartbeats;
    const sender = this.#sideLoop(() => receipts.run(), 'receipts');
    const beater = this.#sideLoop(() => heartbeats.run(), 'heartbeats');
    const removeSignalHandlers = installSignalHandlers ? this.#installSignalHandlers() : () => {};
    this.logger.info(`worker ${config.workerId} leasing from ${config.queues.join(', ')}`);
    try {
      await this.#leaseLoop(stub);
      await this.#finishRunning(config.shutdownGraceMs);
    } finally {
      await this.#finishRunning(0); // the lease loop failed: hand back what still runs
      removeSignalHandlers();
      heartbeats.stop();
      receipts.close();
      await Promise.all([sender, beater]);
      stub.close();
      this.logger.info(`worker ${config.workerId} stopped`);
    }
  }

  /**
   * A background loop that, should it fail, stops the worker rather than dying quietly.
   * @param {() => Promise<void>} loop
   * @param {string} name
   */
  #sideLoop(loop, name) {
    return loop().catch((error) => {
      this.logger.error(`${name} failed; stopping the worker: ${error?.stack ?? error}`);
      this.stop();
    });
  }

  /** @returns {() => void} removes the handlers again */
  #installSignalHandlers() {
    const onSignal = () => this.stop();
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    return () => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
    };
  }

  // -- lease loop -----------------------------------------------------------------------------

  /** @param {Record<string, Function>} stub */
  async #leaseLoop(stub) {
    let backoff = LEASE_BACKOFF_FIRST_MS;
    while (!this.#stopping.isSet) {
      const free = this.config.concurrency - this.#running.size;
      if (free <= 0) {
        this.#slotFreed.clear();
        await this.#slotFreed.wait();
        continue;
      }
      let jobs;
      try {
        jobs = await this.#lease(stub, free);
      } catch (/** @type {any} */ error) {
        if (this.#stopping.isSet) break; // stop() cancelled the long-poll
        this.logger.warn(
          `lease failed (${codeName(error.code)}: ${error.details}); retrying in ${backoff} ms`,
        );
        await this.#stopping.wait(backoff);
        backoff = Math.min(backoff * 2, LEASE_BACKOFF_MAX_MS);
        continue;
      }
      backoff = LEASE_BACKOFF_FIRST_MS;
      for (const job of jobs) this.#start(job);
      if (jobs.length > 0) {
        // Let handlers that finish at once free their slots before the next Lease, so that
        // it asks for them all in one call.
        await new Promise(setImmediate);
      }
    }
  }

  /**
   * Up to `free` jobs. A reply that raced stop() is handed back unstarted.
   * @param {Record<string, Function>} stub
   * @param {number} free
   * @returns {Promise<any[]>} LeasedJobs
   */
  async #lease(stub, free) {
    const { workerId, queues, leaseWaitMs } = this.config;
    const request = {
      workerId,
      queues,
      maxJobs: free,
      wait: durationOf(leaseWaitMs),
      taskTypes: this.#declaredTaskTypes(),
      // Lease confirmation: the jobs are held unconfirmed until #heartbeats.confirm below.
      ...(this.config.confirmLeases
        ? { confirm: true, confirmWithin: durationOf(this.config.confirmWithinMs) }
        : {}),
    };
    let reply;
    try {
      reply = await unary(stub, 'Lease', request, {
        timeoutMs: leaseWaitMs + LEASE_CALL_SLACK_MS,
        onCall: (call) => {
          this.#leaseCall = call;
        },
      });
    } finally {
      this.#leaseCall = null;
    }
    let jobs = reply.jobs;
    if (jobs.length > 0 && this.config.confirmLeases && !this.#stopping.isSet && this.#heartbeats) {
      const { confirmed, cancelled } = await this.#heartbeats.confirm(
        jobs,
        this.config.confirmWithinMs,
      );
      for (const job of cancelled) this.#cancelledBeforeStart(job);
      jobs = confirmed;
    }
    if (this.#stopping.isSet) {
      // Released without counting an attempt, so another worker can take them at once.
      for (const job of jobs) this.#receipts?.send(receipt(job, 'OUTCOME_RELEASE'));
      return [];
    }
    return jobs;
  }

  /**
   * Reports a job whose lease confirmation said cancel_requested, without running it.
   *
   * A FAILURE with the Cancelled error, as when a heartbeat cancels a running handler
   * (receiptAfterStop): whether the cancel came before or during the run, the job ends
   * CANCELLED (any outcome but SUCCESS does, docs/protocol.md) with the same error type.
   * RELEASE would end it CANCELLED too, but with no error saying why.
   * @param {any} job a LeasedJob
   */
  #cancelledBeforeStart(job) {
    this.logger.info(`job ${job.jobId} was cancelled before it started; not running it`);
    this.#receipts?.send(
      workerFailureReceipt(job, CANCELLED_ERROR_TYPE, 'cancelled before it started'),
    );
  }

  /**
   * The TaskTypeRefs of a Lease: an unversioned handler (version '') takes every version.
   * @returns {{name: string, version: string}[]}
   */
  #declaredTaskTypes() {
    if (!this.config.declareTaskTypes) return [];
    return [...this.#tasks].flatMap(([name, tasks]) =>
      tasks.map(({ version }) => ({ name, version })),
    );
  }

  /** @param {any} job a LeasedJob */
  #start(job) {
    const context = jobContextOf(job);
    const interval = heartbeatIntervalMs(job, this.config.heartbeatFraction);
    const running = new RunningJob(job, context, interval, performance.now());
    context._setHeartbeatRequest(() => this.#heartbeats?.ask(job.leaseToken));
    this.#running.set(job.leaseToken, running);
    this.#heartbeats?.tracked(running);
    running.done = this.#execute(running);
  }

  /**
   * Runs one pushed job with the registered handlers (pushHandler's way in), exactly as a
   * leased one (decoding, timeouts, version routing): the receipt the worker would send, or
   * null when none may be sent (the lease was lost). The caller heartbeats, if anyone does.
   * @param {RunningJob} running made by pushHandler from the push request
   * @returns {Promise<ReceiptRequest | null>}
   */
  async runPushed(running) {
    // Stopped before it started (the push app's first heartbeat found the lease over or the
    // job cancelled, or the app is shutting down): the handler never runs.
    const outcome =
      running.stopReason === null ? await this.#runHandler(running) : receiptAfterStop(running);
    if (outcome !== null && outcome.outcome !== 'OUTCOME_RELEASE') this.processed += 1;
    return outcome;
  }

  // -- execute --------------------------------------------------------------------------------

  /**
   * Runs the handler and hands its receipt over. Never rejects.
   * @param {RunningJob} running
   */
  async #execute(running) {
    /** @type {ReceiptRequest | null} */
    let outcome;
    try {
      outcome = await inJobSpan(running.job, async (span) => {
        const receipt = await this.#runHandler(running);
        recordOutcome(span, receipt);
        return receipt;
      });
    } finally {
      this.#running.delete(running.job.leaseToken);
      this.#slotFreed.set();
    }
    // After a lost lease someone else owns the job: stay silent (fencing).
    if (outcome === null || running.stopReason === StopReason.LEASE_LOST) return;
    // A checkpoint saved since the last heartbeat is meant for the next attempt: it goes in
    // a heartbeat just before the receipt. A success needs none.
    const checkpoint =
      outcome.outcome === 'OUTCOME_SUCCESS' ? null : running.context._takeUnsentCheckpoint();
    if (outcome.outcome !== 'OUTCOME_RELEASE') this.processed += 1;
    this.#receipts?.send(outcome, checkpoint);
  }

  /**
   * The receipt for one attempt, or null when none may be sent.
   * @param {RunningJob} running
   * @returns {Promise<ReceiptRequest | null>}
   */
  async #runHandler(running) {
    const { job, context } = running;
    const task = this.#taskFor(job);
    if (!task) return unknownTaskReceipt(job, this.#tasks.get(job.taskType) ?? []);
    if (task.decode !== null) {
      try {
        context.message = task.decode(job.payload);
      } catch (/** @type {any} */ error) {
        // Non-retryable: the same bytes will not decode any better on the next attempt.
        return workerFailureReceipt(
          job,
          PAYLOAD_DECODE_ERROR_TYPE,
          `the payload of job ${job.jobId} (task '${job.taskType}', version ` +
            `${job.taskVersion || 'none'}) does not decode: ${error?.message ?? error}`,
          { nonRetryable: true },
        );
      }
    }
    const timer =
      task.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            running.stop(
              StopReason.TIMEOUT,
              `the handler ran longer than its ${task.timeoutMs} ms timeout`,
            );
          }, task.timeoutMs);
    try {
      // A promise cannot be cancelled: once the worker aborts the job's signal, the outcome
      // is decided by why, and a handler that ignores its signal runs on unobserved.
      const settled = await Promise.race([settle(task.handler, context), aborted(context.signal)]);
      if (settled === STOPPED || ('error' in settled && running.stopReason !== null)) {
        return receiptAfterStop(running);
      }
      if ('error' in settled) return failureReceipt(job, settled.error);
      return receipt(job, 'OUTCOME_SUCCESS', { result: resultBytes(settled.value) });
    } catch (error) {
      return failureReceipt(job, error); // the handler returned something that is not bytes
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * The handler of the job's task type at its contract's major version.
   * @param {any} job a LeasedJob
   * @returns {Task | undefined}
   */
  #taskFor(job) {
    const tasks = this.#tasks.get(job.taskType);
    if (!tasks) return undefined;
    if (tasks[0].major === null || !job.taskVersion) return tasks[0];
    let major;
    try {
      major = parseVersion(job.taskVersion).major;
    } catch {
      return undefined; // the coordinator validates versions; this is only defensive
    }
    return tasks.find((task) => task.major === major);
  }

  /**
   * @param {RunningJob} running
   * @param {string} message
   */
  #leaseLost(running, message) {
    this.logger.warn(`lease lost on job ${running.job.jobId} (${message}); abandoning it`);
    running.stop(StopReason.LEASE_LOST, `the lease was lost: ${message}`);
  }

  // -- shutdown -------------------------------------------------------------------------------

  /**
   * Lets running jobs finish for up to `graceMs`, then aborts and releases the rest.
   * Heartbeats go on meanwhile.
   * @param {number} graceMs
   */
  async #finishRunning(graceMs) {
    const jobs = [...this.#running.values()];
    if (jobs.length === 0) return;
    if (graceMs > 0) {
      this.logger.info(`waiting up to ${graceMs} ms for ${jobs.length} running jobs`);
      if (await settlesWithin(Promise.all(jobs.map((r) => r.done)), graceMs)) return;
    }
    const left = [...this.#running.values()];
    this.logger.info(`releasing ${left.length} unfinished jobs`);
    for (const running of left) running.stop(StopReason.SHUTDOWN, 'the worker is shutting down');
    await Promise.all(left.map((r) => r.done));
  }
}

/**
 * The handler's outcome as a value, so that a rejection is never left unhandled even when
 * nobody awaits it any more.
 * @param {Handler} handler
 * @param {Job} context
 * @returns {Promise<{value: unknown} | {error: unknown}>}
 */
function settle(handler, context) {
  return Promise.resolve()
    .then(() => handler(context))
    .then(
      (value) => ({ value }),
      (error) => ({ error }),
    );
}

/**
 * @param {AbortSignal} signal
 * @returns {Promise<typeof STOPPED>}
 */
function aborted(signal) {
  return new Promise((resolve) => {
    if (signal.aborted) resolve(STOPPED);
    else signal.addEventListener('abort', () => resolve(STOPPED), { once: true });
  });
}

/**
 * The worker aborted the handler; why decides what to report.
 * @param {RunningJob} running
 * @returns {ReceiptRequest | null}
 */
function receiptAfterStop(running) {
  const { job } = running;
  switch (running.stopReason) {
    case StopReason.CANCEL_REQUESTED:
      return workerFailureReceipt(job, CANCELLED_ERROR_TYPE, 'cancelled while running');
    case StopReason.TIMEOUT:
      return workerFailureReceipt(job, TIMEOUT_ERROR_TYPE, running.context.signal.reason.message);
    case StopReason.LEASE_LOST:
      return null;
    default: // shutdown: hand the job back without counting an attempt
      return receipt(job, 'OUTCOME_RELEASE');
  }
}

/**
 * The failure for a job this worker has no handler for (at its version). Retryable: another
 * worker of the queue may have one.
 * @param {any} job a LeasedJob
 * @param {Task[]} tasks the handlers of its task type, if any
 */
function unknownTaskReceipt(job, tasks) {
  const message =
    tasks.length === 0
      ? `no handler for task type '${job.taskType}' in this worker; register one with ` +
        'worker.task(...) or route the task to another queue'
      : `no handler for task type '${job.taskType}' at version '${job.taskVersion}' in this ` +
        `worker (it has ${tasks.map((task) => task.version).join(', ')}); register one for ` +
        'that major version';
  return workerFailureReceipt(job, UNKNOWN_TASK_ERROR_TYPE, message);
}

/**
 * @param {WorkerOptions} options
 */
function workerConfig(options) {
  const config = {
    address: options.address ?? DEFAULT_ADDRESS,
    queues: options.queues ?? ['default'],
    concurrency: options.concurrency ?? 10,
    workerId: options.workerId || defaultWorkerId(),
    shutdownGraceMs: options.shutdownGraceMs ?? 30_000,
    leaseWaitMs: options.leaseWaitMs ?? 20_000,
    heartbeatFraction: options.heartbeatFraction ?? 1 / 3,
    receiptFlushMs: options.receiptFlushMs ?? 2,
    receiptBatchSize: options.receiptBatchSize ?? 100,
    receiptRetryForMs: options.receiptRetryForMs ?? 30_000,
    declareTaskTypes: options.declareTaskTypes ?? true,
    confirmLeases: options.confirmLeases ?? true,
    confirmWithinMs: options.confirmWithinMs ?? 10_000,
    protoPath: options.protoPath,
    credentials: options.credentials,
    tlsRootCertificates: options.tlsRootCertificates,
    token: options.token,
    channelOptions: options.channelOptions,
  };
  if (!Array.isArray(config.queues) || config.queues.length === 0) {
    throw new TypeError('queues must be a non-empty array of queue names');
  }
  if (!Number.isInteger(config.concurrency) || config.concurrency < 1) {
    throw new RangeError(`concurrency must be an integer of at least 1, got ${config.concurrency}`);
  }
  if (!(config.leaseWaitMs > 0 && config.leaseWaitMs <= MAX_LEASE_WAIT_MS)) {
    throw new RangeError(
      `leaseWaitMs must be more than 0 and at most ${MAX_LEASE_WAIT_MS}, got ${config.leaseWaitMs}`,
    );
  }
  if (!(config.heartbeatFraction > 0 && config.heartbeatFraction < 1)) {
    throw new RangeError('heartbeatFraction must be between 0 and 1 (a third is usual)');
  }
  if (!(config.shutdownGraceMs >= 0)) throw new RangeError('shutdownGraceMs must not be negative');
  if (!(config.receiptBatchSize >= 1)) throw new RangeError('receiptBatchSize must be at least 1');
  if (!(config.confirmWithinMs >= 1 && config.confirmWithinMs <= 86_400_000)) {
    throw new RangeError('confirmWithinMs must be between 1 ms and 24 h (10 s is usual)');
  }
  return config;
}

function defaultWorkerId() {
  return `${os.hostname()}-${process.pid}-${randomBytes(2).toString('hex')}`;
}
