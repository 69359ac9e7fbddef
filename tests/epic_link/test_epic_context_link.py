"""A10: Epic context-aware links — AES-CBC round trips, OpenSSL vectors, every refusal path."""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from epic_link_support import MemoryNonces
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leaks import assert_no_leak
from teams_ehr.errors import ConfigurationError, ContextLinkError
from teams_ehr.smart.context import LaunchContext
from teams_ehr.smart.epic_context_link import (
    REPLAY_NAMESPACE,
    ContextLinkFormat,
    ContextLinkKey,
    decrypt_context_link,
    encrypt_context_link,
)

pytestmark = pytest.mark.anyio

KEY_128 = bytes(range(16))
KEY_256 = bytes(range(32))
NOW = datetime(2025, 11, 26, 12, 0, 30, tzinfo=UTC)
STAMP = "1764158400"  # 2025-11-26T12:00:00Z
MAX_AGE = timedelta(minutes=5)
ZERO_IV = ContextLinkFormat(iv_mode="zero")

# Independent vectors made with OpenSSL 3 (`openssl enc -aes-…-cbc -K … -iv …`) over the
# plaintext "sessionId=123456789&timestamp=1764158400".
VECTOR_128_PREFIXED = (
    "EBESExQVFhcYGRobHB0eH1lNnvn4asEFf2vYnxyfW8cU20GokLsq5jaURqkE6hPFGwuXrCgVJGYK005pxBSirg=="
)
VECTOR_256_ZERO_IV = "NCJfcabyB8QqFqpU/pHB5Ks+uE9aO2V+6t47uqsse8Q1KCbrp4cKF8IEpuEoWkhe"

CANARY_CSN = "998877665544"
CANARY_PATIENT = "eCanaryPatient0042"


def _raw_link(plaintext: bytes, key: bytes, iv: bytes = bytes(16), *, pad: bool = True) -> str:
    """Encrypt arbitrary bytes (prefixed IV) without the library, for malformed plaintexts."""
    if pad:
        padder = padding.PKCS7(128).padder()
        plaintext = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return base64.b64encode(iv + encryptor.update(plaintext) + encryptor.finalize()).decode()


async def _decrypt(link: str, key: bytes = KEY_256, nonces: MemoryNonces | None = None, **kw):  # type: ignore[no-untyped-def]
    return await decrypt_context_link(
        link,
        ContextLinkKey(key),
        now=kw.pop("now", NOW),
        max_age=kw.pop("max_age", MAX_AGE),
        nonces=nonces or MemoryNonces(),
        **kw,
    )


async def _reason(link: str, key: bytes = KEY_256, **kw) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ContextLinkError) as info:
        await _decrypt(link, key, **kw)
    return info.value.reason


# -- vectors and round trips ---------------------------------------------------------------------


async def test_openssl_vector_aes128_prefixed_iv() -> None:
    link = await _decrypt(VECTOR_128_PREFIXED, KEY_128)
    assert link.session_id == "123456789"
    assert link.issued_at == datetime(2025, 11, 26, 12, 0, tzinfo=UTC)


async def test_openssl_vector_aes256_zero_iv() -> None:
    link = await _decrypt(VECTOR_256_ZERO_IV, KEY_256, link_format=ZERO_IV)
    assert link.session_id == "123456789"


async def test_encrypt_matches_openssl_vectors() -> None:
    params = "sessionId=123456789&timestamp=1764158400"
    iv = bytes(range(16, 32))
    assert encrypt_context_link(params, ContextLinkKey(KEY_128), iv=iv) == VECTOR_128_PREFIXED
    assert encrypt_context_link(params, ContextLinkKey(KEY_256), iv_mode="zero") == (
        VECTOR_256_ZERO_IV
    )


