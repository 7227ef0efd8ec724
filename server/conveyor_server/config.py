"""Server configuration: one frozen object built by the CLI (or a test) and passed down."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_LISTEN = "127.0.0.1:7345"
DEFAULT_DB_URL = "sqlite:///conveyor.db"


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
