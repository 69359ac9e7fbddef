"""T23 rich-notification decryption edges that ``nox -s mutants -- attendance/notification_crypto.py``
left open.

Each verification step refuses with its own ``reason`` and text (Graph docs, *Set up change
notifications that include resource data*, "Decrypting resource data"): unknown
``encryptionCertificateId``, the size cap at its exact edge, strict base64 per field, a data key
that does not unwrap or has a wrong size, the HMAC compared before any decryption, and ciphertext
length and PKCS7 padding errors, all as :class:`~teams_ehr.errors.WebhookRejectedError`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID

from teams_ehr.attendance import notification_crypto
from teams_ehr.attendance.notification_crypto import (
    NotificationCertificate,
    decrypt_encrypted_content,
    encrypt_content,
)
from teams_ehr.attendance.notifications import EncryptedContent
from teams_ehr.errors import ConfigurationError, WebhookRejectedError

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
CERT = NotificationCertificate.generate(NOW)
PLAINTEXT = b'{"eventType":"callEnded"}'
LIMIT = 1_048_576 * 4 // 3 + 4  # base64 length of the 1 MiB cap, plus slack


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _signed(data: bytes, key: bytes, *, wrapped: bytes | None = None) -> EncryptedContent:
    """An ``encryptedContent`` with arbitrary ciphertext, correctly wrapped and signed."""
    public = CERT.private_key.public_key()
    return EncryptedContent(
        data=_b64(data),
        dataKey=_b64(
            wrapped if wrapped is not None else public.encrypt(key, notification_crypto._OAEP_SHA1)
        ),
        dataSignature=_b64(hmac.new(key, data, hashlib.sha256).digest()),
        encryptionCertificateId=CERT.certificate_id,
    )


def _refusal(encrypted: EncryptedContent) -> tuple[str, str]:
    with pytest.raises(WebhookRejectedError) as caught:
        decrypt_encrypted_content(encrypted, CERT.keys())
    return caught.value.reason, str(caught.value)


def _encrypt(plaintext: bytes = PLAINTEXT, **kw: object) -> EncryptedContent:
    return encrypt_content(
        plaintext,
        encryption_certificate=CERT.encryption_certificate,
        certificate_id=CERT.certificate_id,
        **kw,  # type: ignore[arg-type]
    )


# -- the certificate ------------------------------------------------------------------------------


def test_generated_certificate_fields() -> None:
    # generated inside the test (not at import) so mutation runs attribute it to this test
    fresh = NotificationCertificate.generate(NOW)
    cert = x509.load_pem_x509_certificate(fresh.certificate_pem)
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=5)
    assert cert.not_valid_after_utc == NOW + timedelta(days=365)
    cn = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    assert cn == ["teams-ehr graph notifications"]
    assert cert.issuer == cert.subject
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert fresh.private_key.key_size == 2048
    assert fresh.private_key.public_key().public_numbers().e == 65537
    der = cert.public_bytes(serialization.Encoding.DER)
    assert fresh.certificate_id == "tehr-" + hashlib.sha256(der).hexdigest()[:32]
    assert fresh.encryption_certificate == _b64(der)
    assert fresh.keys() == {fresh.certificate_id: fresh.private_key}


def test_generate_arguments_are_used() -> None:
    cert = NotificationCertificate.generate(
        NOW, validity=timedelta(days=2), key_size=3072, common_name="other"
    )
    parsed = x509.load_pem_x509_certificate(cert.certificate_pem)
    assert parsed.not_valid_after_utc == NOW + timedelta(days=2)
    assert cert.private_key.key_size == 3072
    assert [a.value for a in parsed.subject] == ["other"]


def test_refusals_of_bad_configuration_say_why() -> None:
    with pytest.raises(ConfigurationError, match=r"^notification key must be at least 2048 bits$"):
        NotificationCertificate.generate(NOW, key_size=2047)
    other = NotificationCertificate.generate(NOW)
    with pytest.raises(
        ConfigurationError, match=r"^notification certificate does not match its private key$"
    ):
        NotificationCertificate.from_certificate(CERT.certificate_pem, other.private_key)
    with pytest.raises(ConfigurationError, match=r"^symmetric key must be 16, 24 or 32 bytes$"):
        _encrypt(symmetric_key=b"k" * 20)


def test_certificate_with_a_non_rsa_key_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ec")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    with pytest.raises(
        ConfigurationError, match=r"^notification certificate does not match its private key$"
    ):
        NotificationCertificate.from_certificate(pem, CERT.private_key)
    der = _b64(cert.public_bytes(serialization.Encoding.DER))
    with pytest.raises(ConfigurationError, match=r"^encryption certificate must carry an RSA key$"):
        encrypt_content(PLAINTEXT, encryption_certificate=der, certificate_id="x")


# -- encrypting like Graph ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [16, 24, 32])
def test_every_aes_key_size_round_trips(size: int) -> None:
    key = os.urandom(size)
    encrypted = _encrypt(symmetric_key=key)
    assert (
        CERT.private_key.decrypt(
            base64.b64decode(encrypted.data_key), notification_crypto._OAEP_SHA1
        )
        == key
    )
    iv = key[:16]
    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = dec.update(base64.b64decode(encrypted.data)) + dec.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    assert unpadder.update(padded) + unpadder.finalize() == PLAINTEXT
    assert decrypt_encrypted_content(encrypted, CERT.keys()) == PLAINTEXT


def test_encrypted_content_names_certificate_and_thumbprint() -> None:
    encrypted = _encrypt()
    assert encrypted.encryption_certificate_id == CERT.certificate_id
    assert encrypted.encryption_certificate_thumbprint == CERT.thumbprint
    assert CERT.thumbprint == CERT.thumbprint.upper()
    cert = x509.load_pem_x509_certificate(CERT.certificate_pem)
    assert CERT.thumbprint == cert.fingerprint(hashes.SHA1()).hex().upper()
    assert len(base64.b64decode(encrypted.data_signature)) == 32


def test_default_symmetric_key_is_fresh_and_32_bytes() -> None:
    first, second = _encrypt(), _encrypt()
    keys = [
        CERT.private_key.decrypt(base64.b64decode(e.data_key), notification_crypto._OAEP_SHA1)
        for e in (first, second)
    ]
    assert [len(k) for k in keys] == [32, 32]
    assert keys[0] != keys[1]


def test_plaintext_of_a_whole_block_gets_a_full_padding_block() -> None:
    encrypted = _encrypt(b"x" * 16, symmetric_key=b"k" * 32)
    assert len(base64.b64decode(encrypted.data)) == 32
    assert decrypt_encrypted_content(encrypted, CERT.keys()) == b"x" * 16


# -- each verification step's refusal -------------------------------------------------------------


def test_unknown_certificate_refused_first() -> None:
    encrypted = _encrypt().model_copy(
        update={"encryption_certificate_id": "tehr-other", "data": "!" * (LIMIT + 1)}
    )
    assert _refusal(encrypted) == ("unknown_certificate", "unknown encryption certificate")


def test_size_cap_at_its_exact_edge() -> None:
    at_cap = _encrypt().model_copy(update={"data": "A" * LIMIT, "data_key": "!"})
    assert _refusal(at_cap) == ("malformed_encrypted_content", "dataKey is not base64")
    over = _encrypt().model_copy(update={"data": "A" * (LIMIT + 1), "data_key": "!"})
    assert _refusal(over) == ("malformed_encrypted_content", "encrypted data too large")


@pytest.mark.parametrize(
    ("field", "name"),
    [("data_key", "dataKey"), ("data", "data"), ("data_signature", "dataSignature")],
)
def test_base64_is_strict_per_field(field: str, name: str) -> None:
    # "QUJD!" decodes to b"ABC" when invalid characters are skipped: strict decoding refuses it
    encrypted = _encrypt().model_copy(update={field: "QUJD!"})
    assert _refusal(encrypted) == ("malformed_encrypted_content", f"{name} is not base64")


def test_fields_are_decoded_in_order_key_data_signature() -> None:
    encrypted = _encrypt().model_copy(update={"data": "!", "data_signature": "!", "data_key": "!"})
    assert _refusal(encrypted)[1] == "dataKey is not base64"
    encrypted = _encrypt().model_copy(update={"data": "!", "data_signature": "!"})
    assert _refusal(encrypted)[1] == "data is not base64"


def test_data_key_that_does_not_unwrap() -> None:
    encrypted = _signed(b"\0" * 16, b"k" * 32, wrapped=b"\1" * 256)
    assert _refusal(encrypted) == ("bad_data_key", "data key does not unwrap")


@pytest.mark.parametrize("size", [0, 15, 17, 20, 33, 48])
def test_data_key_of_a_wrong_size(size: int) -> None:
    key = os.urandom(size)
    assert _refusal(_signed(b"\0" * 16, key)) == ("bad_data_key", "data key has a wrong size")


def test_signature_is_hmac_sha256_under_the_data_key_over_the_raw_ciphertext() -> None:
    encrypted = _encrypt(symmetric_key=b"k" * 32)
    data = base64.b64decode(encrypted.data)
    for forged in (
        hmac.new(b"j" * 32, data, hashlib.sha256).digest(),  # another key
        hmac.new(b"k" * 32, data, hashlib.sha1).digest(),  # another hash
        hmac.new(b"k" * 32, encrypted.data.encode(), hashlib.sha256).digest(),  # base64 text
        hmac.new(b"k" * 32, data, hashlib.sha256).digest()[:16],  # truncated
        b"",
    ):
        tampered = encrypted.model_copy(update={"data_signature": _b64(forged)})
        assert _refusal(tampered) == ("bad_signature", "data signature mismatch")


def test_signature_checked_before_length_and_padding(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    monkeypatch.setattr(notification_crypto, "_aes_cbc_decrypt", lambda k, d: calls.append(d))
    for data in (b"", b"x" * 17):
        unsigned = _signed(data, b"k" * 32).model_copy(update={"data_signature": _b64(b"s" * 32)})
        assert _refusal(unsigned) == ("bad_signature", "data signature mismatch")
    assert calls == []


@pytest.mark.parametrize("length", [0, 1, 15, 17, 31])
def test_ciphertext_length_refused_before_decryption(length: int) -> None:
    encrypted = _signed(os.urandom(length), b"k" * 32)
    assert _refusal(encrypted) == ("bad_padding", "ciphertext length invalid")


def test_bad_padding_is_a_typed_refusal() -> None:
    key = b"k" * 32
    enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    data = enc.update(b"A" * 16 + b"B" * 15 + b"\x00") + enc.finalize()
    assert _refusal(_signed(data, key)) == ("bad_padding", "ciphertext padding invalid")


def test_iv_is_the_first_16_bytes_of_the_key() -> None:
    key = bytes(range(32))
    padder = padding.PKCS7(128).padder()
    padded = padder.update(PLAINTEXT) + padder.finalize()
    enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    data = enc.update(padded) + enc.finalize()
    assert decrypt_encrypted_content(_signed(data, key), CERT.keys()) == PLAINTEXT
    other_iv = Cipher(algorithms.AES(key), modes.CBC(key[16:])).encryptor()
    data = other_iv.update(padded) + other_iv.finalize()
    assert decrypt_encrypted_content(_signed(data, key), CERT.keys()) != PLAINTEXT
