"""T16 field-encryption edges that ``nox -s mutants -- store/crypto.py`` left open.

The wire format is pinned by opening a sealed value with ``AESGCM`` directly (SP 800-38D, the
associated data ``org ␟ table ␟ row``); length checks are tested at their edge (an empty
plaintext is exactly nonce + tag); each configuration error names its cause exactly; a key id
that is not ASCII is a decryption failure, never a ``UnicodeDecodeError``.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from teams_ehr.errors import ConfigurationError, StorageError, UsageError
from teams_ehr.store.crypto import DEFAULT_KEY_ID, FieldCipher, new_encryption_key

KEY_1, KEY_2 = bytes(range(32)), bytes(range(1, 33))
WHERE = {"org_id": "org-a", "table": "meetings", "row_key": "ext-1"}
FAILED = "stored value cannot be decrypted"


def test_wire_format_opens_with_aesgcm_directly() -> None:
    sealed = FieldCipher({"kid-7": KEY_1}).encrypt(b"secret", **WHERE)
    assert sealed[:2] == bytes((1, 5))
    assert sealed[2:7] == b"kid-7"
    nonce, body = sealed[7:19], sealed[19:]
    assert len(body) == len(b"secret") + 16
    opened = AESGCM(KEY_1).decrypt(nonce, body, b"org-a\x1fmeetings\x1fext-1")
    assert opened == b"secret"


def test_the_active_key_seals_and_every_key_opens() -> None:
    cipher = FieldCipher({"k1": KEY_1, "k2": KEY_2}, active="k1")
    assert cipher.active_key_id == "k1"
    sealed = cipher.encrypt(b"v", **WHERE)
    assert cipher.key_id_of(sealed) == "k1"
    assert FieldCipher({"k1": KEY_1}).decrypt(sealed, **WHERE) == b"v"
    assert FieldCipher(KEY_1).active_key_id == DEFAULT_KEY_ID


def test_empty_plaintext_is_exactly_nonce_plus_tag() -> None:
    cipher = FieldCipher(KEY_1)
    sealed = cipher.encrypt(b"", **WHERE)
    assert len(sealed) == 2 + 2 + 12 + 16
    assert cipher.decrypt(sealed, **WHERE) == b""
    with pytest.raises(StorageError) as info:
        cipher.decrypt(sealed[:-1], **WHERE)
    assert (info.value.reason, str(info.value)) == ("decrypt_failed", FAILED)


@pytest.mark.parametrize(
    "bad",
    [b"", b"\x01", b"\x00\x02k0", b"\x02\x02k0" + bytes(28), b"\x01\x02\xff\xfe" + bytes(28)],
    ids=["empty", "one-byte", "version-0", "version-2", "non-ascii-kid"],
)
def test_undecryptable_values_fail_the_same_way(bad: bytes) -> None:
    cipher = FieldCipher({"k0": KEY_1, "kx": KEY_2}, active="k0")
    with pytest.raises(StorageError) as info:
        cipher.decrypt(bad, **WHERE)
    assert (info.value.reason, str(info.value)) == ("decrypt_failed", FAILED)
    assert info.value.__cause__ is None


def test_key_id_of_edges() -> None:
    cipher = FieldCipher(KEY_1)
    assert cipher.key_id_of(b"\x01\x00") == ""
    assert cipher.key_id_of(b"\x01\x02\xffk") == "\ufffdk"  # never raises on stored bytes
    for bad in (b"", b"\x01", b"\x02\x02k0"):
        with pytest.raises(StorageError) as info:
            cipher.key_id_of(bad)
        assert (info.value.reason, str(info.value)) == ("decrypt_failed", FAILED)


@pytest.mark.parametrize("part", ["org_id", "table", "row_key"])
def test_separator_in_any_part_is_refused(part: str) -> None:
    cipher = FieldCipher(KEY_1)
    where = {**WHERE, part: "a\x1fb"}
    for call in (cipher.encrypt, cipher.decrypt):
        with pytest.raises(UsageError) as info:
            call(b"\x01\x02k0" + bytes(40), **where)
        assert (info.value.reason, str(info.value)) == (
            "bad_aad",
            "associated data must not contain U+001F",
        )


@pytest.mark.parametrize(
    ("keys", "active", "message"),
    [
        ({}, None, "no encryption key given"),
        ({"k1": KEY_1, "k2": KEY_2}, None, "name the active key id"),
        ({"k1": KEY_1}, "k9", "the active key id is not among the keys"),
        ({"bad id!": KEY_1}, None, "key ids are 1-64 of [A-Za-z0-9._-]"),
        ({"k" * 65: KEY_1}, None, "key ids are 1-64 of [A-Za-z0-9._-]"),
        ({"k1": KEY_1[:31]}, None, "encryption keys are 32 bytes"),
        ({"k1": KEY_1 + b"\x00"}, None, "encryption keys are 32 bytes"),
        ({"k1": "x" * 32}, None, "encryption keys are 32 bytes"),
    ],
)
def test_configuration_errors_name_their_cause(
    keys: dict[str, object], active: str | None, message: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        FieldCipher(keys, active=active)  # type: ignore[arg-type]
    assert (info.value.reason, str(info.value)) == ("encryption_key", message)


def test_longest_key_id_and_a_fresh_key() -> None:
    kid = "k" * 64
    cipher = FieldCipher({kid: new_encryption_key()})
    assert cipher.key_id_of(cipher.encrypt(b"v", **WHERE)) == kid
    assert len(new_encryption_key()) == 32
    assert new_encryption_key() != new_encryption_key()


def test_key_ids_are_read_as_ascii_only() -> None:
    # "é" in UTF-8: a key id is ASCII, so these bytes never name a key, whatever they spell.
    assert FieldCipher(KEY_1).key_id_of(b"\x01\x02\xc3\xa9") == "\ufffd\ufffd"


def test_a_tampered_tag_fails_with_the_same_message() -> None:
    cipher = FieldCipher(KEY_1)
    sealed = bytearray(cipher.encrypt(b"secret", **WHERE))
    sealed[-1] ^= 1
    with pytest.raises(StorageError) as info:
        cipher.decrypt(bytes(sealed), **WHERE)
    assert (info.value.reason, str(info.value)) == ("decrypt_failed", FAILED)
    assert info.value.__cause__ is None