@pytest.mark.parametrize("key", [KEY_128, KEY_256], ids=["aes128", "aes256"])
@pytest.mark.parametrize("iv_mode", ["prefixed", "zero"])
@pytest.mark.parametrize("urlsafe", [False, True])
async def test_round_trip_into_launch_context(key: bytes, iv_mode: str, urlsafe: bool) -> None:
    params = {
        "sessionId": CANARY_CSN,
        "departmentId": "10501",
        "conferenceId": "C-77",
        "fhirPatient": CANARY_PATIENT,
        "encounter": "enc.1",
        "timestamp": STAMP,
    }
    encrypted = encrypt_context_link(
        params,
        ContextLinkKey(key),
        iv_mode=iv_mode,  # type: ignore[arg-type]
        urlsafe=urlsafe,
    )
    link = await _decrypt(
        encrypted,
        key,
        link_format=ContextLinkFormat(iv_mode=iv_mode),  # type: ignore[arg-type]
    )
    assert (link.session_id, link.department_id, link.conference_id) == (
        CANARY_CSN,
        "10501",
        "C-77",
    )
    assert isinstance(link.context, LaunchContext)
    assert link.context.patient == CANARY_PATIENT
    assert link.context.encounter == "enc.1"
    assert link.context.model_extra == {
        "sessionId": CANARY_CSN,
        "departmentId": "10501",
        "conferenceId": "C-77",
    }
    assert_no_leak([CANARY_CSN, CANARY_PATIENT, "10501"], link, link.context)


async def test_keys_are_case_insensitive_and_names_are_dropped() -> None:
    encrypted = encrypt_context_link(
        f"SessionID={CANARY_CSN}&FirstName=Krishnan&LastName=Ram&Timestamp={STAMP}"
        "&LinkValidityPeriod=60",
        ContextLinkKey(KEY_256),
    )
    link = await _decrypt(encrypted)
    assert link.session_id == CANARY_CSN
    dumped = str(link.model_dump()) + str(link.context.model_dump())
    assert "Krishnan" not in dumped
    assert "Ram" not in dumped


async def test_epic_timestamp_format_yyyymmddhhmmss() -> None:
    encrypted = encrypt_context_link(
        {"sessionId": "1", "epicTimestamp": "20251126120000"}, ContextLinkKey(KEY_256)
    )
    assert (await _decrypt(encrypted)).issued_at == datetime(2025, 11, 26, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s.replace("+", " "),  # a form decoder turned '+' into ' '
        lambda s: quote(s, safe=""),  # the raw, still URL-encoded query value
        lambda s: s.rstrip("="),  # padding dropped
        lambda s: f"  {s}\n",
    ],
    ids=["plus_as_space", "percent_encoded", "unpadded", "whitespace"],
)
async def test_transport_variants_are_accepted(mangle) -> None:  # type: ignore[no-untyped-def]
    # An IV chosen so that the encoding contains '+', '/' and '='.
    for seed in range(64):
        encrypted = encrypt_context_link(
            {"sessionId": "42", "timestamp": STAMP}, ContextLinkKey(KEY_256), iv=bytes([seed]) * 16
        )
        if "+" in encrypted and "/" in encrypted and encrypted.endswith("="):
            break
    assert (await _decrypt(mangle(encrypted))).session_id == "42"


async def test_timestamp_optional_when_configured(nonces: MemoryNonces) -> None:
    encrypted = encrypt_context_link({"sessionId": "1"}, ContextLinkKey(KEY_256))
    relaxed = ContextLinkFormat(require_timestamp=False)
    link = await _decrypt(encrypted, nonces=nonces, link_format=relaxed)
    assert link.issued_at is None
    assert await _reason(encrypted, nonces=nonces, link_format=relaxed) == "replayed"
    # Without a timestamp the replay guard lasts max_age + skew from first use (documented).
    assert list(nonces.seen.values()) == [NOW + MAX_AGE + timedelta(seconds=60)]


# -- keys -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 8, 15, 17, 24, 31, 33, 64])
def test_bad_key_length_is_configuration_error(size: int) -> None:
    with pytest.raises(ConfigurationError) as info:
        ContextLinkKey(bytes(size))
    assert info.value.reason == "bad_context_link_key"


def test_key_constructors_and_safe_repr() -> None:
    key = ContextLinkKey.from_base64(base64.b64encode(KEY_256).decode())
    assert key.bits == 256
    assert ContextLinkKey.from_sha1_passphrase("shared secret").bits == 128
    assert repr(key) == "<ContextLinkKey AES-256-CBC>"
    assert_no_leak([KEY_256.hex(), base64.b64encode(KEY_256).decode()], key)
    with pytest.raises(ConfigurationError):
        ContextLinkKey.from_base64("not base64!")
    with pytest.raises(ConfigurationError):
        ContextLinkKey.from_base64(base64.b64encode(bytes(20)).decode())
    with pytest.raises(ConfigurationError):
        ContextLinkKey.from_sha1_passphrase("")


