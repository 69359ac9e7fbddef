"""What the log says about a refused request: the error's class, its reason and the provider's code.

A deployer debugging a sign-in needs the authorization server's ``error`` code (RFC 6749
§4.1.2.1 and §5.2: ``login_required``, ``invalid_client`` …) and, from Microsoft Entra, the
``AADSTS`` number that opens its ``error_description`` (Microsoft identity platform, "Error
codes"). Only those codes are logged, checked against a strict pattern: never the description
itself (it may echo a user's name or address), never a request value or token.
"""

from __future__ import annotations

import re

from teams_ehr.errors import AuthorizationDeclinedError, OAuthError, TeamsEhrError

__all__ = ["refusal_summary"]

_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_AADSTS = re.compile(r"\bAADSTS\d{1,8}\b")


def refusal_summary(exc: TeamsEhrError) -> str:
    """``"OAuthError (oauth; error=login_required, AADSTS50058)"``: safe to log as it is."""
    summary = f"{type(exc).__name__} ({exc.reason}"
    if isinstance(exc, OAuthError):
        code = exc.error if _CODE.match(exc.error) else "unrecognized"
        summary += f"; error={code}"
        # A declined consent is the person's choice, audited at source: its code is enough.
        declined = isinstance(exc, AuthorizationDeclinedError)
        aadsts = None if declined else _AADSTS.search(exc.description or "")
        if aadsts is not None:
            summary += f", {aadsts.group()}"
    return summary + ")"
