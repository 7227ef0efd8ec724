"""Server configuration: one frozen object built by the CLI (or a test) and passed down."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

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


class ConfigError(ValueError):
    """A setting out of range; the message names the option and says what is allowed."""


@dataclass(frozen=True)
class ServerConfig:
    # SQLAlchemy URL of the store: sqlite:///path.db (default).
    db_url: str = DEFAULT_DB_URL
    # host:port to listen on; port 0 picks a free port (see Coordinator.address).
    listen: str = DEFAULT_LISTEN
    # SQLite PRAGMA synchronous: FULL survives power loss; NORMAL only process crashes.
    sqlite_synchronous: str = "FULL"
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
        if self.max_write_batch < 1:
            found.append(f"max_write_batch must be at least 1, not {self.max_write_batch}")
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
        secured = self.tls_cert is not None and (self.auth or self.tls_client_ca is not None)
        if not (self.insecure or secured or is_loopback(self.listen)):
            found.append(
                f"--listen {self.listen} is reachable from other machines, and without TLS and "
                "tokens (--tls-cert/--tls-key with --auth or --tls-client-ca) anyone who can "
                "reach it may read every payload and run or cancel any job; secure it, listen on "
                "127.0.0.1, or pass --insecure if the network itself is trusted"
            )
        return found


def is_loopback(listen: str) -> bool:
    """Whether host:port only accepts connections from this machine."""
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost, or a wildcard: assume reachable
