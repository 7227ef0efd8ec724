// The SDK's one error class. Every failed call becomes a ConveyorError carrying the gRPC
// status name (`NOT_FOUND`, `INVALID_ARGUMENT`, ...) and the coordinator's message, which
// says what to fix.

import grpc from '@grpc/grpc-js';

/** @type {Map<number, string>} status number -> name, from grpc-js's own table */
const NAME_BY_CODE = new Map(
  Object.entries(grpc.status)
    .filter(([, value]) => typeof value === 'number')
    .map(([name, value]) => [/** @type {number} */ (value), name]),
);

/**
 * @param {number} code a gRPC status number (0 = OK)
 * @returns {string} its name, e.g. 'FAILED_PRECONDITION'
 */
export function codeName(code) {
  return NAME_BY_CODE.get(code) ?? 'UNKNOWN';
}

export class ConveyorError extends Error {
  /**
   * @param {string} code the gRPC status name, e.g. 'NOT_FOUND'
   * @param {string} message
   * @param {{cause?: unknown, job?: object}} [extra] `job` for failures about a finished job
   */
  constructor(code, message, { cause, job } = {}) {
    super(message || code, { cause });
    this.name = 'ConveyorError';
    /** @type {string} */
    this.code = code;
    /** @type {number | undefined} the status number, when a call failed */
    this.grpcCode = /** @type {any} */ (grpc.status)[code];
    /** @type {object | undefined} */
    this.job = job;
  }
}

/**
 * The ConveyorError for a failed grpc-js call, keeping the coordinator's message.
 * @param {any} error a grpc-js ServiceError (or anything else thrown by a call)
 * @returns {ConveyorError}
 */
export function fromGrpcError(error) {
  if (error instanceof ConveyorError) return error;
  if (typeof error?.code !== 'number') {
    return new ConveyorError('UNKNOWN', String(error?.message ?? error), { cause: error });
  }
  return new ConveyorError(codeName(error.code), error.details || error.message, {
    cause: error,
  });
}