def test_encrypt_refuses_bad_iv() -> None:
    with pytest.raises(ConfigurationError):
        encrypt_context_link("a=b", ContextLinkKey(KEY_128), iv=bytes(8))
    with pytest.raises(ConfigurationError):
        encrypt_context_link("a=b", ContextLinkKey(KEY_128), iv=bytes(16), iv_mode="zero")


# -- every refusal --------------------------------------------------------------------------------


def _link(params: str, key: bytes = KEY_256) -> str:
    return encrypt_context_link(params, ContextLinkKey(key))


@pytest.mark.parametrize(
    ("link", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("A" * 9000, "too_long"),
        ("abc$def", "bad_base64"),
        ("ab+c-def", "bad_base64"),  # mixed standard and URL-safe alphabets
        ("QUJD", "bad_ciphertext_length"),  # 3 bytes
        (base64.b64encode(bytes(16)).decode(), "bad_ciphertext_length"),  # IV only
        (base64.b64encode(bytes(40)).decode(), "bad_ciphertext_length"),
    ],
)
async def test_encoding_refusals(link: str, reason: str) -> None:
    assert await _reason(link) == reason


async def test_wrong_key_is_refused() -> None:
    encrypted = _link(f"sessionId=1&timestamp={STAMP}", KEY_128)
    assert await _reason(encrypted, bytes(range(1, 17))) in {
        "bad_padding",
        "not_utf8",
        "bad_format",
    }


async def test_bad_padding() -> None:
    # A final block ending in 0x00 is never valid PKCS#7.
    assert await _reason(_raw_link(b"sessionId=1&x=" + bytes(2), KEY_256, pad=False)) == (
        "bad_padding"
    )


@pytest.mark.parametrize(
    ("plaintext", "reason"),
    [
        (b"sessionId=\xff\xfe\xfd", "not_utf8"),
        (b"sessionId=1\n&timestamp=" + STAMP.encode(), "bad_format"),
        (b"sessionId", "bad_format"),
        (b"sessionId=1&&timestamp=1", "bad_format"),
        (f"sessionId=1&SESSIONID=2&timestamp={STAMP}".encode(), "duplicate_field"),
        (f"sessionId=1&department=3&departmentId=4&timestamp={STAMP}".encode(), "duplicate_field"),
        (f"departmentId=4&timestamp={STAMP}".encode(), "missing_session_id"),
        (f"sessionId=&timestamp={STAMP}".encode(), "missing_session_id"),
        (f"sessionId=1 2&timestamp={STAMP}".encode(), "bad_session_id"),
        (f"sessionId={'9' * 129}&timestamp={STAMP}".encode(), "bad_session_id"),
        (f"sessionId=1&patient=a/b&timestamp={STAMP}".encode(), "bad_patient"),
        (f"sessionId=1&departmentId=%3Cx%3E&timestamp={STAMP}".encode(), "bad_department_id"),
        (b"sessionId=1", "missing_timestamp"),
        (b"sessionId=1&timestamp=yesterday", "bad_timestamp"),
        (b"sessionId=1&timestamp=12", "bad_timestamp"),
        (b"sessionId=1&timestamp=20251399000000", "bad_timestamp"),
        (b"sessionId=1&timestamp=1764158520", "future_link"),  # NOW + 90 s > skew 60 s
        (b"sessionId=1&timestamp=1764158100", "stale_link"),  # 5 min 30 s old
    ],
)
async def test_plaintext_refusals(plaintext: bytes, reason: str) -> None:
    assert await _reason(_raw_link(plaintext, KEY_256, iv=bytes(range(16)))) == reason


async def test_freshness_edges() -> None:
    key = ContextLinkKey(KEY_256)
    exactly_max_age = NOW - MAX_AGE
    at_skew = NOW + timedelta(seconds=60)
    for stamp in (exactly_max_age, at_skew):
        encrypted = encrypt_context_link(
            {"sessionId": "1", "timestamp": str(int(stamp.timestamp()))}, key
        )
        assert (await _decrypt(encrypted)).issued_at == stamp


async def test_replay_is_refused_even_when_reencrypted(nonces: MemoryNonces) -> None:
    key = ContextLinkKey(KEY_256)
    params = {"sessionId": CANARY_CSN, "patient": CANARY_PATIENT, "timestamp": STAMP}
    first = encrypt_context_link(params, key)
    await _decrypt(first, nonces=nonces)
    assert await _reason(first, nonces=nonces) == "replayed"
    # Same content under a fresh IV is the same link.
    assert await _reason(encrypt_context_link(params, key), nonces=nonces) == "replayed"
    # The nonce store holds a keyed hash with an expiry, never the plaintext.
    ((namespace, stored_key), expires_at) = next(iter(nonces.seen.items()))
    assert namespace == REPLAY_NAMESPACE
    assert len(stored_key) == 64
    assert int(stored_key, 16) >= 0
    assert expires_at == datetime(2025, 11, 26, 12, 6, tzinfo=UTC)
    assert_no_leak([CANARY_CSN, CANARY_PATIENT], nonces.seen)


