"""Totality of the JWT-side parsers: a JWK Set document and its ``Cache-Control`` (RFC 7517 §5,
RFC 9111 §5.2), the unverified JOSE header and the claims of a correctly signed token (RFC 7519,
OIDC Core §3.1.3.7) and Graph's validation tokens (Graph docs, "validate tokens in change
notifications")."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.hashes import SHA256
from fuzz_support import (
    JSON_VALUES,
    NOW,
    SCALARS,
    TEXT,
    answers,
    assert_total,
    json_bodies,
    responses,
    run_flow,
    shaped,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from teams_ehr.attendance.validation_tokens import GraphValidationTokenVerifier
from teams_ehr.errors import TokenInvalidError
from teams_ehr.smart.jwks import JwksCache
from teams_ehr.smart.jwt_verify import JwtProfile, verify_jwt_flow

JWKS_URI = "https://auth.example.org/jwks"
ISSUER = "https://auth.example.org"
AUDIENCE = "client-1"
KID = "k1"
TENANT = "11111111-2222-3333-4444-555555555555"
_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_PUBLIC_JWK: dict[str, Any] = {
    **jwt.algorithms.RSAAlgorithm.to_jwk(_KEY.public_key(), as_dict=True),
    "kid": KID,
    "alg": "RS256",
    "use": "sig",
}
_JWKS_RESPONSE = httpx.Response(200, json={"keys": [_PUBLIC_JWK]})
PROFILE = JwtProfile(algorithms=("RS256", "ES256"), issuers=(ISSUER,), audience=AUDIENCE)

JWK_KEYS = ["kty", "kid", "alg", "use", "crv", "n", "e", "x", "y", "d", "key_ops", "x5c"]
JWK = st.one_of(
    shaped(JWK_KEYS),
    shaped(
        JWK_KEYS,
        st.sampled_from(
            ["RSA", "EC", "P-256", "RS256", "ES256", "sig", KID, "AQAB", "", "__", "AA"]
        ),
    ),
    st.builds(lambda extra: {**_PUBLIC_JWK, **extra}, shaped(JWK_KEYS)),
)
JWKS_DOC = st.one_of(JSON_VALUES, st.builds(lambda keys: {"keys": keys}, st.lists(JWK, max_size=3)))


@given(
    responses(json_bodies(JWKS_DOC), header_names=("cache-control", "content-type")),
    st.one_of(st.none(), st.just(KID), TEXT),
    st.sampled_from(["RS256", "ES256", "PS256", "HS256", "none", ""]),
)
@example(httpx.Response(200, content=b"[" * 100_000), KID, "RS256")
@example(
    httpx.Response(200, headers={"Cache-Control": "max-age=" + "9" * 40}, json={"keys": []}),
    KID,
    "RS256",
)
@example(
    httpx.Response(200, headers=[(b"Cache-Control", "max-age=²".encode())], json={"keys": []}),
    KID,
    "RS256",
)
def test_jwks_documents_are_total(response: httpx.Response, kid: str | None, alg: str) -> None:
    cache = JwksCache(clock=lambda: NOW)
    assert_total(lambda: run_flow(cache.key_flow(JWKS_URI, kid, alg), answers([response])))


def _b64(data: bytes) -> str:
    return jwt.utils.base64url_encode(data).decode("ascii")


def _sign(claims: dict[str, Any], headers: dict[str, Any]) -> str:
    """An RS256 JWS over any header and claims (pyjwt's encoder refuses odd ones; a peer may not)."""
    header = {"alg": "RS256", "kid": KID, **headers}
    signing_input = ".".join(
        _b64(json.dumps(part).encode("utf-8", "surrogatepass")) for part in (header, claims)
    )
    signature = _KEY.sign(signing_input.encode("ascii"), PKCS1v15(), SHA256())
    return f"{signing_input}.{_b64(signature)}"


TOKENS = st.one_of(
    TEXT,
    st.builds(lambda a, b, c: f"{a}.{b}.{c}", TEXT, TEXT, TEXT),
    st.builds(
        lambda header, rest: f"{_b64(header)}.{rest}",
        json_bodies(shaped(["alg", "kid", "typ", "crit"])),
        TEXT,
    ),
)


@given(TOKENS)
def test_unverified_tokens_are_total(token: str) -> None:
    cache = JwksCache(clock=lambda: NOW)
    assert_total(
        lambda: run_flow(
            verify_jwt_flow(token, PROFILE, cache, JWKS_URI, now=NOW), answers([_JWKS_RESPONSE])
        )
    )


TIME_VALUES = st.one_of(
    SCALARS,
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 10**400, 2**64, NOW.timestamp()]),
)
CLAIMS = st.builds(
    lambda base, extra: {**base, **extra},
    st.fixed_dictionaries(
        {"iss": st.just(ISSUER), "aud": st.just(AUDIENCE)},
        optional={"exp": TIME_VALUES, "iat": TIME_VALUES, "nbf": TIME_VALUES},
    ),
    shaped(["iss", "aud", "exp", "iat", "nbf", "sub", "tid", "ver"], TIME_VALUES | JSON_VALUES),
)
HEADERS = shaped(["kid", "typ", "crit", "x5t", "jku"], st.one_of(st.just(KID), JSON_VALUES))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(CLAIMS, HEADERS)
@example({"iss": ISSUER, "aud": AUDIENCE, "exp": 10**400}, {})
@example({"iss": ISSUER, "aud": AUDIENCE, "exp": float("nan")}, {})
def test_signed_token_claims_are_total(claims: dict[str, Any], headers: dict[str, Any]) -> None:
    token = _sign(claims, headers)
    cache = JwksCache(clock=lambda: NOW)
    assert_total(
        lambda: run_flow(
            verify_jwt_flow(token, PROFILE, cache, JWKS_URI, now=NOW), answers([_JWKS_RESPONSE])
        )
    )


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(TOKENS, st.builds(_sign, CLAIMS.map(lambda c: {"tid": TENANT, **c}), HEADERS)))
@example("\ud800")
def test_graph_validation_tokens_are_total(token: str) -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"keys": [_PUBLIC_JWK]}, request=request)

    async def verify() -> str:
        async with httpx.AsyncClient(transport=httpx.MockTransport(respond)) as client:
            verifier = GraphValidationTokenVerifier(
                app_id=AUDIENCE, jwks=JwksCache(clock=lambda: NOW), client=client, jwks_uri=JWKS_URI
            )
            return await verifier(token, tenant_ids=frozenset({TENANT}), now=NOW + timedelta(0))

    assert_total(verify)


def test_non_finite_or_huge_exp_is_refused_not_accepted() -> None:
    for exp in (float("nan"), float("inf"), 10**400):
        token = _sign({"iss": ISSUER, "aud": AUDIENCE, "exp": exp, "iat": NOW.timestamp()}, {})
        flow = verify_jwt_flow(token, PROFILE, JwksCache(clock=lambda: NOW), JWKS_URI, now=NOW)
        refused = assert_total(run_flow, flow, answers([_JWKS_RESPONSE]))
        assert isinstance(refused, TokenInvalidError), exp
        assert refused.reason == "malformed"
