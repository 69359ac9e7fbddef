"""Our signing keys: the ``Signer`` protocol, local keys, RFC 7638 ``kid``s, the published JWKS.

Requirements A9 and A5; threats T13 and T16.

* :class:`Signer` is the seam for a KMS, HSM or Key Vault: the SDK only ever calls ``sign()`` on
  the JWS signing input, so the private key never has to sit in this process.
* :class:`LocalSigner` holds an RSA (≥ 2048 bits; RS384 or RS256) or EC P-384 (ES384) key. SMART
  client-confidential-asymmetric: "the client SHALL support both RS384 and ES384".
* ``kid`` is the RFC 7638 JWK thumbprint, so it is unique and stable for a key.
* :class:`KeyRing` publishes the JWKS (public members only) and rotates with overlap. Keep one
  key ring **per environment**: a test (non-production) ring and a production ring with distinct
  keys, as Epic requires unique key pairs for non-production and production (threat T13). The key
  ring is itself a :class:`Signer` that always signs with its active key, so a ``PrivateKeyJwt``
  built on it follows rotations.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from teams_ehr.errors import ConfigurationError

__all__ = [
    "DEFAULT_ROTATION_OVERLAP",
    "JWKS_CACHE_CONTROL",
    "PRIVATE_JWK_MEMBERS",
    "SUPPORTED_SIGNING_ALGS",
    "KeyRing",
    "LocalSigner",
    "Signer",
    "b64url",
    "jwk_thumbprint",
    "sign_jws",
]

SUPPORTED_SIGNING_ALGS = ("RS384", "ES384", "RS256")
"""Algorithms our signers produce: SMART requires RS384 and ES384; Epic also accepts RS256."""

JWKS_CACHE_CONTROL = "public, max-age=3600"
"""``Cache-Control`` for the published JWKS (SMART: the JWKS URL SHOULD send Cache-Control;
Epic honours it over its 29 h default)."""

DEFAULT_ROTATION_OVERLAP = timedelta(hours=2)
"""How long a retired key stays published: the JWKS ``max-age`` plus one hour (threat T13)."""

_MIN_OVERLAP = timedelta(seconds=300)  # an assertion lives at most 5 minutes (SMART)
_RSA_DEFAULT_BITS = 3072
_RSA_MIN_BITS = 2048  # Epic: RSA keys must be ≥ 2048 bits
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "RS256": hashes.SHA256,
    "RS384": hashes.SHA384,
    "ES384": hashes.SHA384,
}
_THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}
PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
"""JWK members that are never published (RFC 7518 §6.3.2, §6.4; ``k`` of symmetric keys)."""


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_b64(value: int, length: int | None = None) -> str:
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return b64url(value.to_bytes(size, "big"))


@runtime_checkable
class Signer(Protocol):
    """Something that signs JWS inputs with a private key it may never reveal (KMS/HSM seam)."""

    @property
    def kid(self) -> str:
        """The key id published in the JWKS (an RFC 7638 thumbprint for our keys)."""
        ...

    @property
    def alg(self) -> str:
        """The JWS algorithm: ``RS384``, ``ES384`` or ``RS256``."""
        ...

    def sign(self, signing_input: bytes) -> bytes:
        """The raw JWS signature of ``signing_input`` (EC: ``r || s``, RFC 7518 §3.4)."""
        ...

    def public_jwk(self) -> dict[str, str]:
        """The public JWK with ``kty``, ``kid``, ``alg``, ``use="sig"``; never private members."""
        ...


def jwk_thumbprint(jwk: Mapping[str, str]) -> str:
    """The RFC 7638 SHA-256 thumbprint of ``jwk`` (base64url), used as our ``kid``."""
    kty = jwk.get("kty")
    members = _THUMBPRINT_MEMBERS.get(str(kty))
    if members is None or any(m not in jwk for m in members):
        raise ConfigurationError("JWK thumbprint needs an RSA or EC key", reason="bad_jwk")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


class LocalSigner:
    """A signer holding its private key in memory (development, tests, file-based keys)."""

    __slots__ = ("_alg", "_jwk", "_key")

    def __init__(self, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, alg: str) -> None:
        _check_key(key, alg)
        self._key = key
        self._alg = alg
        public = _public_members(key)
        self._jwk = {**public, "kid": jwk_thumbprint(public), "alg": alg, "use": "sig"}

    @classmethod
    def generate(cls, alg: str = "RS384") -> LocalSigner:
        """A fresh key for ``alg``: RSA 3072 bits for RS*, EC P-384 for ES384."""
        if alg == "ES384":
            return cls(ec.generate_private_key(ec.SECP384R1()), alg)
        if alg in ("RS384", "RS256"):
            return cls(rsa.generate_private_key(65537, _RSA_DEFAULT_BITS), alg)
        raise ConfigurationError(f"unsupported signing alg {alg!r}", reason="bad_signing_alg")

    @classmethod
    def from_pem(cls, pem: bytes, alg: str, password: bytes | None = None) -> LocalSigner:
        """Load a PKCS#8 or traditional PEM private key."""
        try:
            key = serialization.load_pem_private_key(pem, password=password)
        except (ValueError, TypeError):
            raise ConfigurationError("not a readable PEM private key", reason="bad_key") from None
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ConfigurationError("only RSA and EC keys are supported", reason="bad_key")
        return cls(key, alg)

    @property
    def kid(self) -> str:
        return self._jwk["kid"]

    @property
    def alg(self) -> str:
        return self._alg

    def private_pem(self, password: bytes | None = None) -> bytes:
        """The private key as PKCS#8 PEM (encrypted when ``password`` is given)."""
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    def public_jwk(self) -> dict[str, str]:
        return dict(self._jwk)

    def sign(self, signing_input: bytes) -> bytes:
        digest = _HASHES[self._alg]()
        if isinstance(self._key, rsa.RSAPrivateKey):
            return self._key.sign(signing_input, padding.PKCS1v15(), digest)
        r, s = decode_dss_signature(self._key.sign(signing_input, ec.ECDSA(digest)))
        return r.to_bytes(48, "big") + s.to_bytes(48, "big")

    def __repr__(self) -> str:
        return f"<LocalSigner alg={self._alg} kid={self.kid}>"


