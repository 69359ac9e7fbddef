"""Totality of the launch-side parsers: launch and callback parameters, the FHIR base URL, scopes
and the launch context of a token response (SMART App Launch §"EHR launch", RFC 6749 §4.1.2)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fuzz_support import JSON_VALUES, NOW, TEXT, assert_total, form_params, shaped
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from teams_ehr.errors import LaunchParameterError, OAuthError, StateInvalidError
from teams_ehr.smart.authorize import PendingAuthorization, session_binding
from teams_ehr.smart.callback import extract_state, parse_callback
from teams_ehr.smart.canonical import canonical_fhir_base
from teams_ehr.smart.context import build_launch_context
from teams_ehr.smart.launch import LaunchRequest, parse_launch_request
from teams_ehr.smart.scopes import parse_granted_scopes, parse_resource_scope, scopes_allow

STATE = "s" * 43
SESSION = "browser-session"
ISSUER = "https://fhir.example.org/r4"

URLS = st.one_of(
    TEXT,
    st.builds(
        lambda scheme, host, rest: f"{scheme}://{host}{rest}",
        st.sampled_from(["https", "http", "HTTPS", "ftp", ""]),
        st.one_of(TEXT, st.sampled_from(["[::1", "h:99999", "u:p@h", "127.0.0.1", "xn--", "a..b"])),
        TEXT,
    ),
)


def _pending(**changes: Any) -> PendingAuthorization:
    fields: dict[str, Any] = {
        "state": SecretStr(STATE),
        "code_verifier": SecretStr("v" * 43),
        "nonce": SecretStr("n" * 22),
        "org_id": "org-a",
        "issuer": ISSUER,
        "client_id": "client",
        "token_endpoint": ISSUER + "/token",
        "jwks_uri": None,
        "oidc_issuer": None,
        "redirect_uri": "https://app.example.org/callback",
        "scope": "launch openid",
        "session_binding": session_binding(SESSION),
        "launch_hash": None,
        "mode": "ehr",
        "created_at": NOW - timedelta(minutes=1),
        "expires_at": NOW + timedelta(minutes=5),
    }
    return PendingAuthorization(**(fields | changes))


PENDING = _pending()
PENDING_ISS = _pending(require_iss_parameter=True)


@given(form_params(["iss", "launch"]), st.booleans())
def test_launch_request_is_total(params: dict[str, str], allow_http: bool) -> None:
    result = assert_total(parse_launch_request, params, allow_http=allow_http)
    assert isinstance(result, LaunchRequest | LaunchParameterError)


@given(URLS, st.booleans())
def test_canonical_fhir_base_is_total(url: str, allow_http: bool) -> None:
    result = assert_total(canonical_fhir_base, url, allow_http=allow_http)
    if isinstance(result, str):
        assert canonical_fhir_base(result, allow_http=allow_http) == result  # idempotent


@given(form_params(["state", "code", "iss", "error", "error_description"]), st.booleans())
def test_callback_is_total(params: dict[str, str], with_known_state: bool) -> None:
    if with_known_state:
        params = {**params, "state": STATE}
    assert_total(extract_state, params)
    for pending in (None, PENDING, PENDING_ISS):
        result = assert_total(parse_callback, params, pending, session_id=SESSION, now=NOW)
        assert isinstance(result, str | StateInvalidError | OAuthError | LaunchParameterError) or (
            type(result).__name__ == "MixUpDetectedError"
        )


TOKEN_KEYS = [
    "patient",
    "encounter",
    "fhirContext",
    "need_patient_banner",
    "smart_style_url",
    "intent",
    "tenant",
    "scope",
    "appointment",
    "location",
    "loginDepartment",
    "__epic.dstu2.patient",
    "fhir_context",
]
FHIR_CONTEXT = st.lists(
    shaped(["reference", "canonical", "identifier", "type", "role"]), max_size=3
)


@given(
    shaped(TOKEN_KEYS)
    | st.builds(lambda d, fc: {**d, "fhirContext": fc}, shaped(TOKEN_KEYS), FHIR_CONTEXT),
    st.none() | shaped(["sub", "fhirUser"]),
)
def test_launch_context_is_total(
    token_fields: dict[str, Any], claims: dict[str, Any] | None
) -> None:
    assert_total(build_launch_context, token_fields, claims)


@given(st.one_of(st.none(), TEXT, st.lists(TEXT).map(" ".join)), TEXT, TEXT)
def test_scope_parsers_are_total(scope: str | None, resource: str, permission: str) -> None:
    granted = assert_total(parse_granted_scopes, scope)
    for item in granted if isinstance(granted, frozenset) else ():
        assert_total(parse_resource_scope, item)
    assert_total(
        scopes_allow, granted if isinstance(granted, frozenset) else (), resource, permission
    )


@given(JSON_VALUES)
def test_launch_context_from_any_json_value_is_total(value: Any) -> None:
    if isinstance(value, dict):
        assert_total(build_launch_context, value, value)
