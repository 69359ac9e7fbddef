"""Rich-notification decryption (D1, security.md T23): RSA-OAEP unwrap, HMAC first, AES-CBC."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from teams_ehr.attendance import notification_crypto
from teams_ehr.attendance.notification_crypto import (
    NotificationCertificate,
    decrypt_encrypted_content,
    encrypt_content,
)
from teams_ehr.errors import ConfigurationError, WebhookRejectedError

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
CERT = NotificationCertificate.generate(NOW)
PLAINTEXT = b'{"eventType":"callStarted","eventDateTime":"2026-03-02T15:00:00Z"}'


def _encrypt(plaintext: bytes = PLAINTEXT, cert: NotificationCertificate = CERT, **kw: object):
    return encrypt_content(
        plaintext,
        encryption_certificate=cert.encryption_certificate,
        certificate_id=cert.certificate_id,
        **kw,  # type: ignore[arg-type]
    )


def test_roundtrip_matches_graph_procedure() -> None:
    encrypted = _encrypt()
    assert decrypt_encrypted_content(encrypted, CERT.keys()) == PLAINTEXT
    # independent check of the documented construction: HMAC over the raw ciphertext bytes
    key = CERT.private_key.decrypt(
        base64.b64decode(encrypted.data_key),
        notification_crypto._OAEP_SHA1,
    )
    assert len(key) == 32
    import hmac as _hmac

    mac = _hmac.new(key, base64.b64decode(encrypted.data), hashlib.sha256).digest()
    assert base64.b64encode(mac).decode() == encrypted.data_signature
    assert encrypted.encryption_certificate_thumbprint == CERT.thumbprint


def test_certificate_is_base64_der_of_a_self_signed_rsa_cert() -> None:
    der = base64.b64decode(CERT.encryption_certificate)
    cert = x509.load_der_x509_certificate(der)
    assert isinstance(cert.public_key(), rsa.RSAPublicKey)
    assert cert.not_valid_after_utc > NOW
    assert cert.fingerprint(hashes.SHA1()).hex().upper() == CERT.thumbprint
    assert CERT.certificate_id.startswith("tehr-")
    pem = CERT.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert pem.decode() not in repr(CERT)
    assert "private_key" not in repr(CERT)


def test_from_certificate_rejects_a_foreign_key() -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(ConfigurationError):
        NotificationCertificate.from_certificate(CERT.certificate_pem, other)
    with pytest.raises(ConfigurationError):
        NotificationCertificate.generate(NOW, key_size=1024)


def test_hmac_checked_before_decrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real = notification_crypto._aes_cbc_decrypt

    def spy(key: bytes, data: bytes) -> bytes:
        calls.append(data)
        return real(key, data)

    monkeypatch.setattr(notification_crypto, "_aes_cbc_decrypt", spy)
    encrypted = _encrypt()
    data = bytearray(base64.b64decode(encrypted.data))
    data[0] ^= 0x01
    tampered = encrypted.model_copy(update={"data": base64.b64encode(bytes(data)).decode()})
    with pytest.raises(WebhookRejectedError) as caught:
        decrypt_encrypted_content(tampered, CERT.keys())
    assert caught.value.reason == "bad_signature"
    assert calls == []
    # and the untampered one does go through AES exactly once
    decrypt_encrypted_content(encrypted, CERT.keys())
    assert len(calls) == 1


def test_bad_signature_value_rejected() -> None:
    encrypted = _encrypt()
    forged = encrypted.model_copy(update={"data_signature": base64.b64encode(b"x" * 32).decode()})
    with pytest.raises(WebhookRejectedError) as caught:
        decrypt_encrypted_content(forged, CERT.keys())
    assert caught.value.reason == "bad_signature"


def test_unknown_certificate_id_rejected() -> None:
    encrypted = _encrypt().model_copy(update={"encryption_certificate_id": "someone-else"})
    with pytest.raises(WebhookRejectedError) as caught:
        decrypt_encrypted_content(encrypted, CERT.keys())
    assert caught.value.reason == "unknown_certificate"


def test_old_certificate_still_decrypts_during_rotation() -> None:
    new = NotificationCertificate.generate(NOW)
    keys = {**CERT.keys(), **new.keys()}
    assert decrypt_encrypted_content(_encrypt(cert=CERT), keys) == PLAINTEXT
    assert decrypt_encrypted_content(_encrypt(cert=new), keys) == PLAINTEXT


def test_data_key_for_another_certificate_rejected() -> None:
    other = NotificationCertificate.generate(NOW)
    encrypted = _encrypt(cert=other).model_copy(
        update={"encryption_certificate_id": CERT.certificate_id}
    )
    with pytest.raises(WebhookRejectedError) as caught:
        decrypt_encrypted_content(encrypted, CERT.keys())
    assert caught.value.reason == "bad_data_key"


@pytest.mark.parametrize("field", ["data", "data_key", "data_signature"])
def test_non_base64_fields_rejected(field: str) -> None:
    encrypted = _encrypt().model_copy(update={field: "not base64!!"})
    with pytest.raises(WebhookRejectedError) as caught:
        decrypt_encrypted_content(encrypted, CERT.keys())
    assert caught.value.reason == "malformed_encrypted_content"


def test_bad_padding_after_valid_hmac_rejected() -> None:
    # a correctly signed ciphertext whose plaintext padding is wrong
    import hmac as _hmac
    import os

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = os.urandom(32)
    enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    data = enc.update(b"A" * 32) + enc.finalize()  # last byte 0x41: invalid PKCS7
    public = CERT.private_key.public_key()
    encrypted = _encrypt().model_copy(
        update={
            "data": base64.b64encode(data).decode(),
            "data_key": base64.b64encode(
                public.encrypt(key, notification_crypto._OAEP_SHA1)
            ).decode(),
            "data_signature": base64.b64encode(
                _hmac.new(key, data, hashlib.sha256).digest()
            ).decode(),
        }
    )
    with pytest.raises(WebhookRejectedError) as caught:
        decrypt_encrypted_content(encrypted, CERT.keys())
    assert caught.value.reason == "bad_padding"


def test_errors_carry_no_key_material() -> None:
    encrypted = _encrypt()
    tampered = encrypted.model_copy(update={"data_signature": encrypted.data_key[:44]})
    with pytest.raises(WebhookRejectedError) as caught:
        decrypt_encrypted_content(tampered, CERT.keys())
    for text in (str(caught.value), repr(caught.value), repr(encrypted)):
        assert encrypted.data_key not in text
        assert encrypted.data not in text
