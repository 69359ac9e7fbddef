"""A3 authorization request and A4 callback (security.md T01, T04, T05, T06, T08)."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leaks import assert_no_leak
from teams_ehr.errors import (
    ConfigurationError,
    MixUpDetectedError,
    OAuthError,
    StateInvalidError,
)
from teams_ehr.smart.authorize import (
    AUTO_SUBMIT_SCRIPT,
    AuthorizationRedirect,
    PendingAuthorization,
    SmartClientConfig,
    begin_authorization,
    state_key,
)
from teams_ehr.smart.callback import extract_state, parse_callback
from teams_ehr.smart.discovery import SmartConfiguration
from teams_ehr.smart.launch import launch_hash
from teams_ehr.smart.pkce import code_challenge_s256

BASE = "https://ehr.example.org/fhir/R4"
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
LAUNCH = "LAUNCH-CANARY-abc"
SMART = SmartConfiguration(
    issuer="https://ehr.example.org/oauth2",
    jwks_uri="https://ehr.example.org/oauth2/jwks",
    authorization_endpoint="https://ehr.example.org/oauth2/authorize",
    token_endpoint="https://ehr.example.org/oauth2/token",
    capabilities=("launch-ehr", "authorize-post"),
    code_challenge_methods_supported=("S256",),
    authorization_response_iss_parameter_supported=False,
)
CONFIG = SmartClientConfig(client_id="app-1", redirect_uri="https://app.test/callback")


def begin(
    config: SmartClientConfig = CONFIG, launch: str | None = LAUNCH, **kwargs: Any
) -> tuple[AuthorizationRedirect, PendingAuthorization]:
    options: dict[str, Any] = {"issuer": BASE, "org_id": "org-1", "session_id": "sess-1"}
    options.update(kwargs)
    return begin_authorization(config, SMART, launch=launch, now=NOW, **options)


def query(redirect: AuthorizationRedirect) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(redirect.url).query))


def test_get_authorization_request_parameters() -> None:
    redirect, pending = begin()
    assert redirect.method == "GET"
    assert redirect.url.startswith(SMART.authorization_endpoint + "?")  # type: ignore[operator]
    params = query(redirect)
    assert params["response_type"] == "code"
    assert params["client_id"] == "app-1"
    assert params["redirect_uri"] == "https://app.test/callback"
    assert params["scope"].split() == ["launch", "openid", "fhirUser"]
    assert params["launch"] == LAUNCH
    assert params["code_challenge_method"] == "S256"
    assert params["code_challenge"] == code_challenge_s256(pending.code_verifier.get_secret_value())
    assert params["state"] == pending.state.get_secret_value()
    assert params["nonce"] == pending.nonce.get_secret_value()
    assert pending.code_verifier.get_secret_value() not in redirect.url
    assert pending.mode == "ehr"
    assert pending.launch_hash == launch_hash(LAUNCH)
    assert pending.expires_at - pending.created_at == timedelta(minutes=10)


def test_authorize_aud_equals_approved_base() -> None:
    redirect, pending = begin()
    assert query(redirect)["aud"] == BASE
    assert pending.issuer == BASE


def test_launch_scope_added_for_ehr_and_dropped_for_standalone() -> None:
    redirect, _ = begin(scopes=["openid", "fhirUser", "user/Patient.rs"])
    assert query(redirect)["scope"].split()[0] == "launch"
    redirect, pending = begin(launch=None, scopes=["launch", "openid", "launch/patient"])
    params = query(redirect)
    assert "launch" not in params
    assert params["scope"].split() == ["openid", "launch/patient"]
    assert pending.mode == "standalone"
    assert pending.launch_hash is None


def test_post_form_rendering_escaped_and_csp_safe() -> None:
    config = CONFIG.model_copy(update={"use_post": True})
    hostile = 'a"><script>alert(1)</script>'
    redirect, _ = begin(config, launch=hostile)
    assert redirect.method == "POST"
    assert redirect.url == SMART.authorization_endpoint
    page = redirect.html()
    assert "<script>alert(1)" not in page
    assert "&quot;&gt;&lt;script&gt;" in page
    assert dict(redirect.fields)["launch"] == hostile
    scripts = re.findall(r"<script>(.*?)</script>", page)
    assert scripts == [AUTO_SUBMIT_SCRIPT]
    digest = base64.b64encode(hashlib.sha256(AUTO_SUBMIT_SCRIPT.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in redirect.csp()
    assert "default-src 'none'" in redirect.csp()


def test_post_needs_the_capability_and_an_ehr_launch() -> None:
    config = CONFIG.model_copy(update={"use_post": True})
    assert begin(config, launch=None)[0].method == "GET"
    smart = SMART.model_copy(update={"capabilities": ("launch-ehr",)})
    redirect, _ = begin_authorization(
        config, smart, issuer=BASE, org_id="o", launch=LAUNCH, session_id="s", now=NOW
    )
    assert redirect.method == "GET"
    with pytest.raises(ConfigurationError, match="POST"):
        redirect.html()


def test_no_secrets_in_reprs() -> None:
    redirect, pending = begin(config=CONFIG.model_copy(update={"use_post": True}))
    canaries = [
        LAUNCH,
        pending.state.get_secret_value(),
        pending.code_verifier.get_secret_value(),
        pending.nonce.get_secret_value(),
    ]
    assert_no_leak(canaries, redirect, pending)


def test_pending_round_trip_through_bytes() -> None:
    _, pending = begin()
    payload = pending.to_bytes()
    restored = PendingAuthorization.from_bytes(payload)
    assert restored.state.get_secret_value() == pending.state.get_secret_value()
    assert restored.code_verifier.get_secret_value() == pending.code_verifier.get_secret_value()
    assert restored.model_dump() == pending.model_dump()


def test_pending_ttl_capped_at_ten_minutes() -> None:
    _, pending = begin()
    data = pending.model_dump()
    data["expires_at"] = NOW + timedelta(minutes=11)
    with pytest.raises(pydantic.ValidationError):
        PendingAuthorization.model_validate(data)
    with pytest.raises(ConfigurationError):
        SmartClientConfig(
            client_id="a", redirect_uri="https://a/cb", pending_ttl=timedelta(hours=1)
        )


@pytest.mark.parametrize(
    "update",
    [
        {"redirect_uri": "http://app.test/cb"},
        {"redirect_uri": "https://app.test/cb#frag"},
        {"scopes": ("patient/Observation.sr",)},
        {"unknown": 1},
    ],
)
def test_client_config_is_strict(update: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        SmartClientConfig.model_validate(
            {"client_id": "a", "redirect_uri": "https://app.test/cb", **update}
        )


@settings(max_examples=20)
@given(st.integers(min_value=1, max_value=30))
def test_states_unique_long_urlsafe(count: int) -> None:
    states = {begin()[1].state.get_secret_value() for _ in range(count)}
    assert len(states) == count
    for state in states:
        assert len(state) >= 43
        assert re.fullmatch(r"[A-Za-z0-9_-]+", state)


def test_state_key_is_a_hash() -> None:
    assert state_key("abc") == hashlib.sha256(b"abc").hexdigest()


# -- callback (A4, T04) -------------------------------------------------------------------------


def callback(pending: PendingAuthorization, **params: str) -> dict[str, str]:
    return {"state": pending.state.get_secret_value(), "code": "CODE-CANARY", **params}


def test_callback_returns_code() -> None:
    _, pending = begin()
    code = parse_callback(callback(pending), pending, session_id="sess-1", now=NOW)
    assert code == "CODE-CANARY"


def test_callback_missing_state() -> None:
    _, pending = begin()
    with pytest.raises(StateInvalidError) as info:
        parse_callback({"code": "x"}, pending, session_id="sess-1", now=NOW)
    assert info.value.reason == "state_missing"


def test_callback_unknown_or_reused_state() -> None:
    _, pending = begin()
    with pytest.raises(StateInvalidError) as info:
        parse_callback(callback(pending), None, session_id="sess-1", now=NOW)
    assert info.value.reason == "state_unknown"


def test_callback_state_of_another_pending() -> None:
    _, pending = begin()
    _, other = begin()
    with pytest.raises(StateInvalidError):
        parse_callback(callback(pending), other, session_id="sess-1", now=NOW)


def test_callback_state_other_session() -> None:
    _, pending = begin()
    with pytest.raises(StateInvalidError) as info:
        parse_callback(callback(pending), pending, session_id="sess-2", now=NOW)
    assert info.value.reason == "state_other_session"


def test_callback_state_expired() -> None:
    _, pending = begin()
    later = NOW + timedelta(minutes=11)
    with pytest.raises(StateInvalidError) as info:
        parse_callback(callback(pending), pending, session_id="sess-1", now=later)
    assert info.value.reason == "state_expired"


@pytest.mark.parametrize("state", ["x" * 600, "a b", "a\nb"])
def test_callback_malformed_state(state: str) -> None:
    with pytest.raises(StateInvalidError):
        extract_state({"state": state})


def test_callback_error_mapped_without_echo() -> None:
    _, pending = begin()
    params = callback(pending, error="access_denied", error_description="user said PATIENT-42")
    del params["code"]
    with pytest.raises(OAuthError) as info:
        parse_callback(params, pending, session_id="sess-1", now=NOW)
    assert info.value.error == "access_denied"
    assert info.value.description == "user said PATIENT-42"
    assert_no_leak(["PATIENT-42"], info.value)


def test_callback_state_checked_before_error() -> None:
    with pytest.raises(StateInvalidError):
        parse_callback({"error": "access_denied"}, None, session_id="s", now=NOW)


def test_callback_iss_mismatch() -> None:
    _, pending = begin()
    with pytest.raises(MixUpDetectedError):
        parse_callback(
            callback(pending, iss="https://other-ehr.test/oauth2"),
            pending,
            session_id="sess-1",
            now=NOW,
        )


def test_callback_iss_matching_oidc_issuer_or_base() -> None:
    _, pending = begin()
    for iss in (SMART.issuer, BASE):
        assert parse_callback(
            callback(pending, iss=iss or ""), pending, session_id="sess-1", now=NOW
        )


def test_callback_iss_required_when_advertised() -> None:
    smart = SMART.model_copy(update={"authorization_response_iss_parameter_supported": True})
    _, pending = begin_authorization(
        CONFIG, smart, issuer=BASE, org_id="o", launch=LAUNCH, session_id="s", now=NOW
    )
    with pytest.raises(MixUpDetectedError) as info:
        parse_callback(callback(pending), pending, session_id="s", now=NOW)
    assert info.value.reason == "iss_missing"


@pytest.mark.parametrize("code", ["", "a b", "x" * 9000])
def test_callback_bad_code(code: str) -> None:
    _, pending = begin()
    with pytest.raises(OAuthError):
        parse_callback(callback(pending, code=code), pending, session_id="sess-1", now=NOW)


def test_rfc7636_vector() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert code_challenge_s256(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_custom_token_factory_is_used() -> None:
    tokens = iter(["S" * 43, "N" * 43])
    _, pending = begin(token_factory=lambda n: next(tokens))
    assert pending.state.get_secret_value() == "S" * 43
    assert pending.nonce.get_secret_value() == "N" * 43
    assert secrets  # the default factory is secrets.token_urlsafe