def _check_key(key: object, alg: str) -> None:
    if alg not in SUPPORTED_SIGNING_ALGS:
        raise ConfigurationError(f"unsupported signing alg {alg!r}", reason="bad_signing_alg")
    if alg.startswith("RS"):
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigurationError(f"{alg} needs an RSA key", reason="bad_key")
        if key.key_size < _RSA_MIN_BITS:
            raise ConfigurationError("RSA keys must be at least 2048 bits", reason="bad_key")
    elif not (isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"):
        raise ConfigurationError("ES384 needs an EC P-384 key", reason="bad_key")


def _public_members(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> dict[str, str]:
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.public_key().public_numbers()
        return {"kty": "RSA", "n": _int_b64(numbers.n), "e": _int_b64(numbers.e)}
    point = key.public_key().public_numbers()
    return {"kty": "EC", "crv": "P-384", "x": _int_b64(point.x, 48), "y": _int_b64(point.y, 48)}


def sign_jws(signer: Signer, header: Mapping[str, Any], claims: Mapping[str, Any]) -> str:
    """A compact JWS (RFC 7515 §7.1) of ``claims``, signed through ``signer``.

    ``alg`` and ``kid`` come from the signer and override the header's, so the header always names
    the key that signed.
    """
    alg, kid = signer.alg, signer.kid
    full_header = {**header, "alg": alg, "kid": kid}
    segments = [
        b64url(json.dumps(part, separators=(",", ":")).encode("utf-8"))
        for part in (full_header, claims)
    ]
    signing_input = ".".join(segments).encode("ascii")
    return f"{segments[0]}.{segments[1]}.{b64url(signer.sign(signing_input))}"


@dataclass(frozen=True, slots=True)
class _RetiredKey:
    jwk: dict[str, str]
    retire_after: datetime


class KeyRing:
    """The active signer, a staged next key and retired keys still published (threat T13).

    Rotation schedule: :meth:`stage` the next key (published, not yet used) at least the JWKS
    ``max-age`` plus one hour before :meth:`rotate` to it; the previous key then stays published
    for ``overlap``. Use one ring per environment (test, production); never share keys between them.
    """

    def __init__(self, active: Signer) -> None:
        self._active = active
        self._staged: Signer | None = None
        self._retired: list[_RetiredKey] = []

    @property
    def active(self) -> Signer:
        return self._active

    @property
    def kid(self) -> str:
        return self._active.kid

    @property
    def alg(self) -> str:
        return self._active.alg

    def sign(self, signing_input: bytes) -> bytes:
        return self._active.sign(signing_input)

    def public_jwk(self) -> dict[str, str]:
        return self._active.public_jwk()

    def stage(self, next_signer: Signer) -> None:
        """Publish ``next_signer``'s public key ahead of signing with it."""
        self._staged = next_signer

    def rotate(
        self, new_signer: Signer, now: datetime, overlap: timedelta = DEFAULT_ROTATION_OVERLAP
    ) -> None:
        """Sign with ``new_signer`` from now on; keep the old public key until ``now + overlap``."""
        if overlap < _MIN_OVERLAP:
            raise ConfigurationError(
                "rotation overlap must outlive an assertion (≥ 300 s)", reason="bad_overlap"
            )
        if now.tzinfo is None:
            raise ConfigurationError("now must be an aware datetime", reason="naive_datetime")
        if new_signer.kid == self._active.kid:
            return
        old = self._active
        self._retired = [r for r in self._retired if r.jwk["kid"] != new_signer.kid]
        self._retired.append(_RetiredKey(old.public_jwk(), now + overlap))
        self._active = new_signer
        if self._staged is not None and self._staged.kid == new_signer.kid:
            self._staged = None

    def jwks(self, now: datetime) -> dict[str, list[dict[str, str]]]:
        """The JWK Set to publish: active, staged and unexpired retired keys, public members only."""
        self._retired = [r for r in self._retired if r.retire_after > now]
        candidates = [self._active.public_jwk()]
        if self._staged is not None:
            candidates.append(self._staged.public_jwk())
        candidates.extend(r.jwk for r in self._retired)
        keys: list[dict[str, str]] = []
        seen: set[str] = set()
        for jwk in candidates:
            if jwk["kid"] in seen:
                continue
            seen.add(jwk["kid"])
            keys.append({k: v for k, v in jwk.items() if k not in PRIVATE_JWK_MEMBERS})
        return {"keys": keys}

    def __repr__(self) -> str:
        return f"<KeyRing active={self._active.kid} retired={len(self._retired)}>"
