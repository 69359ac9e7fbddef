"""Exact behaviour of inbound JWT verification (smart/jwt_verify.py, threat T11; RFC 8725).

Each rule of the module docstring is pinned with its exact ``reason`` and message, on all three
entry points where they differ, and at its edge (token length, leeway bounds).
"""

from __future__ import annotations

import json
from datetime import timedelta
from functools import cache
from typing import Any

import httpx
import pytest
from smart_tokens_fakes import T0, JwksEndpoint

from teams_ehr.errors import ConfigurationError, TokenInvalidError, UsageError
from teams_ehr.keys import LocalSigner, b64url, sign_jws
from teams_ehr.smart.jwks import JwksCache
from teams_ehr.smart.jwt_verify import (
    MAX_LEEWAY_SECONDS,
    MAX_TOKEN_LENGTH,
    JwtProfile,
    verify_jwt,
    verify_jwt_flow,
    verify_jwt_sync,
)

JWKS_URI = "https://ehr.test/oauth2/jwks"
ISS = "https://ehr.test/oauth2"
AUD = "client-abc"
NOW = int(T0.timestamp())
PROFILE = JwtProfile(algorithms=("RS256",), issuers=(ISS,), audience=AUD)


@cache
def signer(n: int = 0) -> LocalSigner:
    return LocalSigner.generate("RS256")


def claims(**overrides: Any) -> dict[str, Any]:
    base = {"iss": ISS, "aud": AUD, "sub": "prac-1", "iat": NOW, "exp": NOW + 300}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def token(header: dict[str, Any] | None = None, n: int = 0, **overrides: Any) -> str:
    return sign_jws(signer(n), header or {}, claims(**overrides))


def raw(header: Any, body: Any = None, signature: bytes = b"sig") -> str:
    def part(value: Any) -> str:
        return b64url(json.dumps(value).encode()) if not isinstance(value, bytes) else b64url(value)

    return f"{part(header)}.{part(claims() if body is None else body)}.{b64url(signature)}"


def endpoint(*ns: int) -> JwksEndpoint:
    return JwksEndpoint([signer(n).public_jwk() for n in ns or (0,)], url=JWKS_URI)


def verify(tok: str, profile: JwtProfile = PROFILE, keys: tuple[int, ...] = (0,)) -> dict[str, Any]:
    with httpx.Client(transport=httpx.MockTransport(endpoint(*keys))) as client:
        return verify_jwt_sync(tok, profile, JwksCache(), JWKS_URI, client, now=T0)


def reason(tok: str, profile: JwtProfile = PROFILE, keys: tuple[int, ...] = (0,)) -> str:
    with pytest.raises(TokenInvalidError) as info:
        verify(tok, profile, keys)
    assert str(info.value) == f"JWT rejected: {info.value.reason}"
    assert info.value.__cause__ is None
    return info.value.reason


def profile(**kwargs: Any) -> JwtProfile:
    return JwtProfile(**({"algorithms": ("RS256",), "issuers": (ISS,), "audience": AUD} | kwargs))


# -- JwtProfile -----------------------------------------------------------------------------


def test_profile_defaults() -> None:
    assert PROFILE.required == ("exp", "iat", "iss", "aud")
    assert PROFILE.leeway_seconds == MAX_LEEWAY_SECONDS == 60
    assert dict(PROFILE.expected_claims) == {}
    assert PROFILE.typ is None


