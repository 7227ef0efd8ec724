"""How the store keeps a job's payload, result and checkpoint: through a codec, which seals a
value before it is written and opens it after it is read (encryption at rest when keys are
configured: conveyor_server/encryption.py). The SQL functions never see a key.

A stored value starts with a header when it is sealed:

    MAGIC (4 bytes, b"\\x89CVE") | version (1 byte) | ...

version 0: the rest is the plaintext (a plaintext value that itself starts with MAGIC, so
that it is never mistaken for a sealed one); version 1: AES-GCM (see encryption.py). A value
without the header is plaintext: rows written before encryption was turned on still read.
0x89 is never the first byte of UTF-8 text, and the magic is long enough that binary values
written before this header existed do not start with it by chance (2^-32 each).

The codec rides on the store's engines (`attach`), so that the statement functions, which
get only a Connection, find it with `codec_of(conn)` without a parameter through every call.
"""

from __future__ import annotations

import weakref
from typing import Protocol

from sqlalchemy.engine import Connection, Engine

from conveyor_server.errors import FailedPrecondition, shown

MAGIC = b"\x89CVE"
PLAIN_VERSION = 0
AES_GCM_VERSION = 1
# The job fields a codec seals; each is bound to its job and field (see associated_data). A
# schedule's "job_spec" (its job template, with a payload) is bound to the schedule's name.
FIELDS = ("payload", "result", "checkpoint")
SCHEDULE_FIELD = "job_spec"


class BlobUnreadable(FailedPrecondition):
    """A stored value cannot be opened: its key is not configured, or it does not
    authenticate (tampered, or moved from another job). Never carries the value or a key."""


class BlobCodec(Protocol):
    """`job_id` names the value's owner: a job's id, or a schedule's name for job_spec."""

    def seal(self, job_id: str, field: str, value: bytes | None) -> bytes | None:
        """The bytes to store for `value` of job `job_id`'s `field` (None stays None)."""
        ...

    def open(self, job_id: str, field: str, stored: bytes | None) -> bytes | None:
        """The value stored as `stored`; BlobUnreadable when it cannot be."""
        ...

    def current(self, stored: bytes) -> bool:
        """Whether `stored` is already as this codec would seal it now (the current key)."""
        ...


def associated_data(job_id: str, field: str) -> bytes:
    """What a sealed value is bound to: moved to another job or field it does not open."""
    return b"conveyor-blob\x00" + field.encode() + b"\x00" + job_id.encode()


def version_of(stored: bytes) -> int | None:
    """The header's version, or None for a value without a header (plaintext)."""
    if len(stored) > len(MAGIC) and stored.startswith(MAGIC):
        return stored[len(MAGIC)]
    return None


def plain_sealed(value: bytes) -> bytes:
    """A plaintext value as stored: as it is, unless it starts with the magic."""
    if value.startswith(MAGIC):
        return MAGIC + bytes([PLAIN_VERSION]) + value
    return value


def plain_opened(stored: bytes) -> bytes | None:
    """The value of a plaintext `stored` (without a header, or with version 0's), None when
    it is sealed: every codec reads plaintext, so rows written before encryption still read."""
    version = version_of(stored)
    if version is None:
        return stored
    if version == PLAIN_VERSION:
        return stored[len(MAGIC) + 1 :]
    return None


def unreadable(job_id: str, field: str, why: str) -> BlobUnreadable:
    what = (
        f"the job template of schedule {shown(job_id)}"
        if field == SCHEDULE_FIELD
        else f"the {field} of job {shown(job_id)}"
    )
    return BlobUnreadable(f"{what} cannot be read: {why}. See 'Encryption at rest' in the README")


class PlainCodec:
    """No encryption: values are stored as they are. A value sealed under a key does not
    open (the keys are not configured), with an error that says so."""

    def seal(self, job_id: str, field: str, value: bytes | None) -> bytes | None:
        return None if value is None else plain_sealed(value)

    def open(self, job_id: str, field: str, stored: bytes | None) -> bytes | None:
        if stored is None:
            return None
        value = plain_opened(stored)
        if value is not None:
            return value
        raise unreadable(
            job_id,
            field,
            "it is encrypted and this coordinator has no encryption keys "
            "(set CONVEYOR_ENCRYPTION_KEYS)",
        )

    def current(self, stored: bytes) -> bool:
        return version_of(stored) in (None, PLAIN_VERSION)


PLAIN = PlainCodec()

_CODECS: weakref.WeakKeyDictionary[Engine, BlobCodec] = weakref.WeakKeyDictionary()


def attach(engine: Engine, codec: BlobCodec) -> None:
    """Makes `codec` the one every connection of `engine` seals and opens with."""
    _CODECS[engine] = codec


def codec_of(conn: Connection) -> BlobCodec:
    return _CODECS.get(conn.engine, PLAIN)
