"""The redirect back from the authorization server (requirement A4).

Order of checks (nothing is redeemed until all pass):

1. ``state`` present and well-formed (:func:`extract_state`); the host then takes the pending row
   by :func:`~teams_ehr.smart.authorize.state_key` — a second take returns ``None``, so a reused
   state is "unknown" (threat T04).
2. pending row exists, its state matches, it belongs to this browser session and is not expired
   → otherwise :class:`StateInvalidError` (SMART app-launch: "SHALL validate the value of the
   state parameter … tied to the user's current session"; RFC 9700 §4.7).
3. RFC 9207 ``iss``: when present it must equal the authorization server's issuer (the
   discovered ``issuer``, or the FHIR base for servers that have none); when discovery advertised
   ``authorization_response_iss_parameter_supported`` it is required → :class:`MixUpDetectedError`
   (RFC 9700 §4.4, threat T03). Checked before ``error`` so a mixed-up error is not trusted.
4. ``error``/``error_description`` → :class:`OAuthError` (RFC 6749 §4.1.2.1); ``access_denied``,
   the person declining, → :class:`AuthorizationDeclinedError` (a 4xx "you declined" page, not a
   server fault). ``error_description`` is kept on the error, never logged or shown.
5. ``code`` present, printable ASCII, ≤ 8 KiB (Epic codes can be large JWTs,
   fhir.epic.com/Documentation?docId=oauth2).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from datetime import datetime

from teams_ehr._redact import get_logger
from teams_ehr._types import require_aware
from teams_ehr.errors import (
    AuthorizationDeclinedError,
    MixUpDetectedError,
    OAuthError,
    StateInvalidError,
)
from teams_ehr.smart.authorize import PendingAuthorization, session_binding

__all__ = ["MAX_CODE_LENGTH", "MAX_STATE_LENGTH", "extract_state", "parse_callback"]

MAX_STATE_LENGTH = 512
MAX_CODE_LENGTH = 8192
_TOKEN_CHARS = re.compile(r"^[\x21-\x7e]+$")
_ERROR_CODE = re.compile(r"^[\x20-\x21\x23-\x5b\x5d-\x7e]{1,128}$")  # RFC 6749 §5.2 NQSCHAR

_log = get_logger(__name__)


def extract_state(params: Mapping[str, str]) -> str:
    """The callback's ``state``, or :class:`StateInvalidError` if missing or malformed."""
    state = params.get("state")
    if not state:
        raise StateInvalidError("callback has no state", reason="state_missing")
    if len(state) > MAX_STATE_LENGTH or not _TOKEN_CHARS.match(state):
        raise StateInvalidError("callback state is malformed", reason="state_malformed")
    return state


def _check_pending(
    state: str, pending: PendingAuthorization | None, *, session_id: str, now: datetime
) -> PendingAuthorization:
    require_aware(now, "now")
    if pending is None:
        raise StateInvalidError("state is unknown or already used", reason="state_unknown")
    if not hmac.compare_digest(state.encode(), pending.state.get_secret_value().encode()):
        raise StateInvalidError("state does not match the pending authorization")
    if not hmac.compare_digest(session_binding(session_id), pending.session_binding):
        raise StateInvalidError("state belongs to another session", reason="state_other_session")
    if now >= pending.expires_at:
        raise StateInvalidError("state has expired", reason="state_expired")
    return pending


def _check_issuer(params: Mapping[str, str], pending: PendingAuthorization) -> None:
    iss = params.get("iss")
    if iss is None:
        if pending.require_iss_parameter:
            raise MixUpDetectedError("authorization response has no iss", reason="iss_missing")
        return
    expected = {pending.oidc_issuer or pending.issuer, pending.issuer}
    if iss not in expected:
        _log.warning("authorization response from another issuer (mix-up) refused")
        raise MixUpDetectedError("authorization response iss differs from the request's issuer")


def parse_callback(
    params: Mapping[str, str],
    pending: PendingAuthorization | None,
    *,
    session_id: str,
    now: datetime,
) -> str:
    """Validate the callback against its pending authorization and return the ``code``."""
    state = extract_state(params)
    checked = _check_pending(state, pending, session_id=session_id, now=now)
    _check_issuer(params, checked)
    error = params.get("error")
    if error == "access_denied":
        _log.info("authorization declined by the user", extra={"security_event": "access_denied"})
        raise AuthorizationDeclinedError(
            "the user declined the authorization",
            error=error,
            description=params.get("error_description"),
        )
    if error is not None:
        code = error if _ERROR_CODE.match(error) else "invalid_error_code"
        raise OAuthError(
            f"authorization server refused: {code}",
            error=code,
            description=params.get("error_description"),
            status_code=None,
            reason="authorization_refused",
        )
    code_value = params.get("code")
    if not code_value or len(code_value) > MAX_CODE_LENGTH or not _TOKEN_CHARS.match(code_value):
        raise OAuthError("callback has no usable code", error="invalid_request", reason="no_code")
    return code_value