async def test_refused_links_are_not_remembered(nonces: MemoryNonces) -> None:
    await _reason(_raw_link(b"sessionId=1&timestamp=1764158100", KEY_256), nonces=nonces)
    assert nonces.seen == {}


async def test_naive_clock_is_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        await _decrypt(_link("sessionId=1"), now=NOW.replace(tzinfo=None))


async def test_errors_and_logs_never_contain_decrypted_values(
    caplog: pytest.LogCaptureFixture, nonces: MemoryNonces
) -> None:
    caplog.set_level(logging.DEBUG)
    canaries = [CANARY_CSN, CANARY_PATIENT]
    plaintexts = [
        f"sessionId={CANARY_CSN}&patient={CANARY_PATIENT}&timestamp=1764158100",  # stale
        f"sessionId={CANARY_CSN}&patient={CANARY_PATIENT}/x&timestamp={STAMP}",  # bad patient
        f"sessionId={CANARY_CSN}&patient={CANARY_PATIENT}&timestamp={CANARY_PATIENT}",
        f"sessionId={CANARY_CSN}&sessionId={CANARY_PATIENT}",
    ]
    errors = []
    for plaintext in plaintexts:
        with pytest.raises(ContextLinkError) as info:
            await _decrypt(_raw_link(plaintext.encode(), KEY_256), nonces=nonces)
        errors.append(info.value)
    good = _link(f"sessionId={CANARY_CSN}&patient={CANARY_PATIENT}&timestamp={STAMP}")
    await _decrypt(good, nonces=nonces)
    with pytest.raises(ContextLinkError) as info:
        await _decrypt(good, nonces=nonces)
    errors.append(info.value)
    assert_no_leak(canaries, *errors, *(e.args for e in errors), caplog.text)
    events = [r.security_event for r in caplog.records if hasattr(r, "security_event")]
    assert events == [e.reason for e in errors]  # exactly one security event per refusal


# -- properties -----------------------------------------------------------------------------------


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    payload=st.binary(min_size=0, max_size=256),
    key=st.sampled_from([KEY_128, KEY_256]),
    iv_mode=st.sampled_from(["prefixed", "zero"]),
)
async def test_random_bytes_never_decrypt_to_a_context(
    payload: bytes, key: bytes, iv_mode: str
) -> None:
    link = base64.b64encode(payload).decode()
    with pytest.raises(ContextLinkError):
        await _decrypt(link, key, link_format=ContextLinkFormat(iv_mode=iv_mode))  # type: ignore[arg-type]


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
async def test_random_text_never_decrypts(text: str) -> None:
    with pytest.raises((ContextLinkError, ConfigurationError)):
        await _decrypt(text)


PARAMS = {"sessionId": "123456789", "departmentId": "10501", "timestamp": STAMP}


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=16, max_value=16 + 64 - 1), bit=st.integers(0, 7))
async def test_tampered_ciphertext_is_refused(position: int, bit: int) -> None:
    encrypted = encrypt_context_link(PARAMS, ContextLinkKey(KEY_256), iv=bytes(range(16)))
    raw = bytearray(base64.b64decode(encrypted))
    assert len(raw) == 16 + 64
    raw[position] ^= 1 << bit  # garbles one plaintext block: the grammar refuses it
    with pytest.raises(ContextLinkError):
        await _decrypt(base64.b64encode(bytes(raw)).decode())


async def test_iv_bit_flip_is_the_documented_cbc_limit() -> None:
    """CBC has no integrity: flipping an IV bit flips the same plaintext bit (module doc).

    This is Epic's format, not ours to fix; the lobby remains the authorization control.
    """
    encrypted = encrypt_context_link(PARAMS, ContextLinkKey(KEY_256), iv=bytes(range(16)))
    raw = bytearray(base64.b64decode(encrypted))
    raw[len("sessionId=12345")] ^= ord("6") ^ ord("7")
    link = await _decrypt(base64.b64encode(bytes(raw)).decode())
    assert link.session_id == "123457789"
