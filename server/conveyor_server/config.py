"""Server configuration: one frozen object built by the CLI (or a test) and passed down."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conveyor_server.encryption import Keyring

DEFAULT_LISTEN = "127.0.0.1:7345"
DEFAULT_DB_URL = "sqlite:///conveyor.db"
# Largest gRPC message in either direction (main.py sets the transport to this).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# A Job reply carries payload, result and checkpoint (each up to max_payload_bytes) plus up to
# 100 attempts with 16 KiB error messages (under 2 MiB) and a few small fields: room for all
# of it keeps every reply under MAX_MESSAGE_BYTES.
ENVELOPE_BYTES = 4 * 1024 * 1024
MAX_PAYLOAD_LIMIT = (MAX_MESSAGE_BYTES - ENVELOPE_BYTES) // 3  # 20 MiB
MAX_MAX_DEPTH = 10_000
# Largest HTTP/JSON request body by default: base64 makes a payload 4/3 as large, so this
# holds a batch of about 45 jobs at the default 256 KiB payload limit.
DEFAULT_HTTP_MAX_BODY_BYTES = 16 * 1024 * 1024


def http_listen(value: str) -> str:
    """`:9464` or `9464` means loopback: the HTTP endpoints are off the network unless a
    host is named."""
    if value.isdigit():
        return f"127.0.0.1:{value}"
    if value.startswith(":"):
        return f"127.0.0.1{value}"
    return value


def _valid_listen(value: str) -> bool:
    host, sep, port = value.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 <= int(port) <= 65535)


# PostgreSQL: reader connections per coordinator (its writer holds one more), and how long
# one statement may run before the server cancels it. See store/dialects.py for the why.
DEFAULT_DB_POOL_SIZE = 4
MAX_DB_POOL_SIZE = 100
DEFAULT_DB_STATEMENT_TIMEOUT_SECONDS = 30.0
MAX_DB_STATEMENT_TIMEOUT_SECONDS = 3600.0


class ConfigError(ValueError):
    """A setting out of range; the message names the option and says what is allowed."""


@dataclass(frozen=True)
class ServerConfig:
    # SQLAlchemy URL of the store: sqlite:///path.db (default), or postgresql://user@host/db
    # (several coordinators may share one PostgreSQL database).
    db_url: str = DEFAULT_DB_URL
    # host:port to listen on; port 0 picks a free port (see Coordinator.address).
    listen: str = DEFAULT_LISTEN
    # SQLite PRAGMA synchronous: FULL survives power loss; NORMAL only process crashes.
    sqlite_synchronous: str = "FULL"
    # Rebuild the maintained job counts (store/counts.py) from the jobs at start-up: one scan
    # of every job (seconds at a million), needed only after the jobs table was changed by
    # hand, outside the coordinator; the transitions keep the counts exact themselves.
    recount_queues: bool = False
    # Largest payload, result or checkpoint accepted, in bytes.
    max_payload_bytes: int = 256 * 1024
    # Deepest chain of parent_job_id links accepted.
    max_depth: int = 16
    # Log format: "logfmt" or "json"; level: debug, info, warning, error.
    log_format: str = "logfmt"
    log_level: str = "info"
    # How long in-flight RPCs may run after SIGTERM before they are cut.
    shutdown_grace_seconds: float = 10.0
    # Most jobs one writer transaction takes at once (group commit size).
    max_write_batch: int = 1000
    # host:port of the HTTP/JSON API (api/http); None: no HTTP API.
    http_listen: str | None = None
    # Largest HTTP request body accepted, in bytes; a larger one is 413.
    http_max_body_bytes: int = DEFAULT_HTTP_MAX_BODY_BYTES
    # host:port of the Prometheus /metrics endpoint; None: off.
    metrics_listen: str | None = None
    # host:port of the web dashboard; None: off. Without --auth it has no login: keep it on
    # loopback (the default host when only a port is given) or behind an authenticating proxy.
    # With --auth it needs an admin token (and /metrics a token of any role).
    dashboard_listen: str | None = None
    # PostgreSQL only: reader connections per coordinator; statement timeout (0: none).
    db_pool_size: int = DEFAULT_DB_POOL_SIZE
    db_statement_timeout_seconds: float = DEFAULT_DB_STATEMENT_TIMEOUT_SECONDS
    # Bearer tokens checked on every RPC (`--auth`); the health service too with auth_health.
    auth: bool = False
    auth_health: bool = False
    # TLS: PEM files of the server's certificate chain and key; with tls_client_ca, clients
    # must present a certificate signed by it (mutual TLS).
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    # Allows a non-loopback listen address without tokens and TLS (`--insecure`).
    insecure: bool = False
    # Limits per principal (with auth): long-polls open at once (0: none), enqueue jobs/s and
    # burst (rate 0: none).
    max_long_polls: int = 1000
    enqueue_rate: float = 1000.0
    enqueue_burst: int = 2000
    # Encryption at rest of payloads, results and checkpoints (CONVEYOR_ENCRYPTION_KEYS, read
    # by `conveyor serve`: encryption.keyring_from_env); None: stored as they are.
    encryption: Keyring | None = None

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError("; ".join(problems))

    def problems(self) -> list[str]:
        """Each setting out of range, named as its `conveyor serve` flag."""
        found = []
        if not 1 <= self.max_payload_bytes <= MAX_PAYLOAD_LIMIT:
            found.append(
                f"--max-payload-bytes must be between 1 and {MAX_PAYLOAD_LIMIT} (20 MiB: a job "
                f"reply carries payload, result and checkpoint in one {MAX_MESSAGE_BYTES}-byte "
                f"message), not {self.max_payload_bytes}"
            )
        if not 0 <= self.max_depth <= MAX_MAX_DEPTH:
            found.append(f"--max-depth must be between 0 and {MAX_MAX_DEPTH}, not {self.max_depth}")
        grace = self.shutdown_grace_seconds
        if not (math.isfinite(grace) and 0 <= grace <= 3600):
            found.append(f"--shutdown-grace must be between 0 and 3600 seconds, not {grace}")
        for flag, value in (
            ("--metrics-listen", self.metrics_listen),
            ("--dashboard-listen", self.dashboard_listen),
        ):
            if value is not None and not _valid_listen(value):
                found.append(f"{flag} must be host:port or :port, not {value[:64]!r}")
        if self.max_write_batch < 1:
            found.append(f"max_write_batch must be at least 1, not {self.max_write_batch}")
        if not 1024 <= self.http_max_body_bytes <= 4 * MAX_MESSAGE_BYTES:
            found.append(
                f"--http-max-body-bytes must be between 1024 and {4 * MAX_MESSAGE_BYTES}, "
                f"not {self.http_max_body_bytes}"
            )
        if self.http_listen is not None and not _is_host_port(self.http_listen):
            found.append(f"--http-listen must be host:port, not {self.http_listen[:100]!r}")
        if not 1 <= self.db_pool_size <= MAX_DB_POOL_SIZE:
            found.append(
                f"--db-pool-size must be between 1 and {MAX_DB_POOL_SIZE}, not {self.db_pool_size}"
            )
        timeout = self.db_statement_timeout_seconds
        if not (math.isfinite(timeout) and 0 <= timeout <= MAX_DB_STATEMENT_TIMEOUT_SECONDS):
            found.append(
                "--db-statement-timeout must be between 0 (no limit) and "
                f"{MAX_DB_STATEMENT_TIMEOUT_SECONDS:g} seconds, not {timeout}"
            )
        found.extend(self._security_problems())
        return found

    def _security_problems(self) -> list[str]:
        found = []
        if (self.tls_cert is None) != (self.tls_key is None):
            found.append("--tls-cert and --tls-key go together: give both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            found.append("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS)")
        if self.auth_health and not self.auth:
            found.append("--auth-health needs --auth")
        if self.max_long_polls < 0:
            found.append(f"--max-long-polls must be at least 0, not {self.max_long_polls}")
        if not (math.isfinite(self.enqueue_rate) and 0 <= self.enqueue_rate <= 1e9):
            rate = self.enqueue_rate
            found.append(f"--enqueue-rate must be between 0 and 1e9 jobs/s, not {rate}")
        if not 1 <= self.enqueue_burst <= 1_000_000:
            burst = self.enqueue_burst
            found.append(f"--enqueue-burst must be between 1 and 1000000, not {burst}")
        if self.http_listen is not None and not (self.insecure or is_loopback(self.http_listen)):
            found.append(
                f"--http-listen {self.http_listen[:64]} is reachable from other machines and the "
                "HTTP/JSON API serves no TLS (tokens and payloads would cross the network in "
                "clear): listen on 127.0.0.1 behind a TLS-terminating proxy, or pass --insecure "
                "if the network itself is trusted"
            )
        secured = self.tls_cert is not None and (self.auth or self.tls_client_ca is not None)
        if not (self.insecure or secured or is_loopback(self.listen)):
            found.append(
                f"--listen {self.listen} is reachable from other machines, and without TLS and "
                "tokens (--tls-cert/--tls-key with --auth or --tls-client-ca) anyone who can "
                "reach it may read every payload and run or cancel any job; secure it, listen on "
                "127.0.0.1, or pass --insecure if the network itself is trusted"
            )
        return found


def _is_host_port(value: str) -> bool:
    host, _, port = value.rpartition(":")
    return bool(host) and port.isdigit() and int(port) <= 65535


def is_loopback(listen: str) -> bool:
    """Whether host:port only accepts connections from this machine."""
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost, or a wildcard: assume reachable
