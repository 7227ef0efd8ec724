// The Node Client's admin calls, for tests/node/test_node_client_admin.py. Each scenario
// drives a real coordinator through the SDK and prints one JSON object on stdout with what
// it saw. Usage: node admin_client_script.mjs SCENARIO ADDRESS [ARG]

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Client, ConveyorError, loadContracts } from '../../sdk/node/src/index.js';

const [scenario, address, arg] = process.argv.slice(2);

/** @param {Promise<unknown>} promise @returns {Promise<string | null>} the error code, if any */
async function codeOf(promise) {
  try {
    await promise;
    return null;
  } catch (error) {
    if (!(error instanceof ConveyorError)) throw error;
    return error.code;
  }
}

/** @type {Record<string, (client: Client) => Promise<object>>} */
const scenarios = {
  // Lists with filters and pages, then cancels a waiting job and retries it.
  async jobs(client) {
    const ids = [];
    for (let i = 0; i < 5; i++) ids.push((await client.enqueue('q', 'echo', `job-${i}`)).jobId);
    await client.enqueue('other', 'echo', 'elsewhere');
    const firstPage = await client.listJobs({ queue: 'q', pageSize: 2 });
    const iterated = [];
    for await (const job of client.iterJobs({ queue: 'q', pageSize: 2 })) iterated.push(job.jobId);
    const cancelled = await client.cancelJob(ids[0]);
    const onlyCancelled = await client.listJobs({ state: 'CANCELLED' });
    const retried = await client.retryJob(ids[0]);
    const retryOfWaiting = await codeOf(client.retryJob(ids[1]));
    return {
      ids,
      firstPage: firstPage.jobs.map((job) => job.jobId),
      hasNextPage: firstPage.nextPageToken !== '',
      iterated,
      cancelledState: cancelled.state,
      onlyCancelled: onlyCancelled.jobs.map((job) => job.jobId),
      retriedState: retried.state,
      retryOfWaiting,
    };
  },

  // Sets limits, pauses and resumes a queue, and clears a limit again.
  async queues(client) {
    await client.enqueue('mail', 'echo', 'x');
    const limited = await client.updateQueue('mail', {
      rateLimit: { rate: 5, burst: 10 },
      maxConcurrency: 3,
      leaseDurationMs: 45_000,
      maxAttempts: 7,
      retryPolicy: { initialBackoffMs: 2_000, multiplier: 3 },
      retention: { succeededMs: 3_600_000 },
    });
    const paused = await client.pauseQueue('mail');
    const got = await client.getQueue('mail');
    const resumed = await client.resumeQueue('mail');
    const cleared = await client.updateQueue('mail', { rateLimit: null, leaseDurationMs: null });
    const listed = await client.listQueues();
    return {
      rateLimit: limited.rateLimit,
      maxConcurrency: limited.maxConcurrency,
      leaseDurationSeconds: Number(limited.leaseDuration.seconds),
      maxAttempts: limited.maxAttempts,
      initialBackoffSeconds: Number(limited.retryPolicy.initialBackoff.seconds),
      retentionSucceededSeconds: Number(limited.retention.succeeded.seconds),
      pausedAfterPause: paused.paused,
      heldByPause: got.stats.heldByPause,
      pausedAfterResume: resumed.paused,
      clearedRate: cleared.rateLimit?.rate ?? 0,
      clearedLease: cleared.leaseDuration,
      keptConcurrency: cleared.maxConcurrency,
      listed: listed.queues.map((queue) => queue.name),
    };
  },

  // A schedule through its whole life.
  async schedules(client) {
    const job = { queue: 'reports', taskType: 'nightly', payload: 'p', priority: 2 };
    const created = await client.createSchedule('nightly-report', '0 3 * * *', job, {
      timezone: 'Europe/Paris',
      overlapPolicy: 'SKIP',
    });
    const got = await client.getSchedule('nightly-report');
    const updated = await client.updateSchedule('nightly-report', {
      cron: '30 4 * * *',
      misfirePolicy: 'SKIP',
    });
    const paused = await client.pauseSchedule('nightly-report');
    const resumed = await client.resumeSchedule('nightly-report');
    const listed = await client.listSchedules();
    await client.deleteSchedule('nightly-report');
    const afterDelete = await codeOf(client.getSchedule('nightly-report'));
    return {
      createdCron: created.cron,
      timezone: got.timezone,
      overlapPolicy: got.overlapPolicy,
      template: {
        queue: got.job.queue,
        taskType: got.job.taskType,
        payload: got.job.payload.toString(),
        priority: got.job.priority,
      },
      hasNextFire: got.nextFireAt !== null,
      updatedCron: updated.cron,
      updatedMisfire: updated.misfirePolicy,
      keptTimezone: updated.timezone,
      pausedAfterPause: paused.paused,
      pausedAfterResume: resumed.paused,
      listed: listed.schedules.map((schedule) => schedule.name),
      afterDelete,
    };
  },

  // Publishes acme.email.v1.SendEmail from a descriptor set file (ARG), twice, then reads it.
  async taskTypes(client) {
    const protos = path.join(path.dirname(fileURLToPath(import.meta.url)), 'protos');
    const SendEmail = loadContracts('acme_email.proto', { includeDirs: [protos] }).lookupType(
      'acme.email.v1.SendEmail',
    );
    const descriptors = readFileSync(arg);
    const registered = await client.registerTaskType(SendEmail, { descriptors });
    const again = await client.registerTaskType(SendEmail, { descriptors });
    const byName = await client.registerTaskType('acme.email.v1.SendEmail', {
      descriptors,
      name: 'send_email',
      version: '1.2.0',
    });
    const contradicting = await codeOf(
      client.registerTaskType('acme.email.v1.SendEmail', {
        descriptors,
        name: 'send_email',
        version: '9.0.0',
      }),
    );
    const got = await client.getTaskType('send_email');
    const listed = await client.listTaskTypes();
    return {
      registered: [registered.name, registered.version, registered.messageType],
      again: again.version,
      byName: byName.version,
      contradicting,
      got: [got.name, got.version, got.descriptors.file.length > 0],
      listed: listed.taskTypes.map((taskType) => `${taskType.name}@${taskType.version}`),
    };
  },
};

// A Client whose channel takes replies of 1 KiB at most: the job of 4 KiB cannot come back.
scenarios.channelOptions = async (client) => {
  const { jobId } = await client.enqueue('q', 'echo', Buffer.alloc(4096));
  const small = new Client({
    address,
    channelOptions: { 'grpc.max_receive_message_length': 1024 },
  });
  try {
    const defaultLimit = (await client.getJob(jobId)).payload.length;
    return { defaultLimit, small: await codeOf(small.getJob(jobId)) };
  } finally {
    small.close();
  }
};

const client = new Client({ address });
try {
  const run = scenarios[scenario];
  if (run === undefined) throw new Error(`unknown scenario ${scenario}`);
  process.stdout.write(`${JSON.stringify(await run(client))}\n`);
} finally {
  client.close();
}
