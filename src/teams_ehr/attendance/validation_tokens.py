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

import hashlib
from collections import OrderedDict
from datetime import datetime

import httpx
import jwt

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
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise TokenInvalidError("validation token malformed", reason="malformed") from None
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
