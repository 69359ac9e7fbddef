"""Client authentication: private_key_jwt and client_secret_basic (SPEC A5, security.md T09/T10)."""

from __future__ import annotations

import base64
import itertools
from datetime import datetime, timedelta
from functools import cache

import httpx
import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr
from smart_tokens_fakes import T0, TOKEN_URL, FakeClock, FakeTokenEndpoint

from teams_ehr.errors import ConfigurationError
from teams_ehr.keys import LocalSigner
from teams_ehr.smart.client_auth import (
    CLIENT_ASSERTION_TYPE,
    ClientAuthentication,
    ClientSecretBasic,
    PrivateKeyJwt,
    PublicClient,
    choose_signing_alg,
)

CLIENT_ID = "client-abc"


@cache
def signer(alg: str) -> LocalSigner:
    return LocalSigner.generate(alg)


def decode(token: str, s: LocalSigner) -> dict[str, object]:
    key = jwt.PyJWK(s.public_jwk(), algorithm=s.alg)
    return jwt.decode(
        token,
        key,
        algorithms=[s.alg],
        audience=TOKEN_URL,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_assertion_claims_exact(alg: str) -> None:
    s = signer(alg)
    auth = PrivateKeyJwt(CLIENT_ID, s, jku="https://app.test/jwks", jti_factory=lambda: "jti-1")
    form, headers = auth.token_request_auth(TOKEN_URL, now=T0)
    assert headers == {}
    assert form.keys() == {"client_assertion_type", "client_assertion"}
    assert form["client_assertion_type"] == CLIENT_ASSERTION_TYPE
    token = form["client_assertion"]
    assert jwt.get_unverified_header(token) == {
        "typ": "JWT",
        "jku": "https://app.test/jwks",
        "alg": alg,
        "kid": s.kid,
    }
    now = int(T0.timestamp())
    assert decode(token, s) == {
        "iss": CLIENT_ID,
        "sub": CLIENT_ID,
        "aud": TOKEN_URL,
        "iat": now,
        "exp": now + 240,
        "jti": "jti-1",
    }


def test_aud_is_token_endpoint_not_fhir_base() -> None:
    auth = PrivateKeyJwt(CLIENT_ID, signer("RS384"))
    form, _ = auth.token_request_auth(TOKEN_URL, now=T0)
    claims = decode(form["client_assertion"], signer("RS384"))
    assert claims["aud"] == TOKEN_URL != "https://ehr.test/fhir"


@given(
    now=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(T0.tzinfo)
    ),
    lifetime=st.integers(1, 300),
)
def test_assertion_exp_window(now: datetime, lifetime: int) -> None:
    auth = PrivateKeyJwt(CLIENT_ID, signer("ES384"), lifetime_seconds=lifetime, include_nbf=True)
    claims = decode(auth.assertion(TOKEN_URL, now=now), signer("ES384"))
    exp, nbf = int(str(claims["exp"])), int(str(claims["nbf"]))
    assert 0 < exp - now.timestamp() <= 300
    assert nbf <= now.timestamp()
    assert exp - nbf <= 300


def test_jti_fresh_and_short() -> None:
    auth = PrivateKeyJwt(CLIENT_ID, signer("RS384"))
    jtis = {
        str(decode(auth.assertion(TOKEN_URL, now=T0), signer("RS384"))["jti"]) for _ in range(50)
    }
    assert len(jtis) == 50
    assert all(isinstance(j, str) and 40 <= len(j) <= 151 for j in jtis)


def test_bad_configuration_refused() -> None:
    for lifetime in (0, 301, -5):
        with pytest.raises(ConfigurationError):
            PrivateKeyJwt(CLIENT_ID, signer("RS384"), lifetime_seconds=lifetime)
    with pytest.raises(ConfigurationError):
        PrivateKeyJwt("", signer("RS384"))
    long_jti = PrivateKeyJwt(CLIENT_ID, signer("RS384"), jti_factory=lambda: "x" * 152)
    with pytest.raises(ConfigurationError):
        long_jti.assertion(TOKEN_URL, now=T0)
    with pytest.raises(ConfigurationError):
        PrivateKeyJwt(CLIENT_ID, signer("RS384")).assertion(TOKEN_URL, now=T0.replace(tzinfo=None))
    with pytest.raises(ConfigurationError):
        ClientSecretBasic(CLIENT_ID, SecretStr(""))


def test_no_common_alg_refused() -> None:
    assert choose_signing_alg(None, "ES384") == "ES384"
    assert choose_signing_alg(["RS384", "ES384"], "ES384") == "ES384"
    with pytest.raises(ConfigurationError) as info:
        choose_signing_alg(["RS256"], "ES384")
    assert info.value.reason == "no_common_signing_alg"
    with pytest.raises(ConfigurationError):
        choose_signing_alg([], "RS384")


def test_client_secret_basic_form_urlencodes_both_parts() -> None:
    auth = ClientSecretBasic("id:with space", SecretStr("s3cr3t/+&=é"))
    form, headers = auth.token_request_auth(TOKEN_URL, now=T0)
    assert form == {}
    raw = base64.b64decode(headers["Authorization"].removeprefix("Basic ")).decode()
    assert raw == "id%3Awith+space:s3cr3t%2F%2B%26%3D%C3%A9"
    assert "s3cr3t" not in repr(auth)


def test_public_client_sends_client_id() -> None:
    assert PublicClient(CLIENT_ID).token_request_auth(TOKEN_URL, now=T0) == (
        {"client_id": CLIENT_ID},
        {},
    )


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_strict_server_accepts_and_rejects_replay(alg: str) -> None:
    s = signer(alg)
    endpoint = FakeTokenEndpoint(CLIENT_ID, public_jwk=s.public_jwk())
    counter = itertools.count()
    auth = PrivateKeyJwt(CLIENT_ID, s, jti_factory=lambda: f"j{next(counter) // 2}")
    with httpx.Client(transport=httpx.MockTransport(endpoint)) as client:
        statuses = []
        for _ in range(2):
            form, headers = auth.token_request_auth(TOKEN_URL, now=T0)
            form["grant_type"] = "client_credentials"
            statuses.append(client.post(TOKEN_URL, data=form, headers=headers).status_code)
    assert statuses == [200, 401]  # the second assertion reuses jti "j0"


def test_outgoing_exp_tolerates_plus_60s_drift() -> None:
    s = signer("RS384")
    server_clock = FakeClock(T0 - timedelta(seconds=60))  # the server runs 60 s behind us
    endpoint = FakeTokenEndpoint(CLIENT_ID, public_jwk=s.public_jwk(), clock=server_clock)
    auth: ClientAuthentication = PrivateKeyJwt(CLIENT_ID, s)
    form, _ = auth.token_request_auth(TOKEN_URL, now=T0)
    with httpx.Client(transport=httpx.MockTransport(endpoint)) as client:
        response = client.post(TOKEN_URL, data={**form, "grant_type": "client_credentials"})
    assert response.status_code == 200


def test_repr_never_shows_key_material() -> None:
    s = signer("RS384")
    auth = PrivateKeyJwt(CLIENT_ID, s)
    assert repr(auth) == f"<PrivateKeyJwt client_id='client-abc' kid={s.kid}>"
    assert "PRIVATE" not in repr(auth.signer)
