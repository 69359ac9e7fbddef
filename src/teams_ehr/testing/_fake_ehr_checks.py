"""Server-side checks of :class:`~teams_ehr.testing.fake_ehr.FakeEhr`: client assertions and PKCE.

Client assertion (SMART client-confidential-asymmetric.md §"Authenticating to the Token endpoint",
RFC 7523 §3; Epic rules from fhir.epic.com/Documentation?docId=oauth2):

* header ``alg`` RS384 or ES384, ``typ`` ``JWT``, ``kid`` selecting exactly one registered key of
  the matching ``kty``; a ``jku`` must equal the registered JWKS URL; no other key source;
* claims ``iss`` = ``sub`` = client id, ``aud`` = the token URL, ``exp`` in the future and at most
  300 s ahead, ``nbf``/``iat`` not in the future, ``jti`` a string of ≤ 151 characters never seen
  before within its lifetime.

PKCE (RFC 7636 §4.6): the verifier is 43–128 unreserved characters and
``BASE64URL(SHA256(verifier))`` equals the stored challenge.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import jwt

__all__ = [
    "ASSERTION_TYPE",
    "FakeOAuthError",
    "JtiRegistry",
    "check_pkce",
    "parse_basic",
    "secrets_equal",
    "verify_client_assertion",
]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_KTY = {"RS384": "RSA", "ES384": "EC"}
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")


class FakeOAuthError(Exception):
    """An RFC 6749 §5.2 error response of the fake token endpoint."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(error)
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class JtiRegistry:
    """``jti`` values seen per client until their assertion expires (RFC 7523 §3 item 7);
    expired entries leave in expiry order, so each check costs O(log n)."""

    def __init__(self) -> None:
        self._until: dict[tuple[str, str], datetime] = {}
        self._heap: list[tuple[datetime, tuple[str, str]]] = []

    def remember(self, client_id: str, jti: str, *, expires: datetime, now: datetime) -> bool:
        """``False`` if ``jti`` is a replay; otherwise record it and return ``True``."""
        while self._heap and self._heap[0][0] <= now:
            _, key = heapq.heappop(self._heap)
            if key in self._until and self._until[key] <= now:
                del self._until[key]
        key = (client_id, jti)
        if key in self._until:
            return False
        self._until[key] = expires
        heapq.heappush(self._heap, (expires, key))
        return True


def parse_basic(authorization: str) -> tuple[str, str] | None:
    """``(client_id, secret)`` of an HTTP Basic header (both URL-decoded, as Epic requires
    and RFC 6749 §2.3.1 says), ``None`` if the header is not Basic."""
    if not authorization.lower().startswith("basic "):
        return None
    try:
        raw_id, raw_secret = (
            base64.b64decode(authorization[6:], validate=True).decode().split(":", 1)
        )
    except ValueError:
        raise FakeOAuthError("invalid_client", "malformed Basic header", 401) from None
    return unquote(raw_id), unquote(raw_secret)


def secrets_equal(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())


def check_pkce(verifier: str | None, challenge: str) -> None:
    if verifier is None or not _VERIFIER.match(verifier):
        raise FakeOAuthError("invalid_grant", "code_verifier missing or malformed")
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    if not hmac.compare_digest(computed, challenge):
        raise FakeOAuthError("invalid_grant", "code_verifier does not match the challenge")


def _select_key(jwks: dict[str, Any], kid: object, alg: str) -> jwt.PyJWK:
    if not isinstance(kid, str):
        raise FakeOAuthError("invalid_client", "assertion has no kid")
    keys = [
        k
        for k in jwks.get("keys", [])
        if isinstance(k, dict) and k.get("kid") == kid and k.get("kty") == _KTY[alg]
    ]
    if len(keys) != 1:
        raise FakeOAuthError("invalid_client", "kid does not select exactly one registered key")
    return jwt.PyJWK(keys[0], algorithm=alg)


def verify_client_assertion(
    assertion: str,
    client_id: str,
    jwks: dict[str, Any],
    jwks_url: str | None,
    *,
    token_url: str,
    now: datetime,
    seen_jtis: JtiRegistry,
) -> None:
    """Verify one ``private_key_jwt`` assertion or raise ``FakeOAuthError('invalid_client')``."""
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        raise FakeOAuthError("invalid_client", "malformed assertion") from None
    alg = header.get("alg")
    if alg not in _KTY:
        raise FakeOAuthError("invalid_client", "alg must be RS384 or ES384")
    if header.get("typ") != "JWT":
        raise FakeOAuthError("invalid_client", "typ must be JWT")
    if "jku" in header and (jwks_url is None or header["jku"] != jwks_url):
        raise FakeOAuthError("invalid_client", "jku is not the registered JWKS URL")
    key = _select_key(jwks, header.get("kid"), alg)
    try:
        claims = jwt.decode(
            assertion,
            key.key,
            algorithms=[alg],
            audience=token_url,
            issuer=client_id,
            options={
                "require": ["iss", "sub", "aud", "exp", "jti"],
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.PyJWTError as exc:
        raise FakeOAuthError(
            "invalid_client", f"assertion rejected: {type(exc).__name__}"
        ) from None
    _check_claims(claims, client_id, now, seen_jtis)


def _check_claims(
    claims: dict[str, Any],
    client_id: str,
    now: datetime,
    seen_jtis: JtiRegistry,
) -> None:
    if claims.get("sub") != client_id:
        raise FakeOAuthError("invalid_client", "sub must equal client_id")
    exp = claims["exp"]
    if not isinstance(exp, int | float):
        raise FakeOAuthError("invalid_client", "exp must be numeric")
    expires = datetime.fromtimestamp(exp, UTC)
    if expires <= now or (expires - now).total_seconds() > 300:
        raise FakeOAuthError("invalid_client", "exp must be in the future and at most 300 s ahead")
    for name in ("nbf", "iat"):
        value = claims.get(name)
        if value is not None and (
            not isinstance(value, int | float) or datetime.fromtimestamp(value, UTC) > now
        ):
            raise FakeOAuthError("invalid_client", f"{name} is in the future")
    jti = claims["jti"]
    if not isinstance(jti, str) or not 0 < len(jti) <= 151:
        raise FakeOAuthError("invalid_client", "jti must be a string of at most 151 characters")
    if not seen_jtis.remember(client_id, jti, expires=expires, now=now):
        raise FakeOAuthError("invalid_client", "jti replayed")
