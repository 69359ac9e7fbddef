"""Rich-notification encryption: our certificate, and decrypting Graph's ``encryptedContent``
(requirement D1).

Graph encrypts the resource data of a rich notification for the certificate given at subscription
time (Graph docs, *Set up change notifications that include resource data*, "Decrypting resource
data from change notifications"; threat T23):

1. ``dataKey`` is the symmetric key wrapped with RSA-OAEP (SHA-1 MGF and hash) for the certificate
   named by ``encryptionCertificateId``;
2. ``dataSignature`` is HMAC-SHA256 of the raw ``data`` bytes under that key — checked in constant
   time **before** anything is decrypted;
3. ``data`` is AES-CBC with PKCS7 padding, IV = the first 16 bytes of the key; the result is JSON.

Every failure is a :class:`~teams_ehr.errors.WebhookRejectedError` with a specific ``reason`` and
a message free of key material. :func:`encrypt_content` is the exact inverse, used by the fakes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import MGF1, OAEP
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID

from teams_ehr.attendance.notifications import EncryptedContent
from teams_ehr.errors import ConfigurationError, WebhookRejectedError

__all__ = [
    "NotificationCertificate",
    "decrypt_encrypted_content",
    "encrypt_content",
]

_OAEP_SHA1 = OAEP(mgf=MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)  # noqa: S303
_AES_KEY_SIZES = frozenset({16, 24, 32})
_MAX_DATA_BYTES = 1_048_576


@dataclass(frozen=True)
class NotificationCertificate:
    """The self-signed certificate Graph encrypts rich notifications for.

    ``encryption_certificate`` is the base64 DER sent as the subscription's
    ``encryptionCertificate``; ``certificate_id`` is our ``encryptionCertificateId`` (derived from
    the certificate's SHA-256 so it names the key without revealing anything).
    """

    certificate_pem: bytes
    private_key: rsa.RSAPrivateKey = field(repr=False)
    certificate_id: str

    @classmethod
    def generate(
        cls,
        now: datetime,
        *,
        validity: timedelta = timedelta(days=365),
        key_size: int = 2048,
        common_name: str = "teams-ehr graph notifications",
    ) -> NotificationCertificate:
        """A new RSA key and a self-signed certificate valid from ``now`` for ``validity``."""
        if key_size < 2048:
            raise ConfigurationError("notification key must be at least 2048 bits")
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + validity)
            .sign(key, hashes.SHA256())
        )
        return cls.from_certificate(cert.public_bytes(serialization.Encoding.PEM), key)

    @classmethod
    def from_certificate(
        cls, certificate_pem: bytes, private_key: rsa.RSAPrivateKey
    ) -> NotificationCertificate:
        """Wrap an existing certificate and its key (e.g. loaded from a vault)."""
        cert = x509.load_pem_x509_certificate(certificate_pem)
        public = cert.public_key()
        if not isinstance(public, rsa.RSAPublicKey) or (
            public.public_numbers() != private_key.public_key().public_numbers()
        ):
            raise ConfigurationError("notification certificate does not match its private key")
        der = cert.public_bytes(serialization.Encoding.DER)
        return cls(
            certificate_pem=certificate_pem,
            private_key=private_key,
            certificate_id="tehr-" + hashlib.sha256(der).hexdigest()[:32],
        )

    @property
    def encryption_certificate(self) -> str:
        """Base64 DER of the certificate, the subscription's ``encryptionCertificate``."""
        cert = x509.load_pem_x509_certificate(self.certificate_pem)
        return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")

    @property
    def thumbprint(self) -> str:
        """SHA-1 thumbprint (upper-case hex), Graph's ``encryptionCertificateThumbprint``."""
        cert = x509.load_pem_x509_certificate(self.certificate_pem)
        return cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303

    def keys(self) -> dict[str, rsa.RSAPrivateKey]:
        """``{certificate_id: private_key}`` for :func:`decrypt_encrypted_content`."""
        return {self.certificate_id: self.private_key}


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise WebhookRejectedError(
            f"{what} is not base64", reason="malformed_encrypted_content"
        ) from None


def _aes_cbc_decrypt(key: bytes, ciphertext: bytes) -> bytes:
    """AES-CBC/PKCS7 with IV = key[:16] (a separate function so tests can prove call order)."""
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(padded) + unpadder.finalize()


def decrypt_encrypted_content(
    encrypted: EncryptedContent, keys: Mapping[str, rsa.RSAPrivateKey]
) -> bytes:
    """Verify and decrypt one ``encryptedContent``; returns the plaintext (JSON bytes).

    ``keys`` maps ``encryptionCertificateId`` to private key; keep the previous certificate in it
    during rotation. The HMAC is verified with :func:`hmac.compare_digest` before AES runs.
    """
    private_key = keys.get(encrypted.encryption_certificate_id)
    if private_key is None:
        raise WebhookRejectedError("unknown encryption certificate", reason="unknown_certificate")
    if len(encrypted.data) > _MAX_DATA_BYTES * 4 // 3 + 4:
        raise WebhookRejectedError("encrypted data too large", reason="malformed_encrypted_content")
    wrapped = _b64(encrypted.data_key, "dataKey")
    data = _b64(encrypted.data, "data")
    signature = _b64(encrypted.data_signature, "dataSignature")
    try:
        key = private_key.decrypt(wrapped, _OAEP_SHA1)
    except ValueError:
        raise WebhookRejectedError("data key does not unwrap", reason="bad_data_key") from None
    if len(key) not in _AES_KEY_SIZES:
        raise WebhookRejectedError("data key has a wrong size", reason="bad_data_key")
    expected = hmac.new(key, data, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        raise WebhookRejectedError("data signature mismatch", reason="bad_signature")
    if not data or len(data) % 16:
        raise WebhookRejectedError("ciphertext length invalid", reason="bad_padding")
    try:
        return _aes_cbc_decrypt(key, data)
    except ValueError:
        raise WebhookRejectedError("ciphertext padding invalid", reason="bad_padding") from None


def encrypt_content(
    plaintext: bytes,
    *,
    encryption_certificate: str,
    certificate_id: str,
    symmetric_key: bytes | None = None,
) -> EncryptedContent:
    """Encrypt like Graph does (the inverse of :func:`decrypt_encrypted_content`), for fakes.

    ``encryption_certificate`` is what the subscription carried (base64 DER): like Graph, the
    encrypting side only ever sees the public certificate.
    """
    key = symmetric_key if symmetric_key is not None else os.urandom(32)
    if len(key) not in _AES_KEY_SIZES:
        raise ConfigurationError("symmetric key must be 16, 24 or 32 bytes")
    cert = x509.load_der_x509_certificate(base64.b64decode(encryption_certificate))
    public = cert.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise ConfigurationError("encryption certificate must carry an RSA key")
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    data = encryptor.update(padded) + encryptor.finalize()
    signature = hmac.new(key, data, hashlib.sha256).digest()
    return EncryptedContent(
        data=base64.b64encode(data).decode("ascii"),
        dataKey=base64.b64encode(public.encrypt(key, _OAEP_SHA1)).decode("ascii"),
        dataSignature=base64.b64encode(signature).decode("ascii"),
        encryptionCertificateId=certificate_id,
        encryptionCertificateThumbprint=cert.fingerprint(hashes.SHA1()).hex().upper(),  # noqa: S303
    )
