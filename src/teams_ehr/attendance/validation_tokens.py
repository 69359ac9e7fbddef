"""Verifying the ``validationTokens`` of Graph rich notifications (requirement D1; threat T23).

Graph docs, *Set up change notifications that include resource data*, "How to validate": every
token must be unexpired, signed by the Microsoft identity platform (keys of the common
configuration, rotated daily), its ``aud`` our app id, and — **critical** — ``appid`` the Graph
Change Tracking publisher ``0bf30f3b-4a52-48df-9a82-234910c4a086``; the issuer is
``https://sts.windows.net/{tenantId}/``. One token is sent per (app, tenant) pair.

v2.0 tokens carry ``azp`` instead of ``appid`` and the issuer
``https://login.microsoftonline.com/{tenantId}/v2.0``; both shapes are accepted, each with its
own exact profile. The tenant is read from the unverified claims only to choose the issuer to
demand, and must be one of the tenants the batch's items were accepted for; the verification
itself (:func:`teams_ehr.smart.jwt_verify.verify_jwt`: pinned JWKS, fixed algorithms, exact
``iss``/``aud``, 60 s leeway) is what makes the token trusted.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import OrderedDict
from datetime import datetime
from typing import Any

import httpx

from teams_ehr.errors import TokenInvalidError
from teams_ehr.smart.jwks import JwksCache
from teams_ehr.smart.jwt_verify import JwtProfile, verify_jwt

__all__ = [
    "COMMON_JWKS_URI",
    "GRAPH_CHANGE_TRACKING_APP_ID",
    "GraphValidationTokenVerifier",
]

GRAPH_CHANGE_TRACKING_APP_ID = "0bf30f3b-4a52-48df-9a82-234910c4a086"
COMMON_JWKS_URI = "https://login.microsoftonline.com/common/discovery/v2.0/keys"
_ALGORITHMS = ("RS256",)


_B64URL_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _b64url(segment: str) -> bytes:
    """One base64url segment (RFC 7515 §2), as strictly as PyJWT reads it: only the alphabet,
    at most two trailing ``=`` on a whole quantum, and the canonical encoding of its bytes."""
    stripped = segment.rstrip("=")
    padding = len(segment) - len(stripped)
    if padding > 2 or (padding and len(segment) % 4) or len(stripped) % 4 == 1:
        raise ValueError("bad padding")
    if not _B64URL_ALPHABET.issuperset(stripped):
        raise ValueError("not base64url")
    decoded = base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    if base64.urlsafe_b64encode(decoded).decode().rstrip("=") != stripped:
        raise ValueError("not canonical")
    return decoded


def _unverified_claims(token: str) -> dict[str, Any]:
    """The claims, read only to choose the issuer and profile to demand: the compact form
    (RFC 7515 §7.1) must parse — three base64url segments, header and claims JSON objects, no
    detached payload (RFC 7797) — but nothing is trusted until :func:`verify_jwt` checks the
    signature, which is the only full decode of the token."""
    segments = token.split(".")
    try:
        if len(segments) != 3:
            raise ValueError("not three segments")
        header = json.loads(_b64url(segments[0]))
        if not isinstance(header, dict) or header.get("b64", True) is False:
            raise ValueError("header")
        claims = json.loads(_b64url(segments[1]))
        _b64url(segments[2])
    except (ValueError, RecursionError):  # binascii.Error and JSONDecodeError are ValueErrors
        raise TokenInvalidError("validation token malformed", reason="malformed") from None
    if not isinstance(claims, dict):
        raise TokenInvalidError("validation token malformed", reason="malformed")
    return claims


class GraphValidationTokenVerifier:
    """A :class:`~teams_ehr.attendance.webhook.ValidationTokenVerifier` on
    :func:`~teams_ehr.smart.jwt_verify.verify_jwt`."""

    def __init__(
        self,
        *,
        app_id: str,
        jwks: JwksCache,
        client: httpx.AsyncClient,
        jwks_uri: str = COMMON_JWKS_URI,
        authority_host: str = "https://login.microsoftonline.com",
        cache_size: int = 1024,
    ) -> None:
        self._app_id = app_id
        self._jwks = jwks
        self._client = client
        self._jwks_uri = jwks_uri
        self._authority_host = authority_host.rstrip("/")
        self._cache_size = cache_size
        self._verified: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def __repr__(self) -> str:
        return f"GraphValidationTokenVerifier(app_id={self._app_id!r})"

    def _profile(self, tenant_id: str, version: object) -> JwtProfile:
        if version == "2.0":
            return JwtProfile(
                algorithms=_ALGORITHMS,
                issuers=(f"{self._authority_host}/{tenant_id}/v2.0",),
                audience=self._app_id,
                expected_claims={"azp": GRAPH_CHANGE_TRACKING_APP_ID, "tid": tenant_id},
            )
        return JwtProfile(
            algorithms=_ALGORITHMS,
            issuers=(f"https://sts.windows.net/{tenant_id}/",),
            audience=self._app_id,
            expected_claims={"appid": GRAPH_CHANGE_TRACKING_APP_ID, "tid": tenant_id},
        )

    async def __call__(self, token: str, *, tenant_ids: frozenset[str], now: datetime) -> str:
        """Verify one token; returns its (lower-case) tenant id.

        Graph repeats one token per (app, tenant) on every delivery during its hour of life, so a
        token whose exact bytes were verified before is accepted from a small cache until its
        ``exp`` (no second signature check; forged bytes never match a verified digest)."""
        if not token.isascii():  # a compact JWS is ASCII (RFC 7515 §7.1)
            raise TokenInvalidError("validation token malformed", reason="malformed")
        digest = hashlib.sha256(token.encode()).hexdigest()
        hit = self._verified.get(digest)
        if hit is not None and hit[1] > now.timestamp() and hit[0] in tenant_ids:
            self._verified.move_to_end(digest)
            return hit[0]
        unverified = _unverified_claims(token)
        tenant = unverified.get("tid")
        if not isinstance(tenant, str) or tenant.lower() not in tenant_ids:
            raise TokenInvalidError("validation token for another tenant", reason="wrong_tenant")
        tenant = tenant.lower()
        if unverified.get("tid") != tenant:
            raise TokenInvalidError("validation token tenant not canonical", reason="wrong_tenant")
        profile = self._profile(tenant, unverified.get("ver"))
        claims = await verify_jwt(token, profile, self._jwks, self._jwks_uri, self._client, now=now)
        self._verified[digest] = (tenant, float(claims["exp"]))
        while len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)
        return tenant
