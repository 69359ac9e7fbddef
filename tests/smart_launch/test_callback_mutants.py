"""Exact behaviour of the authorization callback (smart/callback.py, requirement A4).

Each test pins one rule of the module docstring at its edge (just inside, at, just outside) with
the exact ``reason`` code and message a user or an integration reads, so a weakened check is
noticed (threats T03, T04; RFC 6749 §4.1.2.1, RFC 9207, RFC 9700 §4.4 and §4.7).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from teams_ehr.errors import (
    AuthorizationDeclinedError,
    MixUpDetectedError,
    OAuthError,
    StateInvalidError,
    UsageError,
)
from teams_ehr.smart.authorize import (
    PendingAuthorization,
    SmartClientConfig,
    begin_authorization,
    session_binding,
)
from teams_ehr.smart.callback import (
    MAX_CODE_LENGTH,
    MAX_STATE_LENGTH,
    extract_state,
    parse_callback,
)
from teams_ehr.smart.discovery import SmartConfiguration

BASE = "https://ehr.example.org/fhir/R4"
OIDC_ISSUER = "https://ehr.example.org/oauth2"
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
SMART = SmartConfiguration(
    issuer=OIDC_ISSUER,
    jwks_uri="https://ehr.example.org/oauth2/jwks",
    authorization_endpoint="https://ehr.example.org/oauth2/authorize",
    token_endpoint="https://ehr.example.org/oauth2/token",
    capabilities=("launch-ehr",),
    code_challenge_methods_supported=("S256",),
)
CONFIG = SmartClientConfig(client_id="app-1", redirect_uri="https://app.test/callback")
LOGGER = "teams_ehr.smart.callback"


def _pending(**update: object) -> PendingAuthorization:
    _, pending = begin_authorization(
        CONFIG, SMART, issuer=BASE, org_id="org-1", launch="L", session_id="sess-1", now=NOW
    )
    return pending.model_copy(update=update) if update else pending


def _params(pending: PendingAuthorization, **extra: str) -> dict[str, str]:
    return {"state": pending.state.get_secret_value(), "code": "CODE-1", **extra}


def _refusal(
    params: dict[str, str],
    pending: PendingAuthorization | None,
    error: type[Exception],
    *,
    now: datetime = NOW,
    session_id: str = "sess-1",
) -> Exception:
    with pytest.raises(error) as info:
        parse_callback(params, pending, session_id=session_id, now=now)
    assert type(info.value) is error
    return info.value


# -- state: presence and shape ---------------------------------------------------------------


@pytest.mark.parametrize("params", [{}, {"state": ""}, {"code": "c"}])
def test_missing_state_reason_and_message(params: dict[str, str]) -> None:
    with pytest.raises(StateInvalidError) as info:
        extract_state(params)
    assert info.value.reason == "state_missing"
    assert str(info.value) == "callback has no state"


def test_state_length_edges() -> None:
    assert MAX_STATE_LENGTH == 512
    at_limit = "s" * MAX_STATE_LENGTH
    assert extract_state({"state": at_limit}) == at_limit
    with pytest.raises(StateInvalidError) as info:
        extract_state({"state": at_limit + "s"})
    assert info.value.reason == "state_malformed"
    assert str(info.value) == "callback state is malformed"


@pytest.mark.parametrize("char", ["\x21", "\x7e", "A", "-", "_"])
def test_state_printable_ascii_edges_accepted(char: str) -> None:
    assert extract_state({"state": char}) == char
    assert extract_state({"state": "ab" + char}) == "ab" + char


@pytest.mark.parametrize("char", ["\x20", "\x7f", "\x00", "é"])
def test_state_outside_printable_ascii_refused(char: str) -> None:
    for state in (char, "ab" + char, char + "ab"):
        with pytest.raises(StateInvalidError) as info:
            extract_state({"state": state})
        assert info.value.reason == "state_malformed"


# -- state: the pending row -----------------------------------------------------------------


def test_unknown_state_reason_and_message() -> None:
    pending = _pending()
    error = _refusal(_params(pending), None, StateInvalidError)
    assert error.reason == "state_unknown"  # type: ignore[attr-defined]
    assert str(error) == "state is unknown or already used"


def test_state_of_another_pending_reason_and_message() -> None:
    pending = _pending()
    other = _pending()
    error = _refusal(_params(pending), other, StateInvalidError)
    assert error.reason == "state_invalid"  # type: ignore[attr-defined]
    assert str(error) == "state does not match the pending authorization"


def test_state_differing_in_last_character_refused() -> None:
    pending = _pending()
    state = pending.state.get_secret_value()
    tampered = state[:-1] + ("A" if state[-1] != "A" else "B")
    error = _refusal({"state": tampered, "code": "c"}, pending, StateInvalidError)
    assert error.reason == "state_invalid"  # type: ignore[attr-defined]


def test_other_session_reason_and_message() -> None:
    pending = _pending()
    error = _refusal(_params(pending), pending, StateInvalidError, session_id="sess-2")
    assert error.reason == "state_other_session"  # type: ignore[attr-defined]
    assert str(error) == "state belongs to another session"


def test_session_binding_is_compared_not_the_raw_id() -> None:
    pending = _pending()
    assert pending.session_binding == session_binding("sess-1")
    assert parse_callback(_params(pending), pending, session_id="sess-1", now=NOW) == "CODE-1"


def test_expiry_edges() -> None:
    pending = _pending()
    expires = pending.expires_at
    just_before = expires - timedelta(microseconds=1)
    assert parse_callback(_params(pending), pending, session_id="sess-1", now=just_before)
    for when in (expires, expires + timedelta(microseconds=1)):
        error = _refusal(_params(pending), pending, StateInvalidError, now=when)
        assert error.reason == "state_expired"  # type: ignore[attr-defined]
        assert str(error) == "state has expired"


def test_naive_now_is_refused_before_the_state_is_looked_at() -> None:
    pending = _pending()
    with pytest.raises(UsageError) as info:
        parse_callback(_params(pending), pending, session_id="sess-1", now=NOW.replace(tzinfo=None))
    assert info.value.reason == "naive_datetime"
    assert str(info.value) == "now must be a timezone-aware datetime"
    with pytest.raises(UsageError):
        parse_callback(_params(pending), None, session_id="sess-1", now=NOW.replace(tzinfo=None))


# -- iss (RFC 9207) -------------------------------------------------------------------------


def test_iss_equal_to_oidc_issuer_or_base_accepted() -> None:
    pending = _pending()
    assert pending.oidc_issuer == OIDC_ISSUER
    assert pending.issuer == BASE
    for iss in (OIDC_ISSUER, BASE):
        assert parse_callback(_params(pending, iss=iss), pending, session_id="sess-1", now=NOW)


def test_iss_without_oidc_issuer_must_be_the_base() -> None:
    pending = _pending(oidc_issuer=None)
    assert parse_callback(_params(pending, iss=BASE), pending, session_id="sess-1", now=NOW)
    error = _refusal(_params(pending, iss=OIDC_ISSUER), pending, MixUpDetectedError)
    assert error.reason == "mix_up"  # type: ignore[attr-defined]


def test_iss_mismatch_reason_message_and_log(caplog: pytest.LogCaptureFixture) -> None:
    pending = _pending()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        error = _refusal(_params(pending, iss=OIDC_ISSUER + "/"), pending, MixUpDetectedError)
    assert error.reason == "mix_up"  # type: ignore[attr-defined]
    assert str(error) == "authorization response iss differs from the request's issuer"
    records = [r for r in caplog.records if r.name == LOGGER]
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.WARNING, "authorization response from another issuer (mix-up) refused")
    ]


def test_empty_iss_is_present_and_refused() -> None:
    pending = _pending()
    error = _refusal(_params(pending, iss=""), pending, MixUpDetectedError)
    assert error.reason == "mix_up"  # type: ignore[attr-defined]


def test_missing_iss_allowed_unless_required() -> None:
    pending = _pending()
    assert pending.require_iss_parameter is False
    assert parse_callback(_params(pending), pending, session_id="sess-1", now=NOW) == "CODE-1"
    required = _pending(require_iss_parameter=True)
    error = _refusal(_params(required), required, MixUpDetectedError)
    assert error.reason == "iss_missing"  # type: ignore[attr-defined]
    assert str(error) == "authorization response has no iss"
    assert parse_callback(_params(required, iss=BASE), required, session_id="sess-1", now=NOW)


def test_iss_checked_before_error() -> None:
    pending = _pending()
    params = _params(pending, iss="https://evil.test", error="access_denied")
    _refusal(params, pending, MixUpDetectedError)


# -- error (RFC 6749 §4.1.2.1) --------------------------------------------------------------


def test_access_denied_is_a_decline(caplog: pytest.LogCaptureFixture) -> None:
    pending = _pending()
    params = _params(pending, error="access_denied", error_description="no thanks")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        error = _refusal(params, pending, AuthorizationDeclinedError)
    assert isinstance(error, AuthorizationDeclinedError)
    assert error.reason == "access_denied"
    assert error.error == "access_denied"
    assert error.description == "no thanks"
    assert error.status_code is None
    assert str(error) == "the user declined the authorization"
    records = [r for r in caplog.records if r.name == LOGGER]
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.INFO, "authorization declined by the user")
    ]
    assert [getattr(r, "security_event", None) for r in records] == ["access_denied"]


def test_access_denied_without_description() -> None:
    pending = _pending()
    error = _refusal(_params(pending, error="access_denied"), pending, AuthorizationDeclinedError)
    assert isinstance(error, AuthorizationDeclinedError)
    assert error.description is None


def test_other_error_is_a_refusal_even_with_a_code() -> None:
    pending = _pending()
    params = _params(pending, error="server_error", error_description="try later")
    error = _refusal(params, pending, OAuthError)
    assert isinstance(error, OAuthError)
    assert error.reason == "authorization_refused"
    assert error.error == "server_error"
    assert error.description == "try later"
    assert error.status_code is None
    assert str(error) == "authorization server refused: server_error"


def test_error_without_description() -> None:
    pending = _pending()
    error = _refusal(_params(pending, error="invalid_scope"), pending, OAuthError)
    assert isinstance(error, OAuthError)
    assert error.description is None


@pytest.mark.parametrize(
    "code",
    ["a", "x" * 128, " ", "!", "#", "[", "]", "~", "A-b_c.d"],
)
def test_error_codes_in_nqschar_kept(code: str) -> None:
    pending = _pending()
    error = _refusal(_params(pending, error=code), pending, OAuthError)
    assert isinstance(error, OAuthError)
    assert error.error == code
    assert str(error) == f"authorization server refused: {code}"


@pytest.mark.parametrize(
    "code", ["", "x" * 129, '"', "\\", "\x1f", "\x7f", "é", "ok\nbad", "a\x00"]
)
def test_error_codes_outside_nqschar_replaced(code: str) -> None:
    pending = _pending()
    error = _refusal(_params(pending, error=code), pending, OAuthError)
    assert isinstance(error, OAuthError)
    assert error.error == "invalid_error_code"
    assert error.reason == "authorization_refused"
    assert str(error) == "authorization server refused: invalid_error_code"


# -- code -----------------------------------------------------------------------------------


def test_code_length_edges() -> None:
    pending = _pending()
    assert MAX_CODE_LENGTH == 8192
    at_limit = "c" * MAX_CODE_LENGTH
    assert (
        parse_callback(_params(pending, code=at_limit), pending, session_id="sess-1", now=NOW)
        == at_limit
    )
    error = _refusal(_params(pending, code=at_limit + "c"), pending, OAuthError)
    assert isinstance(error, OAuthError)
    assert error.reason == "no_code"


@pytest.mark.parametrize("code", ["\x21", "\x7e", "ab~"])
def test_code_printable_edges_accepted(code: str) -> None:
    pending = _pending()
    assert (
        parse_callback(_params(pending, code=code), pending, session_id="sess-1", now=NOW) == code
    )


@pytest.mark.parametrize("code", ["", " ", "a b", "ab\x7f", "\x7fab", "é"])
def test_unusable_code_reason_error_and_message(code: str) -> None:
    pending = _pending()
    error = _refusal(_params(pending, code=code), pending, OAuthError)
    assert isinstance(error, OAuthError)
    assert error.reason == "no_code"
    assert error.error == "invalid_request"
    assert str(error) == "callback has no usable code"


def test_absent_code() -> None:
    pending = _pending()
    params = _params(pending)
    del params["code"]
    error = _refusal(params, pending, OAuthError)
    assert error.reason == "no_code"  # type: ignore[attr-defined]