@pytest.mark.parametrize(
    ("kwargs", "why", "message"),
    [
        (
            {"algorithms": ()},
            "bad_jwt_algorithms",
            "algorithms must be a non-empty list of asymmetric JWS algorithms",
        ),
        (
            {"algorithms": ("RS256", "HS256")},
            "bad_jwt_algorithms",
            "algorithms must be a non-empty list of asymmetric JWS algorithms",
        ),
        ({"issuers": ()}, "bad_jwt_profile", "issuers and audience are required"),
        ({"issuers": (ISS, "")}, "bad_jwt_profile", "issuers and audience are required"),
        ({"audience": ""}, "bad_jwt_profile", "issuers and audience are required"),
        (
            {"required": ("exp", "iat", "iss")},
            "bad_jwt_profile",
            "exp, iat, iss and aud must be required",
        ),
        (
            {"required": ("iat", "iss", "aud")},
            "bad_jwt_profile",
            "exp, iat, iss and aud must be required",
        ),
        ({"leeway_seconds": -1}, "bad_leeway", "leeway must be 0–60 seconds"),
        ({"leeway_seconds": 61}, "bad_leeway", "leeway must be 0–60 seconds"),
    ],
)
def test_profile_refusals(kwargs: dict[str, Any], why: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        profile(**kwargs)
    assert info.value.reason == why
    assert str(info.value) == message


@pytest.mark.parametrize("leeway", [0, 60])
def test_leeway_bounds_accepted(leeway: int) -> None:
    assert profile(leeway_seconds=leeway).leeway_seconds == leeway


def test_extra_required_claims_and_several_algorithms_accepted() -> None:
    p = profile(required=("exp", "iat", "iss", "aud", "sub"), algorithms=("RS256", "ES384"))
    assert verify(token(), p)["sub"] == "prac-1"
    assert reason(token(sub=None), p) == "missing_claim"


def test_expected_claims_are_copied() -> None:
    source = {"appid": "a"}
    p = profile(expected_claims=source)
    source["appid"] = "b"
    assert dict(p.expected_claims) == {"appid": "a"}
    assert verify(token(appid="a"), p)["appid"] == "a"


# -- entry points ---------------------------------------------------------------------------


def test_naive_now_refused_everywhere() -> None:
    naive = T0.replace(tzinfo=None)
    jwks = JwksCache()
    with pytest.raises(UsageError) as info:
        next(verify_jwt_flow(token(), PROFILE, jwks, JWKS_URI, now=naive))
    assert str(info.value) == "now must be a timezone-aware datetime"
    with httpx.Client() as client, pytest.raises(UsageError) as info:
        verify_jwt_sync(token(), PROFILE, jwks, JWKS_URI, client, now=naive)
    assert str(info.value) == "now must be a timezone-aware datetime"


@pytest.mark.anyio
async def test_naive_now_refused_async() -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(UsageError) as info:
            await verify_jwt(
                token(), PROFILE, JwksCache(), JWKS_URI, client, now=T0.replace(tzinfo=None)
            )
    assert str(info.value) == "now must be a timezone-aware datetime"


def test_kid_selects_among_several_keys_sync_and_flow() -> None:
    tok = token(n=2)
    assert verify(tok, keys=(1, 2))["sub"] == "prac-1"
    flow = verify_jwt_flow(tok, PROFILE, JwksCache(), JWKS_URI, now=T0)
    request = next(flow)
    with pytest.raises(StopIteration) as done:
        flow.send(endpoint(1, 2)(request))
    assert done.value.value["sub"] == "prac-1"


@pytest.mark.anyio
async def test_kid_selects_among_several_keys_async() -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(endpoint(1, 2))) as client:
        result = await verify_jwt(token(n=2), PROFILE, JwksCache(), JWKS_URI, client, now=T0)
    assert result["sub"] == "prac-1"


@pytest.mark.anyio
async def test_async_claims_checked_with_the_given_now() -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(endpoint())) as client:
        with pytest.raises(TokenInvalidError) as info:
            await verify_jwt(
                token(), PROFILE, JwksCache(), JWKS_URI, client, now=T0 + timedelta(hours=1)
            )
    assert info.value.reason == "expired"


# -- the header -----------------------------------------------------------------------------


def _padded(length: int) -> str:
    """A valid token of exactly ``length`` characters (filler claims set the size)."""
    signature = len(token().split(".")[2])
    for extra in range(4):
        header = len(token({"x": "y" * extra}).split(".")[0])
        for filler in range(length // 2, length):
            body = json.dumps(claims(pad="x" * filler), separators=(",", ":")).encode()
            size = header + len(b64url(body)) + signature + 2
            if size == length:
                tok = token({"x": "y" * extra}, pad="x" * filler)
                assert len(tok) == length
                return tok
            if size > length:
                break
    raise AssertionError(f"no token of length {length}")


def test_token_length_edge() -> None:
    assert MAX_TOKEN_LENGTH == 16_384
    assert verify(_padded(MAX_TOKEN_LENGTH))["sub"] == "prac-1"
    assert reason(_padded(MAX_TOKEN_LENGTH + 1)) == "malformed"


@pytest.mark.parametrize(
    "tok",
    [
        "a.b",
        "a.b.c.d",
        "....",
        "%%%.e30.e30",
        b64url(b"[1]") + ".e30.e30",
        b64url(b'"alg"') + ".e30.e30",
        b64url(b"{") + ".e30.e30",
        b64url(b"[" * 5000 + b"]" * 5000) + ".e30.e30",
    ],
)
def test_malformed_header(tok: str) -> None:
    assert reason(tok) == "malformed"


@pytest.mark.parametrize("alg", [None, 1, ["RS256"], "rs256", "RS512", "HS256", "none"])
def test_alg_not_allowed(alg: Any) -> None:
    header = {"kid": signer(0).kid} | ({} if alg is None else {"alg": alg})
    assert reason(raw(header)) == "alg_not_allowed"


def test_crit_refused_even_when_empty() -> None:
    assert reason(raw({"alg": "RS256", "crit": []})) == "crit_unsupported"


@pytest.mark.parametrize("kid", [5, ["k"], {"k": 1}, True])
def test_non_string_kid_is_malformed(kid: Any) -> None:
    assert reason(raw({"alg": "RS256", "kid": kid})) == "malformed"


@pytest.mark.parametrize(
    ("expected", "header_typ", "ok"),
    [
        ("JWT", "JWT", True),
        ("JWT", "jwt", True),
        ("JWT", "application/jwt", True),
        ("application/JWT", "JWT", True),
        ("JWT", "application/at+jwt", False),
        ("JWT", "xapplication/jwt", False),
        ("JWT", None, False),
        ("JWT", 1, False),
        ("at+jwt", "AT+JWT", True),
    ],
)
def test_typ_rules(expected: str, header_typ: Any, ok: bool) -> None:
    p = profile(typ=expected)
    header = {} if header_typ is None else {"typ": header_typ}
    tok = token(header)
    if ok:
        assert verify(tok, p)["sub"] == "prac-1"
    else:
        assert reason(tok, p) == "wrong_typ"


def test_typ_ignored_without_a_profile_typ() -> None:
    assert verify(token({"typ": "anything"}))["sub"] == "prac-1"


# -- claims ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"exp": True}, "malformed"),
        ({"exp": "1"}, "malformed"),
        ({"exp": 10**400}, "malformed"),
        ({"iat": [1]}, "malformed"),
        ({"nbf": False}, "malformed"),
        ({"nbf": NOW + 61}, "not_yet_valid"),
        ({"iat": NOW + 61}, "issued_in_future"),
        ({"exp": NOW - 60}, "expired"),
        ({"aud": [AUD + "x"]}, "wrong_audience"),
        ({"iss": ISS.upper()}, "wrong_issuer"),
        ({"aud": None}, "missing_claim"),
    ],
)
def test_claim_reasons(overrides: dict[str, Any], why: str) -> None:
    assert reason(token(**overrides)) == why


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_malformed(value: str) -> None:
    body = json.dumps(claims()).replace(f'"exp": {NOW + 300}', f'"exp": {value}')
    assert value in body
    segments = token().split(".")
    head = segments[0]
    signing_input = f"{head}.{b64url(body.encode())}".encode()
    tok = f"{signing_input.decode()}.{b64url(signer(0).sign(signing_input))}"
    assert reason(tok) == "malformed"


