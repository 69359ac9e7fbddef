"""Our keys: signers, RFC 7638 kids, JWKS publication and rotation (SPEC A9, security.md T13)."""

from __future__ import annotations

import json
from datetime import timedelta
from functools import cache

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st
from smart_tokens_fakes import T0

from teams_ehr.errors import ConfigurationError
from teams_ehr.keys import (
    JWKS_CACHE_CONTROL,
    KeyRing,
    LocalSigner,
    Signer,
    jwk_thumbprint,
    sign_jws,
)

PRIVATE = {"d", "p", "q", "dp", "dq", "qi"}


@cache
def signer(alg: str, n: int = 0) -> LocalSigner:
    """Key generation is slow: one key per (alg, n) for the whole module."""
    return LocalSigner.generate(alg)


def test_rfc7638_example_thumbprint() -> None:
    # RFC 7638 §3.1
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_thumbprint_needs_required_members() -> None:
    with pytest.raises(ConfigurationError):
        jwk_thumbprint({"kty": "oct", "k": "abc"})
    with pytest.raises(ConfigurationError):
        jwk_thumbprint({"kty": "RSA", "n": "abc"})


@pytest.mark.parametrize("alg", ["RS384", "ES384", "RS256"])
def test_signer_public_jwk_and_signature_verify(alg: str) -> None:
    s = signer(alg)
    assert isinstance(s, Signer)
    jwk = s.public_jwk()
    assert jwk["kid"] == jwk_thumbprint(jwk) == s.kid
    assert jwk["alg"] == alg
    assert jwk["use"] == "sig"
    assert not PRIVATE & jwk.keys()
    token = sign_jws(s, {"typ": "JWT", "alg": "none", "kid": "spoof"}, {"sub": "x"})
    header = jwt.get_unverified_header(token)
    assert header == {"typ": "JWT", "alg": alg, "kid": s.kid}
    decoded = jwt.decode(token, jwt.PyJWK(jwk, algorithm=alg), algorithms=[alg])
    assert decoded == {"sub": "x"}


def test_es384_signature_is_raw_96_bytes() -> None:
    s = signer("ES384")
    assert len(s.sign(b"input")) == 96


def test_pem_round_trip_keeps_kid_and_repr_hides_key() -> None:
    s = signer("RS384")
    pem = s.private_pem()
    again = LocalSigner.from_pem(pem, "RS384")
    assert again.kid == s.kid
    assert "PRIVATE" not in repr(again)
    assert repr(again) == f"<LocalSigner alg=RS384 kid={s.kid}>"
    encrypted = s.private_pem(password=b"pw")
    assert b"ENCRYPTED" in encrypted
    assert LocalSigner.from_pem(encrypted, "RS384", password=b"pw").kid == s.kid


def test_bad_keys_refused() -> None:
    weak = rsa.generate_private_key(65537, 1024)
    with pytest.raises(ConfigurationError, match="2048"):
        LocalSigner(weak, "RS384")
    with pytest.raises(ConfigurationError, match="P-384"):
        LocalSigner(ec.generate_private_key(ec.SECP256R1()), "ES384")
    with pytest.raises(ConfigurationError):
        LocalSigner.generate("HS256")
    with pytest.raises(ConfigurationError):
        LocalSigner.from_pem(b"not a pem", "RS384")
    with pytest.raises(ConfigurationError, match="RSA"):
        LocalSigner.from_pem(signer("ES384").private_pem(), "RS384")


@given(alg=st.sampled_from(["RS384", "ES384"]), n=st.integers(0, 2))
def test_jwks_has_no_private_members(alg: str, n: int) -> None:
    ring = KeyRing(signer(alg, n))
    ring.stage(signer("RS384" if alg == "ES384" else "ES384", n))
    text = json.dumps(ring.jwks(T0))
    for member in PRIVATE:
        assert f'"{member}"' not in text
    for key in ring.jwks(T0)["keys"]:
        assert {"kty", "kid", "alg", "use"} <= key.keys()


def test_kids_unique_and_stable() -> None:
    a, b = signer("RS384"), signer("ES384")
    assert a.kid == LocalSigner.from_pem(a.private_pem(), "RS384").kid
    ring = KeyRing(a)
    ring.rotate(b, T0)
    ring.rotate(a, T0 + timedelta(minutes=10))  # back to a: a must not be listed twice
    kids = [k["kid"] for k in ring.jwks(T0)["keys"]]
    assert len(kids) == len(set(kids)) == 2


def test_rotation_sign_only_with_published_key() -> None:
    old, new = signer("RS384", 1), signer("RS384", 2)
    ring = KeyRing(old)
    ring.stage(new)
    published = {k["kid"] for k in ring.jwks(T0)["keys"]}
    assert {old.kid, new.kid} == published
    assert ring.kid == old.kid  # staged keys are published, never used to sign yet
    ring.rotate(new, T0, timedelta(hours=2))
    token = sign_jws(ring, {"typ": "JWT"}, {"a": 1})
    assert jwt.get_unverified_header(token)["kid"] == new.kid
    for when in (T0, T0 + timedelta(hours=1, minutes=59)):
        assert {k["kid"] for k in ring.jwks(when)["keys"]} == {old.kid, new.kid}
        assert ring.kid in {k["kid"] for k in ring.jwks(when)["keys"]}
    assert {k["kid"] for k in ring.jwks(T0 + timedelta(hours=2))["keys"]} == {new.kid}


def test_rotation_overlap_must_outlive_assertions() -> None:
    ring = KeyRing(signer("RS384", 1))
    with pytest.raises(ConfigurationError):
        ring.rotate(signer("RS384", 2), T0, timedelta(seconds=299))
    with pytest.raises(ConfigurationError):
        ring.rotate(signer("RS384", 2), T0.replace(tzinfo=None))


def test_prod_and_nonprod_keys_differ() -> None:
    test_ring, prod_ring = KeyRing(LocalSigner.generate("ES384")), KeyRing(signer("ES384"))
    test_kids = {k["kid"] for k in test_ring.jwks(T0)["keys"]}
    prod_kids = {k["kid"] for k in prod_ring.jwks(T0)["keys"]}
    assert not test_kids & prod_kids


def test_jwks_cache_control_header() -> None:
    directives = [d.strip() for d in JWKS_CACHE_CONTROL.split(",")]
    assert "public" in directives
    max_age = next(int(d.split("=")[1]) for d in directives if d.startswith("max-age="))
    assert 300 <= max_age <= 86400
