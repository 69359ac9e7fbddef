"""Exact client authentication at the token endpoint (smart/client_auth.py; T09, T10).

RFC 7523 §2.2/§3 and SMART "client-confidential-asymmetric": every header field and claim of the
assertion is pinned exactly, lifetimes and ``jti`` lengths at their edges; RFC 6749 §2.3.1 for
HTTP Basic.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pytest
from pydantic import SecretStr

from teams_ehr.errors import ConfigurationError
from teams_ehr.keys import LocalSigner
from teams_ehr.smart.client_auth import (
    CLIENT_ASSERTION_TYPE,
    ClientSecretBasic,
    PrivateKeyJwt,
    PublicClient,
    choose_signing_alg,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
STAMP = int(NOW.timestamp())
TOKEN_URL = "https://ehr.test/oauth2/token"


@cache
def signer() -> LocalSigner:
    return LocalSigner.generate("ES384")


def decode(part: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return data


def parts(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    head, body, _ = assertion.split(".")
    return decode(head), decode(body)


def test_assertion_exact() -> None:
    auth = PrivateKeyJwt("client-1", signer(), jti_factory=lambda: "J")
    form, headers = auth.token_request_auth(TOKEN_URL, now=NOW)
    assert headers == {}
    assert list(form) == ["client_assertion_type", "client_assertion"]
    assert form["client_assertion_type"] == CLIENT_ASSERTION_TYPE
    assert CLIENT_ASSERTION_TYPE == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    header, claims = parts(form["client_assertion"])
    assert header == {"typ": "JWT", "alg": "ES384", "kid": signer().kid}
    assert claims == {
        "iss": "client-1",
        "sub": "client-1",
        "aud": TOKEN_URL,
        "iat": STAMP,
        "exp": STAMP + 240,
        "jti": "J",
    }
    assert auth.client_id == "client-1"
    assert auth.signer is signer()


def test_jku_header() -> None:
    auth = PrivateKeyJwt("c", signer(), jku="https://app.test/jwks")
    header, _ = parts(auth.assertion(TOKEN_URL, now=NOW))
    assert header["jku"] == "https://app.test/jwks"


def test_default_jti_is_fresh_and_long() -> None:
    auth = PrivateKeyJwt("c", signer())
    jtis = {parts(auth.assertion(TOKEN_URL, now=NOW))[1]["jti"] for _ in range(5)}
    assert len(jtis) == 5
    assert all(len(j) == 43 for j in jtis)


@pytest.mark.parametrize("lifetime", [1, 300])
def test_lifetime_edges_accepted(lifetime: int) -> None:
    auth = PrivateKeyJwt("c", signer(), lifetime_seconds=lifetime)
    assert parts(auth.assertion(TOKEN_URL, now=NOW))[1]["exp"] == STAMP + lifetime


@pytest.mark.parametrize("lifetime", [0, 301])
def test_lifetime_edges_refused(lifetime: int) -> None:
    with pytest.raises(ConfigurationError) as info:
        PrivateKeyJwt("c", signer(), lifetime_seconds=lifetime)
    assert info.value.reason == "bad_assertion_lifetime"
    assert str(info.value) == "assertion lifetime must be 1–300 seconds"


@pytest.mark.parametrize(
    ("make", "why", "message"),
    [
        (lambda: PrivateKeyJwt("", signer()), "missing_client_id", "client_id is required"),
        (lambda: PublicClient(""), "missing_client_id", "client_id is required"),
        (
            lambda: ClientSecretBasic("", SecretStr("s")),
            "missing_secret",
            "client id and secret are required",
        ),
        (
            lambda: ClientSecretBasic("c", SecretStr("")),
            "missing_secret",
            "client id and secret are required",
        ),
    ],
)
def test_construction_refusals(make: Any, why: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        make()
    assert info.value.reason == why
    assert str(info.value) == message


@pytest.mark.parametrize("jti", ["j", "j" * 151])
def test_jti_length_edges_accepted(jti: str) -> None:
    auth = PrivateKeyJwt("c", signer(), jti_factory=lambda: jti)
    assert parts(auth.assertion(TOKEN_URL, now=NOW))[1]["jti"] == jti


@pytest.mark.parametrize("jti", ["", "j" * 152, 5])
def test_jti_refused(jti: Any) -> None:
    auth = PrivateKeyJwt("c", signer(), jti_factory=lambda: jti)
    with pytest.raises(ConfigurationError) as info:
        auth.assertion(TOKEN_URL, now=NOW)
    assert info.value.reason == "bad_jti"
    assert str(info.value) == "jti must be a 1–151 character string"


def test_naive_now_refused() -> None:
    auth = PrivateKeyJwt("c", signer())
    with pytest.raises(ConfigurationError) as info:
        auth.assertion(TOKEN_URL, now=NOW.replace(tzinfo=None))
    assert info.value.reason == "naive_datetime"
    assert str(info.value) == "now must be an aware datetime"


@pytest.mark.parametrize(
    ("lifetime", "nbf"), [(240, STAMP - 30), (300, STAMP - 0), (10, STAMP - 30)]
)
def test_nbf_when_asked(lifetime: int, nbf: int) -> None:
    auth = PrivateKeyJwt("c", signer(), lifetime_seconds=lifetime, include_nbf=True)
    claims = parts(auth.assertion(TOKEN_URL, now=NOW))[1]
    assert claims["nbf"] == nbf
    assert claims["exp"] - claims["nbf"] <= 300
    assert "nbf" not in parts(PrivateKeyJwt("c", signer()).assertion(TOKEN_URL, now=NOW))[1]


def test_nbf_between_the_two_bounds() -> None:
    auth = PrivateKeyJwt("c", signer(), lifetime_seconds=280, include_nbf=True)
    assert parts(auth.assertion(TOKEN_URL, now=NOW))[1]["nbf"] == STAMP - 20


def test_reprs() -> None:
    auth = PrivateKeyJwt("c", signer())
    assert repr(auth) == f"<PrivateKeyJwt client_id='c' kid={signer().kid}>"
    assert repr(ClientSecretBasic("c", SecretStr("s"))) == "<ClientSecretBasic client_id='c'>"
    assert repr(PublicClient("c")) == "<PublicClient client_id='c'>"


def test_client_secret_basic_exact() -> None:
    auth = ClientSecretBasic("id:/ é", SecretStr("pw+&/ :"))
    form, headers = auth.token_request_auth(TOKEN_URL, now=NOW)
    assert form == {}
    expected = base64.b64encode(b"id%3A%2F+%C3%A9:pw%2B%26%2F+%3A").decode("ascii")
    assert headers == {"Authorization": f"Basic {expected}"}
    assert auth.client_id == "id:/ é"


def test_public_client_exact() -> None:
    auth = PublicClient("pub-1")
    assert auth.token_request_auth(TOKEN_URL, now=NOW) == ({"client_id": "pub-1"}, {})
    assert auth.client_id == "pub-1"


def test_choose_signing_alg() -> None:
    assert choose_signing_alg(None, "RS384") == "RS384"
    assert choose_signing_alg(["ES384", "RS384"], "RS384") == "RS384"
    with pytest.raises(ConfigurationError) as info:
        choose_signing_alg([], "RS384")
    assert info.value.reason == "no_common_signing_alg"
    assert str(info.value) == "the token endpoint does not accept RS384"


def test_assertion_time_is_the_given_now() -> None:
    later = NOW + timedelta(hours=1)
    claims = parts(PrivateKeyJwt("c", signer()).assertion(TOKEN_URL, now=later))[1]
    assert claims["iat"] == STAMP + 3600
