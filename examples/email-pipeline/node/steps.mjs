// The Node.js steps of the email pipeline: analyze_text and check_links.
//
// Run from examples/email-pipeline, after `npm ci --prefix node`:
//
//   node node/steps.mjs
//
// The contracts are read from protos/pipeline/v1/pipeline.proto at start-up (nothing is
// generated for Node.js). Each handler is registered with its message type, so the worker
// takes the task type and version from the message's (conveyor.v1.task) option, names them in
// every Lease (the coordinator hands it only these jobs, though the Python steps share the
// queue), and decodes each payload into `job.message`.

import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { loadContracts, Worker } from '@conveyor/sdk';

const QUEUE = 'email'; // the same queue as the Python steps (pipeline_contracts.py)
const ADDRESS = process.env.CONVEYOR_ADDRESS || '127.0.0.1:7345';

const root = loadContracts('pipeline/v1/pipeline.proto', {
  includeDirs: [path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'protos')],
});
const AnalyzeText = root.lookupType('pipeline.v1.AnalyzeText');
const CheckLinks = root.lookupType('pipeline.v1.CheckLinks');
const PartVerdict = root.lookupType('pipeline.v1.PartVerdict');

/**
 * Combines independent pieces of evidence, as python_steps.py does: the chance that at least
 * one of them is right. Stays within 0..1 however many there are, and one strong one is enough.
 * @param {number[]} scores each 0..1
 */
function noisyOr(scores) {
  return 1 - scores.reduce((clean, score) => clean * (1 - score), 1);
}

/**
 * @param {string} part what was checked
 * @param {Array<[number, string]>} findings [score, reason] pairs
 * @returns {Uint8Array} a serialized PartVerdict: the job's result
 */
function verdict(part, findings) {
  const score = noisyOr(findings.map(([weight]) => weight));
  const reasons = findings.map(([, reason]) => reason);
  return PartVerdict.encode(PartVerdict.create({ part, score, reasons })).finish();
}

// -- analyze_text ---------------------------------------------------------------------------

// Phrases that phishing and malware lures lean on, with how much each one says.
const PHRASES = [
  ['verify your account', 0.35],
  ['enable content', 0.35],
  ['enable macros', 0.35],
  ['enable editing', 0.3],
  ['suspended', 0.25],
  ['wire transfer', 0.25],
  ['you have won', 0.3],
  ['urgent', 0.2],
  ['click here', 0.2],
  ['password', 0.2],
  ['act now', 0.2],
  ['within 24 hours', 0.2],
];

/** @param {import('@conveyor/sdk').JobContext} job */
function analyzeText(job) {
  const { subject, text } = /** @type {any} */ (job.message);
  const all = `${subject}\n${text}`;
  const lower = all.toLowerCase();
  /** @type {Array<[number, string]>} */
  const findings = [];
  const lures = PHRASES.filter(([phrase]) => lower.includes(phrase));
  if (lures.length > 0) {
    // Each phrase counts as evidence of its own; one reason lists them all.
    const score = noisyOr(lures.map(([, weight]) => weight));
    findings.push([score, `lure phrases: ${lures.map(([phrase]) => `"${phrase}"`).join(', ')}`]);
  }
  // Shouting: whole words of three or more capitals (short acronyms like "EU" do not count).
  const shouted = [...new Set(all.match(/\b[A-Z]{3,}\b/g) ?? [])];
  if (shouted.length >= 2) {
    findings.push([Math.min(0.4, 0.1 * shouted.length), `ALL-CAPS words: ${shouted.join(', ')}`]);
  }
  const exclamations = (all.match(/!/g) ?? []).length;
  if (exclamations >= 3 || all.includes('!!')) {
    findings.push([0.2, `${exclamations} exclamation marks`]);
  }
  return verdict('text', findings);
}

// -- check_links ----------------------------------------------------------------------------

// Top-level domains that are cheap to register and popular with throwaway phishing sites.
const SUSPICIOUS_TLDS = new Set([
  'zip', 'mov', 'top', 'xyz', 'tk', 'ml', 'ga', 'cf', 'gq', 'click', 'work', 'country',
]);
// A shortened link hides where it leads from the reader (and from this check).
const SHORTENERS = new Set([
  'bit.ly', 'tinyurl.com', 't.co', 'goo.gl', 'ow.ly', 'is.gd', 'buff.ly', 'rebrand.ly', 'cutt.ly',
]);

/** @param {import('@conveyor/sdk').JobContext} job */
function checkLinks(job) {
  const { urls } = /** @type {any} */ (job.message);
  /** @type {Array<[number, string]>} */
  const findings = [];
  for (const url of urls) {
    let host;
    try {
      host = new URL(url).hostname.toLowerCase();
    } catch {
      findings.push([0.2, `malformed link ${url}`]);
      continue;
    }
    // A bare address skips DNS names, and with them any reputation they have: rare in
    // legitimate mail, common in phishing kits. (IPv6 hosts keep their brackets in `hostname`.)
    if (/^\d{1,3}(\.\d{1,3}){3}$/.test(host) || host.startsWith('[')) {
      findings.push([0.6, `link to an IP address: ${url}`]);
    }
    const tld = host.split('.').at(-1);
    if (SUSPICIOUS_TLDS.has(tld)) findings.push([0.3, `link to a .${tld} domain: ${url}`]);
    if (SHORTENERS.has(host)) findings.push([0.3, `shortened link hides its target: ${url}`]);
  }
  return verdict('links', findings);
}

// -- the worker -----------------------------------------------------------------------------

// The worker id says which language ran a job (visible as Job.leased_by and in each attempt).
const worker = new Worker({
  address: ADDRESS,
  queues: [QUEUE],
  concurrency: 20,
  workerId: `node-steps-${os.hostname()}-${process.pid}`,
  shutdownGraceMs: 5_000,
});
worker.task(AnalyzeText, analyzeText);
worker.task(CheckLinks, checkLinks);

console.log(`node steps: analyze_text and check_links from queue '${QUEUE}' at ${ADDRESS}`);
await worker.run({ installSignalHandlers: true }); // until SIGTERM or Ctrl-C
console.log('node steps: stopped');
