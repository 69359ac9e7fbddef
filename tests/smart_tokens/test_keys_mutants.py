"""Our signing keys at their edges (T13, docs/security.md; tests/mutation-report-edges.md): the
default algorithm, the refusals' reasons and texts, the RFC 7638 ``kid`` byte for byte, the JWKS
members (RFC 7517 §4, RFC 7518 §6), and the rotation overlap at exactly 300 s.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timedelta
from functools import cache

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from smart_tokens_fakes import T0

from teams_ehr.errors import ConfigurationError
from teams_ehr.keys import KeyRing, LocalSigner, jwk_thumbprint


@cache
def signer(alg: str, n: int = 0) -> LocalSigner:
    """Key generation is slow: one key per (alg, n) for the whole module."""
    return LocalSigner.generate(alg)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _kids(ring: KeyRing, when: datetime = T0) -> list[str]:
    return [k["kid"] for k in ring.jwks(when)["keys"]]


# -- keys and kids ----------------------------------------------------------------------------------


def test_generate_defaults_to_rs384_with_3072_bit_rsa() -> None:
    generated = LocalSigner.generate()
    assert generated.alg == "RS384"
    key = serialization.load_pem_private_key(generated.private_pem(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 3072


@pytest.mark.parametrize(
    ("alg", "kind"), [("RS256", rsa.RSAPrivateKey), ("ES384", ec.EllipticCurvePrivateKey)]
)
def test_generate_each_supported_alg(alg: str, kind: type) -> None:
    generated = signer(alg)
    assert generated.alg == alg
    assert generated.public_jwk()["alg"] == alg
    assert isinstance(serialization.load_pem_private_key(generated.private_pem(), None), kind)


@pytest.mark.parametrize("alg", ["HS256", "rs384", "none", ""])
def test_generate_refuses_other_algs_by_name(alg: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        LocalSigner.generate(alg)
    assert caught.value.reason == "bad_signing_alg"
    assert str(caught.value) == f"unsupported signing alg {alg!r}"


def test_unreadable_pem_is_refused_with_its_reason() -> None:
    with pytest.raises(ConfigurationError) as caught:
        LocalSigner.from_pem(
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "RS384"
        )
    assert caught.value.reason == "bad_key"
    assert str(caught.value) == "not a readable PEM private key"
    assert caught.value.__cause__ is None


def test_wrong_pem_password_is_an_unreadable_key() -> None:
    pem = signer("ES384").private_pem(password=b"right")
    with pytest.raises(ConfigurationError) as caught:
        LocalSigner.from_pem(pem, "ES384", password=b"wrong")
    assert (caught.value.reason, str(caught.value)) == ("bad_key", "not a readable PEM private key")


def test_a_pem_key_of_another_kind_is_refused_with_its_reason() -> None:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ConfigurationError) as caught:
        LocalSigner.from_pem(pem, "ES384")
    assert caught.value.reason == "bad_key"
    assert str(caught.value) == "only RSA and EC keys are supported"


def test_rsa_kid_is_the_rfc7638_thumbprint_byte_for_byte() -> None:
    s = signer("RS384")
    key = serialization.load_pem_private_key(s.private_pem(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    numbers = key.public_key().public_numbers()
    n = _b64(numbers.n.to_bytes(384, "big"))
    assert numbers.e == 65537
    canonical = '{"e":"AQAB","kty":"RSA","n":"' + n + '"}'
    kid = _b64(hashlib.sha256(canonical.encode()).digest())
    assert s.public_jwk() == {
        "kty": "RSA",
        "n": n,
        "e": "AQAB",
        "kid": kid,
        "alg": "RS384",
        "use": "sig",
    }
    assert s.kid == kid == jwk_thumbprint(s.public_jwk())


def _p384_with_short_x() -> ec.EllipticCurvePrivateKey:
    """A P-384 key whose x coordinate has a leading zero byte (about 1 in 256 keys)."""
    for d in range(1, 5000):
        key = ec.derive_private_key(d, ec.SECP384R1())
        if key.public_key().public_numbers().x < 1 << 376:
            return key
    raise AssertionError("no short coordinate found")  # pragma: no cover


def test_ec_kid_pads_coordinates_to_48_bytes_byte_for_byte() -> None:
    key = _p384_with_short_x()
    s = LocalSigner(key, "ES384")
    point = key.public_key().public_numbers()
    x, y = _b64(point.x.to_bytes(48, "big")), _b64(point.y.to_bytes(48, "big"))
    assert len(x) == len(y) == 64
    assert base64.urlsafe_b64decode(x + "==")[0] == 0  # a leading zero byte is kept
    canonical = f'{{"crv":"P-384","kty":"EC","x":"{x}","y":"{y}"}}'
    kid = _b64(hashlib.sha256(canonical.encode()).digest())
    assert s.public_jwk() == {
        "kty": "EC",
        "crv": "P-384",
        "x": x,
        "y": y,
        "kid": kid,
        "alg": "ES384",
        "use": "sig",
    }


# -- rotation ---------------------------------------------------------------------------------------


def test_an_overlap_of_exactly_300_seconds_is_enough() -> None:
    old, new = signer("ES384", 1), signer("ES384", 2)
    ring = KeyRing(old)
    ring.rotate(new, T0, timedelta(seconds=300))
    assert ring.kid == new.kid
    assert _kids(ring, T0 + timedelta(seconds=299)) == [new.kid, old.kid]
    assert _kids(ring, T0 + timedelta(seconds=300)) == [new.kid]


def test_a_short_overlap_is_refused_with_its_reason_and_nothing_changes() -> None:
    old = signer("ES384", 1)
    ring = KeyRing(old)
    with pytest.raises(ConfigurationError) as caught:
        ring.rotate(signer("ES384", 2), T0, timedelta(seconds=299, microseconds=999999))
    assert caught.value.reason == "bad_overlap"
    assert str(caught.value) == "rotation overlap must outlive an assertion (≥ 300 s)"
    assert ring.kid == old.kid


def test_a_naive_now_is_refused_with_its_reason() -> None:
    old = signer("ES384", 1)
    ring = KeyRing(old)
    with pytest.raises(ConfigurationError) as caught:
        ring.rotate(signer("ES384", 2), T0.replace(tzinfo=None))
    assert caught.value.reason == "naive_datetime"
    assert str(caught.value) == "now must be an aware datetime"
    assert ring.kid == old.kid


def test_default_overlap_is_two_hours() -> None:
    old, new = signer("ES384", 1), signer("ES384", 2)
    ring = KeyRing(old)
    ring.rotate(new, T0)
    assert _kids(ring, T0 + timedelta(hours=2) - timedelta(microseconds=1)) == [new.kid, old.kid]
    assert _kids(ring, T0 + timedelta(hours=2)) == [new.kid]


def test_two_rotations_keep_both_retired_keys_published() -> None:
    a, b, c = signer("ES384", 1), signer("ES384", 2), signer("ES384", 3)
    ring = KeyRing(a)
    ring.rotate(b, T0)
    ring.rotate(c, T0 + timedelta(minutes=30))
    assert _kids(ring) == [c.kid, a.kid, b.kid]
    assert _kids(ring, T0 + timedelta(hours=2)) == [c.kid, b.kid]
    assert repr(ring) == f"<KeyRing active={c.kid} retired=1>"


def test_rotating_back_to_a_retired_key_unretires_it_only() -> None:
    a, b, c = signer("ES384", 1), signer("ES384", 2), signer("ES384", 3)
    ring = KeyRing(a)
    ring.rotate(b, T0)
    ring.rotate(c, T0)
    ring.rotate(a, T0 + timedelta(hours=1))
    assert _kids(ring) == [a.kid, b.kid, c.kid]
    # a is active again and never expires; b and c retire on their own schedules
    assert _kids(ring, T0 + timedelta(hours=2)) == [a.kid, c.kid]
    assert _kids(ring, T0 + timedelta(hours=3)) == [a.kid]


def test_rotating_to_the_active_key_changes_nothing() -> None:
    a, b = signer("ES384", 1), signer("ES384", 2)
    ring = KeyRing(a)
    ring.rotate(b, T0)
    ring.rotate(b, T0 + timedelta(hours=1))
    assert _kids(ring, T0 + timedelta(hours=1)) == [b.kid, a.kid]
    assert repr(ring) == f"<KeyRing active={b.kid} retired=1>"


def test_a_staged_key_stays_published_when_another_key_is_rotated_in() -> None:
    a, b, c = signer("ES384", 1), signer("ES384", 2), signer("ES384", 3)
    ring = KeyRing(a)
    ring.stage(b)
    ring.rotate(c, T0)
    assert _kids(ring, T0 + timedelta(days=1)) == [c.kid, b.kid]


def test_rotating_to_the_staged_key_unstages_it() -> None:
    a, b, c = signer("ES384", 1), signer("ES384", 2), signer("ES384", 3)
    ring = KeyRing(a)
    ring.stage(b)
    ring.rotate(b, T0)
    ring.rotate(c, T0)
    # b retired: it goes at T0 + 2 h like a; a staged b would have stayed published
    assert _kids(ring, T0 + timedelta(hours=2)) == [c.kid]


def test_a_key_listed_twice_is_published_once_and_the_rest_still_follow() -> None:
    a, b = signer("ES384", 1), signer("ES384", 2)
    ring = KeyRing(a)
    ring.rotate(b, T0)
    ring.stage(b)  # staged == active: the same kid twice, then the retired a
    assert _kids(ring) == [b.kid, a.kid]
    ring.stage(a)  # staged == retired
    assert _kids(ring) == [b.kid, a.kid]