@pytest.mark.parametrize(
    "overrides",
    [
        {"exp": NOW - 59},
        {"exp": NOW - 59.5},
        {"nbf": NOW + 60},
        {"iat": NOW + 60},
        {"exp": float(NOW + 1)},
        {"aud": [AUD, "other"]},
    ],
)
def test_claims_accepted_at_their_edges(overrides: dict[str, Any]) -> None:
    assert verify(token(**overrides))["sub"] == "prac-1"


def test_zero_leeway_edges() -> None:
    strict = profile(leeway_seconds=0)
    assert reason(token(exp=NOW), strict) == "expired"
    assert verify(token(exp=NOW + 1), strict)
    assert reason(token(nbf=NOW + 1), strict) == "not_yet_valid"
    assert verify(token(nbf=NOW), strict)
    assert reason(token(iat=NOW + 1), strict) == "issued_in_future"
    assert verify(token(iat=NOW), strict)


def test_expected_claims_each_checked() -> None:
    p = profile(expected_claims={"appid": "A", "tid": "T"})
    assert verify(token(appid="A", tid="T"), p)["tid"] == "T"
    assert reason(token(appid="A"), p) == "missing_claim"
    assert reason(token(tid="T"), p) == "missing_claim"
    assert reason(token(appid="A", tid="X"), p) == "claim_mismatch"
    assert reason(token(appid="B", tid="T"), p) == "claim_mismatch"


def test_one_of_several_issuers() -> None:
    p = profile(issuers=("https://a.test", ISS))
    assert verify(token(), p)["iss"] == ISS
    assert reason(token(iss="https://a.test/"), p) == "wrong_issuer"


def test_bad_signature() -> None:
    head, body, _ = token().split(".")
    other = token(n=1).split(".")[2]
    assert reason(f"{head}.{body}.{other}") == "bad_signature"


def test_time_claims_use_only_the_injected_clock() -> None:
    """pyjwt's own exp/nbf/iat checks read the system clock; they must stay off (RFC 8725 §3.10)."""
    future = T0.replace(year=2100)
    stamp = int(future.timestamp())
    tok = token(iat=stamp - 10, nbf=stamp - 10, exp=stamp + 300)
    with httpx.Client(transport=httpx.MockTransport(endpoint())) as client:
        result = verify_jwt_sync(tok, PROFILE, JwksCache(), JWKS_URI, client, now=future)
    assert result["nbf"] == stamp - 10


def test_payload_that_pyjwt_cannot_read_is_malformed() -> None:
    head = token().split(".")[0]
    signing_input = f"{head}.{b64url(b'not json')}".encode()
    tok = f"{signing_input.decode()}.{b64url(signer(0).sign(signing_input))}"
    assert reason(tok) == "malformed"


@pytest.mark.parametrize("iss", [[ISS], 5])
def test_non_string_issuer(iss: Any) -> None:
    assert reason(token(iss=iss)) == "wrong_issuer"
