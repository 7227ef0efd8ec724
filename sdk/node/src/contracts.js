// Task contracts (docs/protocol.md, "Task contracts and versions"): semantic versions, and
// the `(conveyor.v1.task)` option of a protobufjs message type, which names the task type and
// the contract version its payload follows.

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

import protobuf from 'protobufjs';

import { DEFAULT_PROTO_PATH } from './proto.js';

const VERSION = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$/;
const TASK_OPTION = '(conveyor.v1.task)';

/**
 * @typedef {{major: number, minor: number, patch: number}} Version
 * @typedef {{name: string, version: string}} Contract
 * @typedef {import('protobufjs').Type} MessageType
 */

/**
 * @param {string} text MAJOR.MINOR.PATCH
 * @returns {Version}
 */
export function parseVersion(text) {
  const match = VERSION.exec(String(text));
  if (match === null) {
    throw new RangeError(`'${text}' is not a semantic version: give MAJOR.MINOR.PATCH, e.g. 1.2.0`);
  }
  return { major: Number(match[1]), minor: Number(match[2]), patch: Number(match[3]) };
}

/**
 * Whether `value` is a protobufjs message type (a `Type`, as `root.lookupType()` returns).
 * Duck-typed: the application's protobufjs may be another copy than the SDK's.
 * @param {unknown} value
 * @returns {value is MessageType}
 */
export function isMessageType(value) {
  const type = /** @type {any} */ (value);
  return (
    typeof type?.decode === 'function' &&
    typeof type?.encode === 'function' &&
    typeof type?.fullName === 'string'
  );
}

/**
 * The task type and version a message type declares with `option (conveyor.v1.task)`.
 * @param {MessageType} type
 * @returns {Contract}
 */
export function contractOf(type) {
  // protobufjs keeps an aggregate option both whole (parsedOptions, from .proto files) and
  // flattened into `options` ('(conveyor.v1.task).name'; all that JSON descriptors keep).
  // protobufjs declares parsedOptions as a map, but it holds an array of {option: value}.
  const parsedOptions = /** @type {Record<string, any>[]} */ (
    /** @type {unknown} */ (type.parsedOptions ?? [])
  );
  const parsed = parsedOptions.find((option) => TASK_OPTION in option)?.[TASK_OPTION];
  const options = type.options ?? {};
  const name = parsed?.name ?? options[`${TASK_OPTION}.name`];
  const version = parsed?.version ?? options[`${TASK_OPTION}.version`];
  if (!name || !version) {
    throw new TypeError(
      `${type.fullName.replace(/^\./, '')} has no task option with a name and a version: add ` +
        '`option (conveyor.v1.task) = {name: "...", version: "1.0.0"};` to the message ' +
        '(import "conveyor/v1/task.proto"), or register a name with {version, decode}',
    );
  }
  parseVersion(version);
  return { name, version };
}

/**
 * Loads .proto files holding task contracts into a protobufjs Root, resolving imports
 * against `includeDirs`, then Conveyor's own protos (for conveyor/v1/task.proto), then the
 * well-known types bundled with protobufjs. Look the messages up with `root.lookupType(...)`.
 * @param {string | string[]} files paths relative to an include directory, or absolute
 * @param {{includeDirs?: string[], protoPath?: string}} [options]
 * @returns {import('protobufjs').Root}
 */
export function loadContracts(files, { includeDirs = [], protoPath = DEFAULT_PROTO_PATH } = {}) {
  registerDescriptorProto();
  const dirs = [...includeDirs, protoPath];
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => {
    if (path.isAbsolute(target)) return target;
    const found = dirs.map((dir) => path.join(dir, target)).find((file) => existsSync(file));
    return found ?? target; // not found: protobufjs tries its bundled files, then fails
  };
  return root.loadSync(files);
}

let descriptorRegistered = false;

// protobufjs bundles google/protobuf/{any,timestamp,...}.proto but not descriptor.proto, which
// task.proto imports (to extend MessageOptions): register it as @grpc/proto-loader does.
function registerDescriptorProto() {
  if (descriptorRegistered) return;
  const require = createRequire(import.meta.url);
  const descriptor = require('protobufjs/google/protobuf/descriptor.json');
  protobuf.common('descriptor', descriptor.nested.google.nested.protobuf.nested);
  descriptorRegistered = true;
}
