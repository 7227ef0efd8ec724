// @conveyor/sdk: a worker and a client for the Conveyor job coordinator.

export { Client } from './client.js';
export { JobContext, NonRetryableError, Retry } from './context.js';
export { contractOf, loadContracts, parseVersion } from './contracts.js';
export { codeName, ConveyorError } from './errors.js';
export { DEFAULT_PROTO_PATH } from './proto.js';
export { pushHandler, sign, verifySignature } from './push.js';
export { JobStoppedError, StopReason } from './running.js';
export { Worker } from './worker.js';
