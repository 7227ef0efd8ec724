"""The `conveyor` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from conveyor.cli import add_client_commands

from conveyor_server.config import (
    DEFAULT_DB_POOL_SIZE,
    DEFAULT_DB_STATEMENT_TIMEOUT_SECONDS,
    DEFAULT_DB_URL,
    DEFAULT_HTTP_MAX_BODY_BYTES,
    DEFAULT_LISTEN,
    ConfigError,
    ServerConfig,
    http_listen,
)
from conveyor_server.encryption import keyring_from_env
from conveyor_server.errors import DatabaseInUse
from conveyor_server.token_cli import add_token_commands


def _serve(args: argparse.Namespace) -> int:
    from conveyor_server.main import Coordinator

    try:
        config = _config(args)
    except ConfigError as error:
        print(f"conveyor serve: {error}", file=sys.stderr)
        return 2

    async def run() -> None:
        coordinator = await Coordinator.start(config)
        print(
            f"conveyor coordinator listening on {coordinator.address}", file=sys.stderr, flush=True
        )
        if coordinator.http_address is not None:
            print(
                f"conveyor HTTP/JSON API listening on http://{coordinator.http_address}",
                file=sys.stderr,
                flush=True,
            )
        for name, address in coordinator.http_addresses().items():
            print(f"conveyor {name} on http://{address}/", file=sys.stderr, flush=True)
        await coordinator.serve_until_signalled()

    try:
        asyncio.run(run())
    except (DatabaseInUse, OSError) as refused:  # OSError: a listen address is taken
        print(f"conveyor serve: {refused}", file=sys.stderr, flush=True)
        return 1
    return 0


def _config(args: argparse.Namespace) -> ServerConfig:
    """The serve flags as a ServerConfig; a flag out of range raises ConfigError."""
    return ServerConfig(
        db_url=args.db,
        listen=args.listen,
        sqlite_synchronous=args.sqlite_synchronous,
        recount_queues=args.recount_queues,
        max_payload_bytes=args.max_payload_bytes,
        max_depth=args.max_depth,
        log_format=args.log_format,
        log_level=args.log_level,
        shutdown_grace_seconds=args.shutdown_grace,
        http_listen=args.http_listen,
        http_max_body_bytes=args.http_max_body_bytes,
        metrics_listen=http_listen(args.metrics_listen) if args.metrics_listen else None,
        dashboard_listen=http_listen(args.dashboard_listen) if args.dashboard_listen else None,
        db_pool_size=args.db_pool_size,
        db_statement_timeout_seconds=args.db_statement_timeout,
        auth=args.auth,
        auth_health=args.auth_health,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        insecure=args.insecure,
        max_long_polls=args.max_long_polls,
        enqueue_rate=args.enqueue_rate,
        enqueue_burst=args.enqueue_burst,
        encryption=keyring_from_env(),
    )


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the coordinator",
        description="Run the coordinator. With no options it keeps its jobs in ./conveyor.db "
        "(SQLite) and listens on " + DEFAULT_LISTEN + ".",
    )
    serve.add_argument(
        "--db",
        default=DEFAULT_DB_URL,
        help="database URL: sqlite:///path.db, or postgresql://user@host/db to share one "
        "database between coordinators (default: %(default)s)",
    )
    serve.add_argument(
        "--listen", default=DEFAULT_LISTEN, help="host:port to listen on (default: %(default)s)"
    )
    serve.add_argument(
        "--sqlite-synchronous",
        default="FULL",
        choices=["OFF", "NORMAL", "FULL", "EXTRA"],
        help="SQLite PRAGMA synchronous; FULL survives power loss (default: %(default)s)",
    )
    serve.add_argument(
        "--recount-queues",
        action="store_true",
        help="rebuild the queue statistics' job counts from the jobs at start-up (one scan of "
        "every job); only needed after the jobs table was edited by hand",
    )
    serve.add_argument(
        "--db-pool-size",
        type=int,
        default=DEFAULT_DB_POOL_SIZE,
        help="PostgreSQL: reader connections per coordinator, besides its one writer "
        "(default: %(default)s)",
    )
    serve.add_argument(
        "--db-statement-timeout",
        type=float,
        default=DEFAULT_DB_STATEMENT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="PostgreSQL: the server cancels a statement running longer; 0 for no limit "
        "(default: %(default)s)",
    )
    serve.add_argument(
        "--max-payload-bytes",
        type=int,
        default=256 * 1024,
        help="largest payload, result or checkpoint (default: %(default)s)",
    )
    serve.add_argument(
        "--max-depth",
        type=int,
        default=16,
        help="deepest parent_job_id chain accepted (default: %(default)s)",
    )
    serve.add_argument(
        "--log-format",
        default="logfmt",
        choices=["logfmt", "json"],
        help="log line format (default: %(default)s)",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="lowest level logged; info logs every job transition (default: %(default)s)",
    )
    serve.add_argument(
        "--shutdown-grace",
        type=float,
        default=10.0,
        help="seconds in-flight calls may run after SIGTERM (default: %(default)s)",
    )
    serve.add_argument(
        "--http-listen",
        default=None,
        metavar="HOST:PORT",
        help="also serve the HTTP/JSON API (and /v1/openapi.json) here (default: off)",
    )
    serve.add_argument(
        "--http-max-body-bytes",
        type=int,
        default=DEFAULT_HTTP_MAX_BODY_BYTES,
        help="largest HTTP request body; larger ones are 413 (default: %(default)s)",
    )
    serve.add_argument(
        "--metrics-listen",
        metavar="[HOST]:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (off unless given; "
        "host defaults to 127.0.0.1)",
    )
    serve.add_argument(
        "--dashboard-listen",
        metavar="[HOST]:PORT",
        help="serve the web dashboard (off unless given; host defaults to 127.0.0.1; with "
        "--auth it asks for an admin token, without it has no login, so keep it on loopback "
        "or behind an authenticating proxy)",
    )
    _add_security_flags(serve)
    serve.set_defaults(handler=_serve)


def _add_security_flags(serve: argparse.ArgumentParser) -> None:
    security = serve.add_argument_group("security (see the README's Security section)")
    security.add_argument(
        "--auth",
        action="store_true",
        help="require a bearer token (conveyor tokens create) on every RPC, HTTP/JSON route, "
        "/metrics (any role) and dashboard page (admin)",
    )
    security.add_argument(
        "--auth-health",
        action="store_true",
        help="require a token for the gRPC health service too (default: open, for probes)",
    )
    security.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate chain")
    security.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    security.add_argument(
        "--tls-client-ca",
        metavar="PEM",
        help="mutual TLS: require client certificates signed by these CAs",
    )
    security.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback --listen without TLS and tokens (a trusted network only)",
    )
    security.add_argument(
        "--max-long-polls",
        type=int,
        default=1000,
        help="long-polls one principal may hold open, with --auth; 0: no limit "
        "(default: %(default)s)",
    )
    security.add_argument(
        "--enqueue-rate",
        type=float,
        default=1000.0,
        help="jobs per second one principal may enqueue, with --auth; 0: no limit "
        "(default: %(default)s)",
    )
    security.add_argument(
        "--enqueue-burst",
        type=int,
        default=2000,
        help="jobs one principal may enqueue at once above the rate (default: %(default)s)",
    )


def _add_reencrypt(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reencrypt = commands.add_parser(
        "reencrypt",
        help="rewrite payloads, results and checkpoints under the current encryption key",
        description="Key rotation: rewrites, in batches, every payload, result and checkpoint "
        "not sealed under the first key of CONVEYOR_ENCRYPTION_KEYS (older keys, or plaintext "
        "from before encryption). Coordinators may keep running. Afterwards the old keys can "
        "be removed from CONVEYOR_ENCRYPTION_KEYS.",
    )
    reencrypt.add_argument(
        "--db", default=DEFAULT_DB_URL, help="database URL (default: %(default)s)"
    )
    reencrypt.add_argument(
        "--batch",
        type=int,
        default=500,
        help="rows per transaction (default: %(default)s)",
    )
    reencrypt.set_defaults(handler=_reencrypt)


def _reencrypt(args: argparse.Namespace) -> int:
    from conveyor_server.encryption import KEYS_VARIABLE, AesGcmCodec
    from conveyor_server.store.reencrypt import reencrypt

    try:
        keys = keyring_from_env()
    except ConfigError as error:
        print(f"conveyor reencrypt: {error}", file=sys.stderr)
        return 2
    if keys is None:
        print(f"conveyor reencrypt: set {KEYS_VARIABLE} (the first key seals)", file=sys.stderr)
        return 2
    if not 1 <= args.batch <= 100_000:
        print("conveyor reencrypt: --batch must be between 1 and 100000", file=sys.stderr)
        return 2
    done = reencrypt(args.db, AesGcmCodec(keys), args.batch)
    print(
        f"rows read: {done.rows_read}, values rewritten under key {keys.current_id!r}: "
        f"{done.values_rewritten}, changed meanwhile: {done.values_changed_meanwhile}, "
        f"unreadable (key not configured): {done.values_unreadable}"
    )
    return 1 if done.values_unreadable else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conveyor", description="Conveyor: a durable background-job coordinator."
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_serve(commands)
    add_token_commands(commands)
    _add_reencrypt(commands)
    add_client_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
