"""Time windows tested exactly at, just before and just after their edge (security.md T04, T11).

A window written ``<`` where ``<=`` was meant moves its edge by one tick and no test away from the
edge sees it (mutation testing, docs/security.md). Each case here sits on the edge itself.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from teams_ehr.errors import StateInvalidError, TokenInvalidError
from teams_ehr.keys import LocalSigner, sign_jws
from teams_ehr.smart.authorize import MAX_PENDING_TTL, PendingAuthorization, session_binding
from teams_ehr.smart.callback import parse_callback
from teams_ehr.smart.jwks import JwksCache
from teams_ehr.smart.jwt_verify import MAX_LEEWAY_SECONDS, JwtProfile, verify_jwt_sync

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TICK = timedelta(microseconds=1)
ISSUER = "https://ehr.test/oauth2"
JWKS_URI = "https://ehr.test/oauth2/jwks"
PROFILE = JwtProfile(algorithms=("RS256",), issuers=(ISSUER,), audience="client-abc")


@cache
def _signer() -> LocalSigner:
    return LocalSigner.generate("RS256")


def _verify(now: datetime, **claims: Any) -> dict[str, Any]:
    signer = _signer()
    base = {"iss": ISSUER, "aud": "client-abc", "sub": "prac-1"}
    token = sign_jws(signer, {}, {**base, **claims})

    def jwks(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"keys": [signer.public_jwk()]})

    with httpx.Client(transport=httpx.MockTransport(jwks)) as client:
        return verify_jwt_sync(token, PROFILE, JwksCache(), JWKS_URI, client, now=now)


def _reason(now: datetime, **claims: Any) -> str:
    with pytest.raises(TokenInvalidError) as caught:
        _verify(now, **claims)
    return caught.value.reason


# --- token expiry leeway (RFC 7519 §4.1.4–4.1.6; leeway capped at 60 s) -----------------------

NOW = int(T0.timestamp())
LEEWAY = PROFILE.leeway_seconds


def test_leeway_default_is_the_cap() -> None:
    assert LEEWAY == MAX_LEEWAY_SECONDS == 60


def test_exp_edge() -> None:
    assert _verify(T0, iat=NOW - 600, exp=NOW - LEEWAY + 1)["sub"] == "prac-1"
    assert _reason(T0, iat=NOW - 600, exp=NOW - LEEWAY) == "expired"
    assert _reason(T0, iat=NOW - 600, exp=NOW - LEEWAY - 1) == "expired"


def test_nbf_edge() -> None:
    assert _verify(T0, iat=NOW, exp=NOW + 300, nbf=NOW + LEEWAY - 1)
    assert _verify(T0, iat=NOW, exp=NOW + 300, nbf=NOW + LEEWAY)
    assert _reason(T0, iat=NOW, exp=NOW + 300, nbf=NOW + LEEWAY + 1) == "not_yet_valid"


def test_iat_edge() -> None:
    assert _verify(T0, iat=NOW + LEEWAY - 1, exp=NOW + 300)
    assert _verify(T0, iat=NOW + LEEWAY, exp=NOW + 300)
    assert _reason(T0, iat=NOW + LEEWAY + 1, exp=NOW + 300) == "issued_in_future"


def test_zero_leeway_edges() -> None:
    strict = JwtProfile(
        algorithms=("RS256",), issuers=(ISSUER,), audience="client-abc", leeway_seconds=0
    )
    signer = _signer()

    def jwks(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"keys": [signer.public_jwk()]})

    def check(**claims: Any) -> str:
        token = sign_jws(signer, {}, {"iss": ISSUER, "aud": "client-abc", **claims})
        with httpx.Client(transport=httpx.MockTransport(jwks)) as client:
            try:
                verify_jwt_sync(token, strict, JwksCache(), JWKS_URI, client, now=T0)
            except TokenInvalidError as exc:
                return exc.reason
        return "ok"

    assert check(iat=NOW, exp=NOW + 1) == "ok"
    assert check(iat=NOW, exp=NOW) == "expired"
    assert check(iat=NOW, exp=NOW + 1, nbf=NOW) == "ok"
    assert check(iat=NOW, exp=NOW + 1, nbf=NOW + 1) == "not_yet_valid"
    assert check(iat=NOW + 1, exp=NOW + 2) == "issued_in_future"


# --- OAuth state TTL (T04: single use, at most 10 minutes) ------------------------------------


def _pending(created: datetime, lifetime: timedelta) -> PendingAuthorization:
    return PendingAuthorization(
        state="s" * 43,
        code_verifier="v" * 43,
        nonce="n" * 43,
        org_id="org-1",
        issuer="https://ehr.test/fhir",
        client_id="client-abc",
        token_endpoint="https://ehr.test/oauth2/token",
        jwks_uri=None,
        oidc_issuer=None,
        redirect_uri="https://app.test/callback",
        scope="openid launch",
        session_binding=session_binding("sess-1"),
        launch_hash=None,
        mode="ehr",
        created_at=created,
        expires_at=created + lifetime,
    )


def test_pending_lifetime_edge() -> None:
    assert timedelta(minutes=10) == MAX_PENDING_TTL
    assert _pending(T0, MAX_PENDING_TTL).expires_at == T0 + MAX_PENDING_TTL
    assert _pending(T0, TICK).expires_at == T0 + TICK
    for lifetime in (MAX_PENDING_TTL + TICK, timedelta(0), -TICK):
        with pytest.raises(ValidationError):
            _pending(T0, lifetime)


def test_state_expiry_edge() -> None:
    pending = _pending(T0, MAX_PENDING_TTL)
    params = {"state": "s" * 43, "code": "the-code"}
    deadline = T0 + MAX_PENDING_TTL
    assert parse_callback(params, pending, session_id="sess-1", now=deadline - TICK) == "the-code"
    for late in (deadline, deadline + TICK):
        with pytest.raises(StateInvalidError) as caught:
            parse_callback(params, pending, session_id="sess-1", now=late)
        assert caught.value.reason == "state_expired"
