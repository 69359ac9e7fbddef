"""Field encryption: AES-256-GCM bound to (org, table, row), versioned keys (T16)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leaks import assert_no_leak
from teams_ehr.errors import ConfigurationError, StorageError, UsageError
from teams_ehr.store.crypto import DEFAULT_KEY_ID, FieldCipher, new_encryption_key

KEY_1, KEY_2 = bytes(range(32)), bytes(range(1, 33))
WHERE = {"org_id": "org-a", "table": "meetings", "row_key": "ext-1"}
SECRET = b"https://teams.microsoft.com/l/meetup-join/CANARY-join"


def test_roundtrip_with_fresh_nonce() -> None:
    cipher = FieldCipher(KEY_1)
    first, second = cipher.encrypt(SECRET, **WHERE), cipher.encrypt(SECRET, **WHERE)
    assert first != second
    assert SECRET not in first
    assert cipher.decrypt(first, **WHERE) == SECRET
    assert cipher.key_id_of(first) == DEFAULT_KEY_ID


@pytest.mark.parametrize(
    "moved",
    [
        {"org_id": "org-b"},
        {"table": "subscriptions"},
        {"row_key": "ext-2"},
        {"org_id": "org-a\x1f", "table": "x"},
    ],
)
def test_value_bound_to_org_table_and_row(moved: dict[str, str]) -> None:
    cipher = FieldCipher(KEY_1)
    sealed = cipher.encrypt(SECRET, **WHERE)
    with pytest.raises((StorageError, UsageError)) as err:
        cipher.decrypt(sealed, **{**WHERE, **moved})
    assert err.value.reason in {"decrypt_failed", "bad_aad"}
    assert_no_leak([SECRET.decode(), "CANARY"], err.value)


def test_tampering_and_garbage_fail_without_data() -> None:
    cipher = FieldCipher(KEY_1)
    sealed = bytearray(cipher.encrypt(SECRET, **WHERE))
    sealed[-1] ^= 1
    for bad in (bytes(sealed), b"", b"\x01", b"\x02\x02k0" + bytes(40), b"\x01\x02k0"):
        with pytest.raises(StorageError) as err:
            cipher.decrypt(bad, **WHERE)
        assert err.value.reason == "decrypt_failed"
        assert err.value.__cause__ is None
        assert_no_leak(["CANARY"], err.value)


def test_other_key_cannot_decrypt() -> None:
    sealed = FieldCipher(KEY_1).encrypt(SECRET, **WHERE)
    with pytest.raises(StorageError):
        FieldCipher(KEY_2).decrypt(sealed, **WHERE)


def test_key_rotation_reads_old_rows_writes_new_key() -> None:
    old = FieldCipher({"k1": KEY_1}, active="k1").encrypt(SECRET, **WHERE)
    rotated = FieldCipher({"k1": KEY_1, "k2": KEY_2}, active="k2")
    assert rotated.decrypt(old, **WHERE) == SECRET
    fresh = rotated.encrypt(SECRET, **WHERE)
    assert rotated.key_id_of(fresh) == "k2"
    with pytest.raises(StorageError):  # the retired key is gone: old rows no longer open
        FieldCipher({"k2": KEY_2}).decrypt(old, **WHERE)


@pytest.mark.parametrize(
    ("keys", "active"),
    [
        (b"short", None),
        ({}, None),
        ({"k1": KEY_1, "k2": KEY_2}, None),
        ({"k1": KEY_1}, "k9"),
        ({"bad id!": KEY_1}, None),
        ({"k1": "not-bytes"}, None),
    ],
)
def test_bad_keys_are_configuration_errors(keys: object, active: str | None) -> None:
    with pytest.raises(ConfigurationError):
        FieldCipher(keys, active=active)  # type: ignore[arg-type]


def test_repr_shows_key_ids_only() -> None:
    key = new_encryption_key()
    assert len(key) == 32
    cipher = FieldCipher({"prod-2026": key})
    assert repr(cipher) == "FieldCipher(key_ids=['prod-2026'], active='prod-2026')"
    assert key.hex() not in repr(cipher)


@given(
    plaintext=st.binary(max_size=256),
    org=st.text(min_size=1, max_size=20).filter(lambda s: "\x1f" not in s),
    row=st.text(min_size=1, max_size=20).filter(lambda s: "\x1f" not in s),
)
def test_roundtrip_property(plaintext: bytes, org: str, row: str) -> None:
    cipher = FieldCipher(KEY_1)
    where = {"org_id": org, "table": "inbox", "row_key": row}
    assert cipher.decrypt(cipher.encrypt(plaintext, **where), **where) == plaintext
