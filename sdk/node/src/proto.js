// Loads the wire contract at runtime from the repository's protos/ (nothing is generated or
// copied), and converts between the SDK's milliseconds and protobuf Durations/Timestamps.

import path from 'node:path';
import { fileURLToPath } from 'node:url';

import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

/** The repository's protos/ directory, seen from sdk/node/src/. */
export const DEFAULT_PROTO_PATH = path.join(
  path.dirname(fileURLToPath(import.meta.url)),
  '../../../protos',
);
export const DEFAULT_ADDRESS = '127.0.0.1:7345';
const PROTO_FILE = 'conveyor/v1/coordinator.proto';
const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

const LOADER_OPTIONS = {
  // Fields arrive camelCased (jobId, leaseToken), enums as their names (JOB_STATE_SUCCEEDED),
  // bytes as Buffers and absent scalars as their defaults, so callers never see undefined.
  longs: Number,
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: true,
};

/** @type {Map<string, grpc.ServiceClientConstructor>} */
const loaded = new Map();

/**
 * The CoordinatorService client constructor, loaded once per proto directory.
 * @param {string} [protoPath] a directory holding conveyor/v1/coordinator.proto
 * @returns {grpc.ServiceClientConstructor}
 */
export function coordinatorService(protoPath = DEFAULT_PROTO_PATH) {
  let service = loaded.get(protoPath);
  if (!service) {
    const definition = protoLoader.loadSync(PROTO_FILE, {
      ...LOADER_OPTIONS,
      includeDirs: [protoPath],
    });
    const pkg = /** @type {any} */ (grpc.loadPackageDefinition(definition));
    service = /** @type {grpc.ServiceClientConstructor} */ (pkg.conveyor.v1.CoordinatorService);
    loaded.set(protoPath, service);
  }
  return service;
}

/**
 * A CoordinatorService stub on an insecure channel (or `credentials`, for TLS; or
 * `tlsRootCertificates`, PEM of the CA to trust). `token` (default: $CONVEYOR_TOKEN) is sent as
 * `authorization: Bearer <token>` on every call, on TLS and plaintext channels alike.
 * `channelOptions` are gRPC channel arguments ('grpc.max_reconnect_backoff_ms': 5000, say);
 * they win over the SDK's own (64 MiB send and receive limits).
 * @param {string} address host:port
 * @param {{protoPath?: string, credentials?: grpc.ChannelCredentials,
 *   tlsRootCertificates?: Buffer, token?: string,
 *   channelOptions?: grpc.ChannelOptions}} [options]
 * @returns {grpc.Client & Record<string, Function>}
 */
export function openStub(
  address,
  { protoPath, credentials, tlsRootCertificates, token, channelOptions } = {},
) {
  const Service = coordinatorService(protoPath);
  if (credentials && tlsRootCertificates) {
    throw new TypeError('pass credentials or tlsRootCertificates, not both');
  }
  const channelCredentials =
    credentials ??
    (tlsRootCertificates
      ? grpc.credentials.createSsl(tlsRootCertificates)
      : grpc.credentials.createInsecure());
  const bearer = token ?? (process.env.CONVEYOR_TOKEN || undefined);
  return /** @type {any} */ (
    new Service(address, channelCredentials, {
      'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
      'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
      // Reconnect soon after a coordinator blip (a restart, a failover): gRPC's default backs
      // off to 120 s, far longer than a lease; heartbeats (waitForReady) wait for the reconnect.
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 2_000,
      ...channelOptions,
      ...(bearer ? { interceptors: [bearerInterceptor(bearer)] } : {}),
    })
  );
}

/**
 * @param {string} token
 * @returns {grpc.Interceptor}
 */
function bearerInterceptor(token) {
  if (/\s/.test(token)) throw new TypeError('the token has whitespace; check $CONVEYOR_TOKEN');
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set('authorization', `Bearer ${token}`);
        next(metadata, listener);
      },
    });
}

/**
 * @param {number} ms
 * @returns {{seconds: number, nanos: number}} a google.protobuf.Duration
 */
export function durationOf(ms) {
  if (!(ms >= 0)) throw new RangeError(`a duration must be a non-negative number of ms, got ${ms}`);
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

/**
 * @param {{seconds?: number, nanos?: number} | null | undefined} duration
 * @returns {number | null} milliseconds, or null when the field is unset
 */
export function msOf(duration) {
  if (!duration) return null;
  return Number(duration.seconds ?? 0) * 1000 + (duration.nanos ?? 0) / 1e6;
}

/**
 * @param {Date} date
 * @returns {{seconds: number, nanos: number}} a google.protobuf.Timestamp
 */
export function timestampOf(date) {
  const ms = date.getTime();
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: (ms - seconds * 1000) * 1e6 };
}

/**
 * Calls a unary method and settles with its reply. `onCall` receives the call object, so the
 * caller can cancel it (a long-poll cut short by stop()).
 * @param {Record<string, Function>} stub
 * @param {string} method
 * @param {object} request
 * `waitForReady`: while the channel (re)connects, the call waits for it, up to its deadline,
 * instead of failing at once with UNAVAILABLE.
 * @param {{timeoutMs?: number, onCall?: (call: grpc.ClientUnaryCall) => void,
 *   metadata?: grpc.Metadata, waitForReady?: boolean}} [options] `metadata`: sent with the
 *   call (a traceparent)
 * @returns {Promise<any>}
 */
export function unary(stub, method, request, { timeoutMs, onCall, metadata, waitForReady } = {}) {
  return new Promise((resolve, reject) => {
    const callOptions = timeoutMs === undefined ? {} : { deadline: Date.now() + timeoutMs };
    const done = (/** @type {any} */ error, /** @type {any} */ reply) =>
      error ? reject(error) : resolve(reply);
    let sent = metadata;
    if (waitForReady) {
      sent = metadata === undefined ? new grpc.Metadata() : metadata.clone();
      sent.setOptions({ waitForReady: true });
    }
    const call =
      sent === undefined
        ? stub[method](request, callOptions, done)
        : stub[method](request, sent, callOptions, done);
    onCall?.(call);
  });
}
