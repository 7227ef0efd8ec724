"""Container health check for the Conveyor coordinator: asks the standard gRPC health service
(grpc.health.v1.Health/Check) and exits 0 when the answer is SERVING, 1 otherwise.

Docker reads the exit code: 0 healthy, 1 unhealthy (2 is reserved, so even a usage error
exits 1). grpc_health_probe does the same job, but this script needs nothing beyond what the
image already has (grpcio and grpcio-health-checking are dependencies of the coordinator).

    python healthcheck.py [--address HOST:PORT] [--service NAME] [--timeout SECONDS]

The address defaults to the one the coordinator listens on ($CONVEYOR_LISTEN, as the image's
entrypoint passes it to `conveyor serve --listen`), with a wildcard host (0.0.0.0, [::])
replaced by loopback. The coordinator answers NOT_SERVING while it shuts down and while its
store cannot write, so both count as unhealthy.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

LISTEN_ENV = "CONVEYOR_LISTEN"
DEFAULT_LISTEN = "127.0.0.1:7345"
# Below Docker's HEALTHCHECK --timeout (5 s in docker/Dockerfile): the script reports its own
# timeout instead of being killed by Docker without a word.
DEFAULT_TIMEOUT_SECONDS = 3.0
# Wildcard hosts a server binds to, and the loopback address that reaches it from inside.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "[::]": "[::1]"}
# Error texts are cut to this many characters: a health log line, not a dump.
_MAX_DETAIL = 200


class _UsageError(Exception):
    """A bad flag; reported on stderr, exit 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


def probe_address(listen: str) -> str:
    """The address to dial to reach a server listening on `listen` (HOST:PORT)."""
    host, colon, port = listen.rpartition(":")
    if not colon or not port.isdigit():
        raise _UsageError(f"{listen[:_MAX_DETAIL]!r} is not HOST:PORT")
    return f"{_WILDCARDS.get(host, host)}:{port}"


def check(address: str, service: str, timeout: float) -> tuple[bool, str]:
    """Asks the health service once: (healthy, a short description of the answer)."""
    request = health_pb2.HealthCheckRequest(service=service)
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(request, timeout=timeout)
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else None
            name = code.name if code is not None else "ERROR"
            detail = error.details() if isinstance(error, grpc.Call) else str(error)
            return False, f"{name}: {(detail or '')[:_MAX_DETAIL]}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, status


def _parser() -> _Parser:
    parser = _Parser(
        prog="healthcheck.py",
        description="Exit 0 when the coordinator's gRPC health service says SERVING, else 1.",
    )
    parser.add_argument(
        "--address",
        metavar="HOST:PORT",
        help=f"where to ask (default: ${LISTEN_ENV} with a wildcard host as loopback, "
        f"else {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--service",
        default="",
        help="health service name; the empty default is the whole server",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="deadline of the call (default: %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        if not 0 < args.timeout <= 3600:
            raise _UsageError(f"--timeout must be between 0 and 3600 seconds, not {args.timeout}")
        address = args.address or probe_address(os.environ.get(LISTEN_ENV) or DEFAULT_LISTEN)
    except _UsageError as error:
        print(f"healthcheck: {error}", file=sys.stderr)
        return 1
    healthy, description = check(address, args.service, args.timeout)
    print(f"healthcheck: {address} {description}", file=sys.stderr if not healthy else sys.stdout)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
