"""Field encryption at rest (requirement C5; threat T16 and invariant I6).

Columns that hold secrets or PHI-bearing values (``payload``, ``join_url``, ``client_state``) are
sealed with AES-256-GCM (NIST SP 800-38D) through ``cryptography``'s ``AESGCM``:

* a fresh random 96-bit nonce per value (SP 800-38D §8.2.2, random construction);
* associated data ``org_id ␟ table ␟ row_key`` (U+001F between the parts), so a ciphertext copied
  into another organization's row, another table or another row fails authentication;
* versioned keys: every ciphertext starts with its key id, so keys rotate without rewriting rows
  (``FieldCipher({"k2": new, "k1": old}, active="k2")`` writes with ``k2`` and reads both).

Wire format of a sealed value::

    0x01 | len(kid) (1 byte) | kid (ASCII) | nonce (12 bytes) | ciphertext ‖ tag (16 bytes)

A failed decryption raises :class:`~teams_ehr.errors.StorageError` with
``reason="decrypt_failed"`` and no data in the message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from teams_ehr.errors import ConfigurationError, StorageError, UsageError

__all__ = ["DEFAULT_KEY_ID", "FieldCipher", "new_encryption_key"]

DEFAULT_KEY_ID = "k0"
"""Key id used when :class:`FieldCipher` is given one bare key."""

_FORMAT_VERSION = 1
_NONCE_BYTES = 12
_TAG_BYTES = 16
_KEY_BYTES = 32
_SEPARATOR = "\x1f"
_KID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def new_encryption_key() -> bytes:
    """A new random 256-bit AES key (from the OS CSPRNG)."""
    return AESGCM.generate_key(bit_length=256)


def _associated_data(org_id: str, table: str, row_key: str) -> bytes:
    for part in (org_id, table, row_key):
        if _SEPARATOR in part:
            raise UsageError("associated data must not contain U+001F", reason="bad_aad")
    return _SEPARATOR.join((org_id, table, row_key)).encode("utf-8")


class FieldCipher:
    """AES-256-GCM for single column values, bound to ``(org_id, table, row_key)``.

    ``keys`` is one 32-byte key (its id is :data:`DEFAULT_KEY_ID`) or a mapping of key id to
    key; ``active`` names the key that encrypts (required when there are several keys).
    """

    __slots__ = ("_active", "_aeads")

    def __init__(self, keys: bytes | Mapping[str, bytes], *, active: str | None = None) -> None:
        key_map = {DEFAULT_KEY_ID: keys} if isinstance(keys, bytes) else dict(keys)
        if not key_map:
            raise ConfigurationError("no encryption key given", reason="encryption_key")
        if active is None:
            if len(key_map) != 1:
                raise ConfigurationError("name the active key id", reason="encryption_key")
            active = next(iter(key_map))
        if active not in key_map:
            raise ConfigurationError(
                "the active key id is not among the keys", reason="encryption_key"
            )
        self._aeads: dict[str, AESGCM] = {}
        for kid, key in key_map.items():
            if not _KID.fullmatch(kid):
                raise ConfigurationError(
                    "key ids are 1-64 of [A-Za-z0-9._-]", reason="encryption_key"
                )
            if not isinstance(key, bytes) or len(key) != _KEY_BYTES:
                raise ConfigurationError("encryption keys are 32 bytes", reason="encryption_key")
            self._aeads[kid] = AESGCM(key)
        self._active = active

    @property
    def active_key_id(self) -> str:
        return self._active

    def __repr__(self) -> str:
        return f"FieldCipher(key_ids={sorted(self._aeads)!r}, active={self._active!r})"

    def encrypt(self, plaintext: bytes, *, org_id: str, table: str, row_key: str) -> bytes:
        """Seal ``plaintext`` for one column of one row with the active key."""
        aad = _associated_data(org_id, table, row_key)
        nonce = os.urandom(_NONCE_BYTES)
        kid = self._active.encode("ascii")
        sealed = self._aeads[self._active].encrypt(nonce, plaintext, aad)
        return bytes((_FORMAT_VERSION, len(kid))) + kid + nonce + sealed

    def decrypt(self, ciphertext: bytes, *, org_id: str, table: str, row_key: str) -> bytes:
        """Open a value sealed by :meth:`encrypt` for the same ``(org_id, table, row_key)``."""
        aad = _associated_data(org_id, table, row_key)
        data = bytes(ciphertext)
        if len(data) < 2 or data[0] != _FORMAT_VERSION:
            raise StorageError("stored value cannot be decrypted", reason="decrypt_failed")
        kid_end = 2 + data[1]
        aead = self._aeads.get(data[2:kid_end].decode("ascii", errors="replace"))
        body = data[kid_end:]
        if aead is None or len(body) < _NONCE_BYTES + _TAG_BYTES:
            raise StorageError("stored value cannot be decrypted", reason="decrypt_failed")
        try:
            return aead.decrypt(body[:_NONCE_BYTES], body[_NONCE_BYTES:], aad)
        except InvalidTag:
            raise StorageError(
                "stored value cannot be decrypted", reason="decrypt_failed"
            ) from None

    def key_id_of(self, ciphertext: bytes) -> str:
        """The key id a stored value was sealed with (for re-encryption after rotation)."""
        data = bytes(ciphertext)
        if len(data) < 2 or data[0] != _FORMAT_VERSION:
            raise StorageError("stored value cannot be decrypted", reason="decrypt_failed")
        return data[2 : 2 + data[1]].decode("ascii", errors="replace")
