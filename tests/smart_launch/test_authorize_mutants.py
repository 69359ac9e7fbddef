"""Exact shape of the authorization request and its pending state (smart/authorize.py, A3).

SMART App Launch 2.x "Obtain authorization code" names every parameter; RFC 7636 adds PKCE;
threats T01 (``aud``), T04 (``state``: session-bound, ≤ 10 minutes) and T05 (verifier never
sent). Each test pins one field or one edge exactly, so a changed value, order or bound fails.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pydantic
import pytest

from teams_ehr.errors import ConfigurationError, DiscoveryError, UsageError
from teams_ehr.smart.authorize import (
    AUTO_SUBMIT_SCRIPT,
    MAX_PENDING_TTL,
    AuthorizationRedirect,
    PendingAuthorization,
    SmartClientConfig,
    begin_authorization,
    session_binding,
    state_key,
)
from teams_ehr.smart.discovery import SmartConfiguration
from teams_ehr.smart.launch import launch_hash
from teams_ehr.smart.pkce import code_challenge_s256

BASE = "https://ehr.example.org/fhir/R4"
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
SMART = SmartConfiguration(
    issuer="https://ehr.example.org/oauth2",
    jwks_uri="https://ehr.example.org/oauth2/jwks",
    authorization_endpoint="https://ehr.example.org/oauth2/authorize",
    token_endpoint="https://ehr.example.org/oauth2/token",
    capabilities=("launch-ehr", "authorize-post"),
    code_challenge_methods_supported=("S256",),
)
CONFIG = SmartClientConfig(client_id="app-1", redirect_uri="https://app.test/callback")
TOKENS = ("S" * 43, "N" * 43)


def _factory(sizes: list[int]) -> Any:
    values = iter(TOKENS)

    def make(size: int) -> str:
        sizes.append(size)
        return next(values)

    return make


def _begin(
    config: SmartClientConfig = CONFIG,
    smart: SmartConfiguration = SMART,
    launch: str | None = "LAUNCH-1",
    **kwargs: Any,
) -> tuple[AuthorizationRedirect, PendingAuthorization]:
    options: dict[str, Any] = {
        "issuer": BASE,
        "org_id": "org-1",
        "session_id": "sess-1",
        "now": NOW,
        "token_factory": _factory([]),
    }
    options.update(kwargs)
    return begin_authorization(config, smart, launch=launch, **options)


def _query(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


# -- SmartClientConfig ----------------------------------------------------------------------


def test_config_defaults() -> None:
    assert CONFIG.scopes == ("launch", "openid", "fhirUser")
    assert CONFIG.use_post is False
    assert CONFIG.epic_client_id_header is True
    assert CONFIG.pending_ttl == MAX_PENDING_TTL == timedelta(minutes=10)
    assert CONFIG.allow_http is False
    assert CONFIG.allow_missing_pkce_metadata is False
    assert CONFIG.id_token_algorithms == ("RS256",)


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"redirect_uri": "http://app.test/cb"}, "redirect_uri must be https"),
        ({"redirect_uri": "ftp://app.test/cb", "allow_http": True}, "redirect_uri must be https"),
        (
            {"redirect_uri": "https:///cb"},
            "redirect_uri must be absolute, without fragment or userinfo",
        ),
        (
            {"redirect_uri": "https://app.test/cb#f"},
            "redirect_uri must be absolute, without fragment or userinfo",
        ),
        (
            {"redirect_uri": "https://u@app.test/cb"},
            "redirect_uri must be absolute, without fragment or userinfo",
        ),
        ({"pending_ttl": timedelta(0)}, "pending_ttl must be within (0, 10 minutes]"),
        ({"pending_ttl": timedelta(seconds=-1)}, "pending_ttl must be within (0, 10 minutes]"),
        (
            {"pending_ttl": MAX_PENDING_TTL + timedelta(microseconds=1)},
            "pending_ttl must be within (0, 10 minutes]",
        ),
    ],
)
def test_config_refusals(update: dict[str, Any], message: str) -> None:
    data = {"client_id": "a", "redirect_uri": "https://app.test/cb", **update}
    with pytest.raises(ConfigurationError) as info:
        SmartClientConfig.model_validate(data)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "update",
    [
        {"redirect_uri": "http://127.0.0.1:8000/cb", "allow_http": True},
        {"pending_ttl": timedelta(microseconds=1)},
        {"pending_ttl": MAX_PENDING_TTL},
        {"redirect_uri": "https://app.test/cb?x=1"},
    ],
)
def test_config_edges_accepted(update: dict[str, Any]) -> None:
    SmartClientConfig.model_validate(
        {"client_id": "a", "redirect_uri": "https://a.test/cb"} | update
    )


def test_config_scopes_are_validated() -> None:
    with pytest.raises(ConfigurationError):
        SmartClientConfig(client_id="a", redirect_uri="https://a.test/cb", scopes=("bad scope",))


# -- hashes ---------------------------------------------------------------------------------


def test_state_key_and_session_binding_exact() -> None:
    assert state_key("é") == hashlib.sha256("é".encode()).hexdigest()
    assert (
        session_binding("sess-é")
        == hashlib.sha256(b"teams-ehr/session\x00" + "sess-é".encode()).hexdigest()
    )


# -- the GET request ------------------------------------------------------------------------


def test_get_request_parameters_in_order() -> None:
    sizes: list[int] = []
    redirect, pending = _begin(token_factory=_factory(sizes))
    assert sizes == [32, 32]
    assert redirect.method == "GET"
    assert redirect.fields == ()
    assert redirect.url.startswith(SMART.authorization_endpoint + "?")  # type: ignore[operator]
    verifier = pending.code_verifier.get_secret_value()
    assert _query(redirect.url) == [
        ("response_type", "code"),
        ("client_id", "app-1"),
        ("redirect_uri", "https://app.test/callback"),
        ("scope", "launch openid fhirUser"),
        ("launch", "LAUNCH-1"),
        ("state", TOKENS[0]),
        ("aud", BASE),
        ("code_challenge", code_challenge_s256(verifier)),
        ("code_challenge_method", "S256"),
        ("nonce", TOKENS[1]),
    ]
    assert verifier not in redirect.url


def test_endpoint_with_a_query_gets_an_ampersand() -> None:
    smart = SMART.model_copy(
        update={"authorization_endpoint": "https://ehr.example.org/authorize?tenant=a"}
    )
    redirect, _ = _begin(smart=smart)
    assert redirect.url.startswith("https://ehr.example.org/authorize?tenant=a&response_type=code&")


def test_standalone_request_drops_launch() -> None:
    redirect, pending = _begin(launch=None, scopes=("launch", "openid", "launch/patient"))
    params = dict(_query(redirect.url))
    assert "launch" not in params
    assert params["scope"] == "openid launch/patient"
    assert pending.mode == "standalone"
    assert pending.launch_hash is None
    assert pending.scope == "openid launch/patient"


def test_ehr_request_adds_launch_scope_first() -> None:
    redirect, pending = _begin(scopes=("openid", "fhirUser"))
    assert dict(_query(redirect.url))["scope"] == "launch openid fhirUser"
    assert pending.scope == "launch openid fhirUser"
    assert pending.mode == "ehr"
    assert pending.launch_hash == launch_hash("LAUNCH-1")


def test_ehr_request_keeps_an_existing_launch_scope_once() -> None:
    redirect, _ = _begin(scopes=("openid", "launch", "openid"))
    assert dict(_query(redirect.url))["scope"] == "openid launch"


def test_empty_launch_value_is_still_an_ehr_launch() -> None:
    redirect, pending = _begin(launch="")
    assert ("launch", "") in _query(redirect.url)
    assert pending.mode == "ehr"


# -- the POST request -----------------------------------------------------------------------


def _post(launch: str | None = "LAUNCH-1") -> tuple[AuthorizationRedirect, PendingAuthorization]:
    return _begin(config=CONFIG.model_copy(update={"use_post": True}), launch=launch)


def test_post_request_fields_in_order() -> None:
    redirect, pending = _post()
    assert redirect.method == "POST"
    assert redirect.url == SMART.authorization_endpoint
    names = [name for name, _ in redirect.fields]
    assert names == [
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "launch",
        "state",
        "aud",
        "code_challenge",
        "code_challenge_method",
        "nonce",
    ]
    assert dict(redirect.fields)["state"] == TOKENS[0]
    assert pending.state.get_secret_value() == TOKENS[0]


def test_post_needs_use_post_capability_and_ehr() -> None:
    assert _begin()[0].method == "GET"
    assert _post(launch=None)[0].method == "GET"
    plain = SMART.model_copy(update={"capabilities": ("launch-ehr",)})
    config = CONFIG.model_copy(update={"use_post": True})
    assert _begin(config=config, smart=plain)[0].method == "GET"


def test_post_page_exact() -> None:
    redirect = AuthorizationRedirect(
        method="POST", url="https://as.test/a?x=1&y=<2>", fields=(("k&", 'v"<'), ("a", "b"))
    )
    assert redirect.html() == (
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        '<meta name="referrer" content="no-referrer"><title>Signing in…</title></head>'
        '<body><form method="post" action="https://as.test/a?x=1&amp;y=&lt;2&gt;">'
        '<input type="hidden" name="k&amp;" value="v&quot;&lt;">'
        '<input type="hidden" name="a" value="b">'
        '<noscript><button type="submit">Continue</button></noscript></form>'
        "<script>document.forms[0].submit();</script></body></html>"
    )


def test_html_refused_for_get() -> None:
    redirect = AuthorizationRedirect(method="GET", url="https://as.test/a")
    with pytest.raises(ConfigurationError) as info:
        redirect.html()
    assert str(info.value) == "html() is only for POST authorization requests"
    assert info.value.reason == "configuration"


def test_csp_exact() -> None:
    digest = base64.b64encode(hashlib.sha256(AUTO_SUBMIT_SCRIPT.encode()).digest()).decode()
    assert AUTO_SUBMIT_SCRIPT == "document.forms[0].submit();"
    assert AuthorizationRedirect.csp() == (
        f"default-src 'none'; script-src 'sha256-{digest}'; base-uri 'none'"
    )


# -- refusals -------------------------------------------------------------------------------


def test_missing_authorization_endpoint() -> None:
    smart = SMART.model_copy(update={"authorization_endpoint": None})
    with pytest.raises(DiscoveryError) as info:
        _begin(smart=smart)
    assert info.value.reason == "no_authorization_endpoint"
    assert str(info.value) == "no authorization_endpoint"
    with pytest.raises(DiscoveryError):
        _begin(smart=SMART.model_copy(update={"authorization_endpoint": ""}))


def test_missing_session_id() -> None:
    with pytest.raises(ConfigurationError) as info:
        _begin(session_id="")
    assert str(info.value) == "a browser session id is required to bind state"


def test_naive_now() -> None:
    with pytest.raises(UsageError) as info:
        _begin(now=NOW.replace(tzinfo=None))
    assert info.value.reason == "naive_datetime"
    assert str(info.value) == "now must be a timezone-aware datetime"


# -- the pending row ------------------------------------------------------------------------


def test_pending_fields_exact() -> None:
    smart = SMART.model_copy(update={"authorization_response_iss_parameter_supported": True})
    _, pending = _begin(smart=smart)
    assert pending.state.get_secret_value() == TOKENS[0]
    assert pending.nonce.get_secret_value() == TOKENS[1]
    assert len(pending.code_verifier.get_secret_value()) == 43
    assert pending.org_id == "org-1"
    assert pending.issuer == BASE
    assert pending.client_id == "app-1"
    assert pending.token_endpoint == SMART.token_endpoint
    assert pending.jwks_uri == SMART.jwks_uri
    assert pending.oidc_issuer == SMART.issuer
    assert pending.redirect_uri == CONFIG.redirect_uri
    assert pending.session_binding == session_binding("sess-1")
    assert pending.require_iss_parameter is True
    assert pending.created_at == NOW
    assert pending.expires_at == NOW + CONFIG.pending_ttl
    assert _begin()[1].require_iss_parameter is False


def test_pending_overrides_and_custom_ttl() -> None:
    config = CONFIG.model_copy(update={"pending_ttl": timedelta(minutes=2)})
    _, pending = _begin(
        config=config, oidc_issuer="https://id.test", jwks_uri="https://id.test/keys"
    )
    assert pending.oidc_issuer == "https://id.test"
    assert pending.jwks_uri == "https://id.test/keys"
    assert pending.expires_at == NOW + timedelta(minutes=2)
    bare = SMART.model_copy(update={"issuer": None, "jwks_uri": None})
    _, pending = _begin(smart=bare)
    assert pending.oidc_issuer is None
    assert pending.jwks_uri is None


def _pending_data(lifetime: timedelta) -> dict[str, Any]:
    _, pending = _begin()
    data = json.loads(pending.to_bytes())
    data["expires_at"] = (NOW + lifetime).isoformat()
    return data


@pytest.mark.parametrize("lifetime", [timedelta(microseconds=1), MAX_PENDING_TTL])
def test_pending_lifetime_edges_accepted(lifetime: timedelta) -> None:
    assert PendingAuthorization.model_validate(_pending_data(lifetime)).expires_at == NOW + lifetime


@pytest.mark.parametrize(
    "lifetime", [timedelta(0), -timedelta(seconds=1), MAX_PENDING_TTL + timedelta(microseconds=1)]
)
def test_pending_lifetime_edges_refused(lifetime: timedelta) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        PendingAuthorization.model_validate(_pending_data(lifetime))
    assert "a pending authorization lives at most 10 minutes" in str(info.value)


def test_pending_bytes_exact() -> None:
    _, pending = _begin()
    payload = pending.to_bytes()
    data = json.loads(payload)
    assert payload == json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    assert data["state"] == TOKENS[0]
    assert data["nonce"] == TOKENS[1]
    assert data["code_verifier"] == pending.code_verifier.get_secret_value()
    restored = PendingAuthorization.from_bytes(payload)
    assert restored == pending
    assert restored.code_verifier.get_secret_value() == data["code_verifier"]
