"""One coordinator per SQLite file: an exclusive advisory lock (flock) on a file beside the
database, taken when the store opens and released when it closes (or when the process dies:
the kernel drops a dead process's flocks, so a SIGKILL never leaves a stale lock).

Two coordinators on one SQLite file would be safe but poor: each long-poll misses the other's
enqueues and lease rescue runs late, so the second one refuses to start instead."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from conveyor_server.errors import DatabaseInUse

# The holder's description is for people; a lock file is never read beyond this.
_MAX_OWNER_CHARS = 200


class DatabaseLock:
    def __init__(self, path: Path, database: str) -> None:
        self._path = path
        self._database = database
        self._fd: int | None = None

    def acquire(self, owner: str) -> None:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, _MAX_OWNER_CHARS).decode(errors="replace").strip()
            os.close(fd)
            raise DatabaseInUse(
                f"another coordinator ({holder or 'unknown'}) is using the database "
                f"{self._database}: it holds the lock file {self._path}. Stop it first, or give "
                "this coordinator its own --db; one SQLite file serves one coordinator "
                "(several coordinators need PostgreSQL)"
            ) from None
        self._fd = fd
        self.describe(owner)

    def describe(self, owner: str) -> None:
        """Says who holds the lock, for the message a refused coordinator prints."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, owner[:_MAX_OWNER_CHARS].encode(), 0)

    def release(self) -> None:
        # The file stays: removing it could let a third coordinator lock a new file while a
        # second one waits on the old one.
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
