"""Encryption at rest of payloads, results and checkpoints: AES-GCM with keys from the
environment, as a codec the store is given (store/blobs.py). Off unless keys are set.

CONVEYOR_ENCRYPTION_KEYS="kid1:BASE64KEY,kid2:BASE64KEY": the first key seals every new
value, every key listed opens; so rotation is "put the new key first, keep the old one until
`conveyor reencrypt` has rewritten the rows" (README, "Encryption at rest").

A sealed value: MAGIC | 1 | len(kid) | kid | nonce (12 bytes) | ciphertext and 16-byte tag.
The associated data is the header and the job id and field, so a value copied to another job
or field, or a header edited to name another key, does not open. A fresh random 96-bit nonce
per value: under one key, 2^32 values keep the chance of a repeat below 2^-32 (NIST SP
800-38D); rotate well before that many writes (about 4 billion payloads, results and
checkpoints)."""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from conveyor_server.config import ConfigError
from conveyor_server.store.blobs import (
    AES_GCM_VERSION,
    MAGIC,
    associated_data,
    plain_opened,
    unreadable,
    version_of,
)

KEYS_VARIABLE = "CONVEYOR_ENCRYPTION_KEYS"
NONCE_BYTES = 12
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_KEY_SIZES = (16, 24, 32)


@dataclass(frozen=True)
class Keyring:
    """Keys by id, the first one current. Its repr names the ids only."""

    ids: tuple[str, ...]
    _keys: Mapping[str, bytes] = field(repr=False)

    @property
    def current_id(self) -> str:
        return self.ids[0]

    def key(self, key_id: str) -> bytes | None:
        return self._keys.get(key_id)


def keyring_from_env(environ: Mapping[str, str] | None = None) -> Keyring | None:
    """The keys in CONVEYOR_ENCRYPTION_KEYS, None when it is unset or empty. A malformed
    value is a ConfigError naming the variable and the entry's position, never a key."""
    value = (os.environ if environ is None else environ).get(KEYS_VARIABLE, "").strip()
    if not value:
        return None
    ids: list[str] = []
    keys: dict[str, bytes] = {}
    for position, entry in enumerate(value.split(","), start=1):
        key_id, sep, encoded = entry.strip().partition(":")
        where = f"{KEYS_VARIABLE} entry {position}"
        if not sep or not _KEY_ID.fullmatch(key_id):
            raise ConfigError(
                f"{where} must be KEY_ID:BASE64_KEY with a key id of 1 to 32 letters, digits, "
                "'_', '.' or '-' (entries are separated by commas)"
            )
        if key_id in keys:
            raise ConfigError(f"{where}: key id {key_id!r} is listed twice")
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{where} (key id {key_id!r}): the key is not valid base64") from None
        if len(key) not in _KEY_SIZES:
            raise ConfigError(
                f"{where} (key id {key_id!r}): an AES key is 16, 24 or 32 bytes (32 "
                f"recommended: `openssl rand -base64 32`), not {len(key)}"
            )
        ids.append(key_id)
        keys[key_id] = key
    return Keyring(tuple(ids), keys)


class AesGcmCodec:
    """Seals with the keyring's current key; opens with any key in it, and plaintext."""

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring
        self._ciphers = {key_id: AESGCM(keyring.key(key_id) or b"") for key_id in keyring.ids}
        current = keyring.current_id.encode()
        self._header = MAGIC + bytes([AES_GCM_VERSION, len(current)]) + current

    def seal(self, job_id: str, field: str, value: bytes | None) -> bytes | None:
        if value is None:
            return None
        nonce = os.urandom(NONCE_BYTES)
        cipher = self._ciphers[self._keyring.current_id]
        header = self._header + nonce
        return header + cipher.encrypt(nonce, value, header + associated_data(job_id, field))

    def open(self, job_id: str, field: str, stored: bytes | None) -> bytes | None:
        if stored is None:
            return None
        value = plain_opened(stored)
        if value is not None:
            return value
        version = version_of(stored)
        if version != AES_GCM_VERSION:
            raise unreadable(job_id, field, f"its header names an unknown version {version}")
        key_id, body_at = _key_id(stored)
        if key_id is None:
            raise unreadable(job_id, field, "its encryption header is damaged")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise unreadable(
                job_id,
                field,
                f"it is encrypted with key id {key_id!r}, which is not in {KEYS_VARIABLE}; "
                "add that key (any position but the first opens)",
            )
        header = stored[: body_at + NONCE_BYTES]
        nonce = stored[body_at : body_at + NONCE_BYTES]
        try:
            return cipher.decrypt(
                nonce, stored[body_at + NONCE_BYTES :], header + associated_data(job_id, field)
            )
        except InvalidTag:
            raise unreadable(
                job_id,
                field,
                f"it does not authenticate under key id {key_id!r} (a different key with that "
                "id, or a value altered or moved from another job)",
            ) from None

    def current(self, stored: bytes) -> bool:
        return stored.startswith(self._header)


def _key_id(stored: bytes) -> tuple[str | None, int]:
    """The key id of a version-1 value and where its nonce starts."""
    at = len(MAGIC) + 1
    if len(stored) <= at:
        return None, 0
    length = stored[at]
    body_at = at + 1 + length
    if length == 0 or len(stored) < body_at + NONCE_BYTES + 16:
        return None, 0
    try:
        return stored[at + 1 : body_at].decode("ascii"), body_at
    except UnicodeDecodeError:
        return None, 0
