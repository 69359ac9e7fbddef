"""PKCE (RFC 7636) with ``S256`` only, as SMART App Launch 2.x requires.

The verifier is 43 characters of the unreserved set (RFC 7636 §4.1) drawn from 32 random bytes
(256 bits, ``secrets``); the challenge is ``BASE64URL(SHA256(ASCII(verifier)))`` (§4.2).
"""

from __future__ import annotations

import hashlib
import re
import secrets

from teams_ehr.errors import UsageError
from teams_ehr.keys import b64url

__all__ = ["code_challenge_s256", "new_code_verifier"]

_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")


def new_code_verifier() -> str:
    """A fresh code verifier: 256 bits from the OS CSPRNG, base64url (43 characters)."""
    return secrets.token_urlsafe(32)


def code_challenge_s256(verifier: str) -> str:
    """The ``S256`` code challenge of ``verifier`` (RFC 7636 §4.2)."""
    if not _VERIFIER.fullmatch(verifier):
        raise UsageError(
            "code verifier must be 43–128 unreserved characters", reason="bad_verifier"
        )
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())
