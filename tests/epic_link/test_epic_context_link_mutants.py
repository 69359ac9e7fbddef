"""Exact edges of Epic context-aware links (smart/epic_context_link.py, requirement A10, T20).

Every refusal is pinned with its exact ``reason`` and message, each limit at, just inside and
just outside its edge (encoded length, field count, Unix-timestamp digits, ``max_age``), and the
replay key's derivation is pinned because stored keys must stay valid across upgrades.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from epic_link_support import MemoryNonces

from teams_ehr.errors import ConfigurationError, ContextLinkError
from teams_ehr.smart.epic_context_link import (
    REPLAY_NAMESPACE,
    ContextLinkFormat,
    ContextLinkKey,
    decrypt_context_link,
    encrypt_context_link,
)

pytestmark = pytest.mark.anyio

KEY = bytes(range(32))
NOW = datetime(2025, 11, 26, 12, 0, 30, tzinfo=UTC)
STAMP = "1764158400"  # 2025-11-26T12:00:00Z
MAX_AGE = timedelta(minutes=5)


async def decrypt(link: str, **kw: Any) -> Any:
    return await decrypt_context_link(
        link,
        ContextLinkKey(kw.pop("key", KEY)),
        now=kw.pop("now", NOW),
        max_age=kw.pop("max_age", MAX_AGE),
        nonces=kw.pop("nonces", MemoryNonces()),
        **kw,
    )


async def refusal(link: str, **kw: Any) -> ContextLinkError:
    with pytest.raises(ContextLinkError) as info:
        await decrypt(link, **kw)
    return info.value


def link(params: str, **kw: Any) -> str:
    return encrypt_context_link(params, ContextLinkKey(KEY), **kw)


# -- keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 15, 17, 31, 33])
def test_key_length_message(size: int) -> None:
    with pytest.raises(ConfigurationError) as info:
        ContextLinkKey(bytes(size))
    assert info.value.reason == "bad_context_link_key"
    assert str(info.value) == "context link key must be 16 or 32 bytes"


@pytest.mark.parametrize("text", ["!!!!", base64.b64encode(KEY).decode() + "*", "A" * 5])
def test_base64_key_refusals(text: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        ContextLinkKey.from_base64(text)
    assert info.value.reason == "bad_context_link_key"
    assert str(info.value) == "context link key is not valid base64"
    assert info.value.__cause__ is None


async def test_base64_key_is_the_same_key() -> None:
    key = ContextLinkKey.from_base64(" " + base64.b64encode(KEY).decode() + "\n")
    assert key.bits == 256
    encrypted = encrypt_context_link(f"sessionId=1&timestamp={STAMP}", key)
    assert (await decrypt(encrypted)).session_id == "1"


def test_empty_passphrase() -> None:
    with pytest.raises(ConfigurationError) as info:
        ContextLinkKey.from_sha1_passphrase("")
    assert info.value.reason == "bad_context_link_key"
    assert str(info.value) == "empty passphrase"


async def test_passphrase_key_is_sha1_truncated() -> None:
    passphrase = "pässphrase"
    key = ContextLinkKey.from_sha1_passphrase(passphrase)
    assert key.bits == 128
    raw = hashlib.sha1(passphrase.encode()).digest()[:16]
    encrypted = encrypt_context_link(f"sessionId=1&timestamp={STAMP}", key)
    assert (await decrypt(encrypted, key=raw)).session_id == "1"


async def test_replay_key_derivation_is_stable() -> None:
    nonces = MemoryNonces()
    plaintext = f"sessionId=1&timestamp={STAMP}"
    await decrypt(link(plaintext), nonces=nonces)
    expected = hmac.new(
        KEY, b"teams-ehr/context-link/replay\x00" + plaintext.encode(), "sha256"
    ).hexdigest()
    assert list(nonces.seen) == [(REPLAY_NAMESPACE, expected)]
    assert REPLAY_NAMESPACE == "epic_context_link"


# -- encoding -------------------------------------------------------------------------------


async def test_refusal_message_spells_the_reason() -> None:
    error = await refusal("abc$def")
    assert error.reason == "bad_base64"
    assert str(error) == "context link refused: bad base64"
    error = await refusal(link("sessionId=1"))
    assert str(error) == "context link refused: missing timestamp"


async def test_refusal_is_logged_once_with_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="teams_ehr.smart.epic_context_link"):
        await refusal("abc$def")
    records = [r for r in caplog.records if r.name == "teams_ehr.smart.epic_context_link"]
    assert [r.getMessage() for r in records] == ["context link refused: bad_base64"]
    assert [getattr(r, "security_event", None) for r in records] == ["bad_base64"]


async def test_encoded_length_edge() -> None:
    encrypted = link(f"sessionId=1&timestamp={STAMP}")
    at_limit = ContextLinkFormat(max_encoded_length=len(encrypted))
    assert (await decrypt(encrypted, link_format=at_limit)).session_id == "1"
    below = ContextLinkFormat(max_encoded_length=len(encrypted) - 1)
    assert (await refusal(encrypted, link_format=below)).reason == "too_long"


def _urlsafe_with(char: str, without: str) -> str:
    for n in range(500):
        candidate = link(f"sessionId={n}&timestamp={STAMP}", urlsafe=True)
        if char in candidate and without not in candidate:
            return candidate
    raise AssertionError("no such link")


async def test_urlsafe_alphabet_with_only_a_dash() -> None:
    encrypted = _urlsafe_with("-", "_")
    assert (await decrypt(encrypted)).session_id.isdigit()


async def test_urlsafe_alphabet_with_only_an_underscore() -> None:
    encrypted = _urlsafe_with("_", "-")
    assert (await decrypt(encrypted)).session_id.isdigit()


@pytest.mark.parametrize("mixed", ["ab/c-def", "ab/c_def", "ab+c_def"])
async def test_mixed_alphabets_refused(mixed: str) -> None:
    assert (await refusal(mixed)).reason == "bad_base64"


async def test_padding_is_normalized() -> None:
    encrypted = link(f"sessionId=1&timestamp={STAMP}")
    assert encrypted.endswith("=")
    for variant in (encrypted.rstrip("="), encrypted + "=", encrypted + "=="):
        assert (await decrypt(variant)).session_id == "1"


async def test_characters_outside_the_alphabet_refused() -> None:
    encrypted = link(f"sessionId=1&timestamp={STAMP}")
    assert (await refusal(encrypted[:8] + "*" + encrypted[8:])).reason == "bad_base64"


# -- timestamps -----------------------------------------------------------------------------


@pytest.mark.parametrize("digits", ["999999999", "10000000000", "99999999999"])
async def test_unix_timestamp_digit_edges_accepted(digits: str) -> None:
    when = datetime.fromtimestamp(int(digits), tz=UTC)
    result = await decrypt(link(f"sessionId=1&timestamp={digits}"), now=when)
    assert result.issued_at == when


@pytest.mark.parametrize("digits", ["99999999", "100000000000"])
async def test_unix_timestamp_digit_edges_refused(digits: str) -> None:
    when = datetime.fromtimestamp(int(digits), tz=UTC)
    error = await refusal(link(f"sessionId=1&timestamp={digits}"), now=when)
    assert error.reason == "bad_timestamp"


async def test_non_ascii_digits_refused() -> None:
    arabic_indic = "".join(chr(0x660 + int(d)) for d in STAMP)
    assert arabic_indic.isdigit()
    assert (await refusal(link(f"sessionId=1&timestamp={arabic_indic}"))).reason == "bad_timestamp"


@pytest.mark.parametrize("max_age", [timedelta(0), -timedelta(seconds=1)])
async def test_max_age_must_be_positive(max_age: timedelta) -> None:
    with pytest.raises(ConfigurationError) as info:
        await decrypt(link(f"sessionId=1&timestamp={STAMP}"), max_age=max_age)
    assert info.value.reason == "bad_clock"
    assert str(info.value) == "now must be aware and max_age positive"


async def test_smallest_max_age_accepted() -> None:
    result = await decrypt(
        link(f"sessionId=1&timestamp={STAMP}"),
        now=datetime(2025, 11, 26, 12, 0, tzinfo=UTC),
        max_age=timedelta(microseconds=1),
    )
    assert result.session_id == "1"


# -- fields ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "plaintext",
    [
        f"sessionId=1&sessionId=&timestamp={STAMP}",
        f"sessionId=1&foo=1&FOO=2&timestamp={STAMP}",
        f"sessionId=1&foo=&foo=&timestamp={STAMP}",
    ],
)
async def test_duplicates_refused_even_blank_or_unknown(plaintext: str) -> None:
    assert (await refusal(link(plaintext))).reason == "duplicate_field"


@pytest.mark.parametrize(("count", "ok"), [(64, True), (65, False)])
async def test_field_count_edge(count: int, ok: bool) -> None:
    extra = "&".join(f"x{n}=1" for n in range(count - 2))
    plaintext = f"sessionId=1&timestamp={STAMP}&{extra}"
    assert plaintext.count("=") == count
    if ok:
        assert (await decrypt(link(plaintext))).session_id == "1"
    else:
        assert (await refusal(link(plaintext))).reason == "bad_format"


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("patient", "a_b", "bad_patient"),
        ("encounter", "a:b", "bad_encounter"),
        ("appointment", "x" * 65, "bad_appointment"),
    ],
)
async def test_fhir_fields_use_the_fhir_id_pattern(field: str, value: str, reason: str) -> None:
    plaintext = f"sessionId=1&{field}={value}&timestamp={STAMP}"
    assert (await refusal(link(plaintext))).reason == reason


async def test_other_fields_use_the_wider_pattern() -> None:
    value = "a_b:c." + "x" * 100
    plaintext = f"sessionId={value}&conferenceId={value}&departmentId={value}&timestamp={STAMP}"
    result = await decrypt(link(plaintext))
    assert (result.session_id, result.conference_id, result.department_id) == (value,) * 3
    fhir = await decrypt(link(f"sessionId=2&patient={'p' * 64}&timestamp={STAMP}"))
    assert fhir.context.patient == "p" * 64


# -- encrypt_context_link -------------------------------------------------------------------


def test_encrypt_refusal_messages() -> None:
    with pytest.raises(ConfigurationError) as info:
        link("a=b", iv=bytes(16), iv_mode="zero")
    assert (info.value.reason, str(info.value)) == ("bad_iv", "iv_mode 'zero' takes no iv")
    with pytest.raises(ConfigurationError) as info:
        link("a=b", iv=bytes(15))
    assert (info.value.reason, str(info.value)) == ("bad_iv", "iv must be 16 bytes")


def test_encrypt_default_is_a_prefixed_random_iv() -> None:
    first, second = link("a=b"), link("a=b")
    assert first != second
    assert len(base64.b64decode(first)) == 32  # 16-byte IV + one block
    fixed = link("a=b", iv=bytes(range(16)))
    assert base64.b64decode(fixed)[:16] == bytes(range(16))


async def test_characters_outside_the_alphabet_refused_at_any_length() -> None:
    encrypted = link(f"sessionId=1&timestamp={STAMP}")
    assert (await refusal(encrypted[:8] + "****" + encrypted[8:])).reason == "bad_base64"


def _independent(query: str, iv: bytes) -> bytes:
    padder = padding.PKCS7(128).padder()
    padded = padder.update(query.encode()) + padder.finalize()
    encryptor = Cipher(algorithms.AES(KEY), modes.CBC(iv)).encryptor()
    return iv + encryptor.update(padded) + encryptor.finalize()


def test_urlsafe_output_is_unpadded_exactly() -> None:
    iv = bytes(range(16))
    endings = set()
    for n in range(400):
        query = f"sessionId={n}&x=ab"
        expected = base64.urlsafe_b64encode(_independent(query, iv)).decode().rstrip("=")
        produced = link(query, iv=iv, urlsafe=True)
        assert produced == expected
        endings.add(expected[-1])
    assert "X" in endings  # an encoding ending in "X" is among them
    padded = base64.urlsafe_b64encode(_independent("a=b", iv)).decode()  # 32 bytes: one "="
    assert padded.endswith("=")
    assert link("a=b", iv=iv, urlsafe=True) == padded.rstrip("=")
    assert link("a=b", iv=iv, urlsafe=False) == base64.b64encode(_independent("a=b", iv)).decode()
