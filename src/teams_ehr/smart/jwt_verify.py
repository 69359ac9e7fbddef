"""Verification of inbound JWTs: Epic ``id_token``, Graph validation tokens (requirement A7, threat T11).

Each kind of token has its own :class:`JwtProfile` (RFC 8725 §3.12: mutually exclusive
validation rules), with

* a fixed list of asymmetric algorithms (§3.1); ``none`` and ``HS*`` can never be configured, so
  a public key can never be used as an HMAC secret (CVE-2022-29217, CVE-2026-48526);
* keys only from the pinned ``jwks_uri`` through :class:`~teams_ehr.smart.jwks.JwksCache`;
  ``jku``, ``x5u``, ``jwk`` and ``x5c`` headers are ignored, never fetched (§3.10);
* ``crit`` refused (RFC 7515 §4.1.11: we understand no extension; GHSA-752w-5fwx-jx9f);
* required ``exp iat iss aud``, ``iss`` compared exactly against a list (CVE-2024-53861),
  ``aud`` exact, leeway ≤ 60 s, optional explicit ``typ`` (§3.11) and exact extra claims
  (Graph ``appid``).

Every failure is a :class:`~teams_ehr.errors.TokenInvalidError` whose ``reason`` is one of
``malformed``, ``alg_not_allowed``, ``crit_unsupported``, ``wrong_typ``, ``unknown_kid``,
``ambiguous_key``, ``unusable_key``, ``bad_signature``, ``missing_claim``, ``wrong_issuer``,
``wrong_audience``, ``expired``, ``not_yet_valid``, ``issued_in_future``, ``claim_mismatch``.
Messages carry the reason only, never the token; pyjwt's exception is not chained.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

import httpx
import jwt

from teams_ehr._types import Flow, require_aware
from teams_ehr.errors import ConfigurationError, TokenInvalidError
from teams_ehr.smart.jwks import JwksCache, kty_for_alg

__all__ = ["MAX_LEEWAY_SECONDS", "JwtProfile", "verify_jwt", "verify_jwt_flow", "verify_jwt_sync"]

MAX_LEEWAY_SECONDS = 60
MAX_TOKEN_LENGTH = 16_384
_BASE_REQUIRED = frozenset({"exp", "iat", "iss", "aud"})


@dataclass(frozen=True, slots=True, kw_only=True)
class JwtProfile:
    """What one kind of token must look like; build one per token kind and issuer set."""

    algorithms: tuple[str, ...]
    issuers: tuple[str, ...]
    audience: str
    required: tuple[str, ...] = ("exp", "iat", "iss", "aud")
    leeway_seconds: int = 60
    expected_claims: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    typ: str | None = None

    def __post_init__(self) -> None:
        if not self.algorithms or any(kty_for_alg(a) is None for a in self.algorithms):
            raise ConfigurationError(
                "algorithms must be a non-empty list of asymmetric JWS algorithms",
                reason="bad_jwt_algorithms",
            )
        if not self.issuers or not all(self.issuers) or not self.audience:
            raise ConfigurationError("issuers and audience are required", reason="bad_jwt_profile")
        if not _BASE_REQUIRED.issubset(self.required):
            raise ConfigurationError(
                "exp, iat, iss and aud must be required", reason="bad_jwt_profile"
            )
        if not 0 <= self.leeway_seconds <= MAX_LEEWAY_SECONDS:
            raise ConfigurationError("leeway must be 0–60 seconds", reason="bad_leeway")
        object.__setattr__(self, "expected_claims", MappingProxyType(dict(self.expected_claims)))


def _invalid(reason: str) -> TokenInvalidError:
    return TokenInvalidError(f"JWT rejected: {reason}", reason=reason)


def _normalized_typ(typ: object) -> str | None:
    if not isinstance(typ, str):
        return None
    typ = typ.lower()
    return typ.removeprefix("application/")


def _checked_header(token: str, profile: JwtProfile) -> tuple[str | None, str]:
    """(kid, alg) from the unverified header, after the checks that need no key."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        raise _invalid("malformed")
    try:  # parsed here, not by pyjwt, so that `crit` gets its own reason
        header = json.loads(base64.urlsafe_b64decode(token[: token.index(".")] + "=="))
    except (ValueError, RecursionError):
        raise _invalid("malformed") from None
    if not isinstance(header, dict):
        raise _invalid("malformed")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in profile.algorithms:
        raise _invalid("alg_not_allowed")
    if "crit" in header:
        raise _invalid("crit_unsupported")
    if profile.typ is not None and _normalized_typ(header.get("typ")) != _normalized_typ(
        profile.typ
    ):
        raise _invalid("wrong_typ")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise _invalid("malformed")
    return kid, alg


_PYJWT_REASONS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.InvalidSignatureError, "bad_signature"),  # before DecodeError, its base class
    (jwt.MissingRequiredClaimError, "missing_claim"),
    (jwt.InvalidAudienceError, "wrong_audience"),
    (jwt.InvalidIssuerError, "wrong_issuer"),
    (jwt.InvalidAlgorithmError, "alg_not_allowed"),
    (jwt.InvalidKeyError, "unusable_key"),
)


def _numeric(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid("malformed")
    try:
        number = float(value)
    except OverflowError:  # an integer past float range (JSON numbers are unbounded)
        raise _invalid("malformed") from None
    if not math.isfinite(number):  # NaN/Infinity (Python's json reads them): never "not expired"
        raise _invalid("malformed")
    return number


def _verified_claims(
    token: str, key: jwt.PyJWK, alg: str, profile: JwtProfile, now: datetime
) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=profile.audience,
            issuer=list(profile.issuers),
            options={
                "require": list(profile.required),
                "verify_signature": True,
                "verify_aud": True,
                "verify_iss": True,
                # time claims are checked below against the injected clock
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.PyJWTError as exc:
        reason = next((r for cls, r in _PYJWT_REASONS if isinstance(exc, cls)), "malformed")
        raise _invalid(reason) from None
    if claims.get("iss") not in profile.issuers:  # defence in depth: exact, never prefix
        raise _invalid("wrong_issuer")
    leeway, instant = profile.leeway_seconds, now.timestamp()
    exp, iat, nbf = (_numeric(claims, n) for n in ("exp", "iat", "nbf"))
    if exp is None or exp <= instant - leeway:
        raise _invalid("expired")
    if nbf is not None and nbf > instant + leeway:
        raise _invalid("not_yet_valid")
    if iat is not None and iat > instant + leeway:
        raise _invalid("issued_in_future")
    for name, expected in profile.expected_claims.items():
        if name not in claims:
            raise _invalid("missing_claim")
        if claims[name] != expected:
            raise _invalid("claim_mismatch")
    return claims


def verify_jwt_flow(
    token: str, profile: JwtProfile, jwks: JwksCache, jwks_uri: str, *, now: datetime
) -> Flow[dict[str, Any]]:
    """Verify ``token`` against ``profile``; yields a JWKS GET only when the cache needs one."""
    require_aware(now, "now")
    kid, alg = _checked_header(token, profile)
    key = yield from jwks.key_flow(jwks_uri, kid, alg)
    return _verified_claims(token, key, alg, profile, now)


async def verify_jwt(
    token: str,
    profile: JwtProfile,
    jwks: JwksCache,
    jwks_uri: str,
    client: httpx.AsyncClient,
    *,
    now: datetime,
) -> dict[str, Any]:
    """Verify ``token``; concurrent verifications share one JWKS fetch (single-flight)."""
    require_aware(now, "now")
    kid, alg = _checked_header(token, profile)
    key = await jwks.get_key(client, jwks_uri, kid, alg)
    return _verified_claims(token, key, alg, profile, now)


def verify_jwt_sync(
    token: str,
    profile: JwtProfile,
    jwks: JwksCache,
    jwks_uri: str,
    client: httpx.Client,
    *,
    now: datetime,
) -> dict[str, Any]:
    """Verify ``token`` on a synchronous client (threads share one JWKS fetch)."""
    require_aware(now, "now")
    kid, alg = _checked_header(token, profile)
    key = jwks.get_key_sync(client, jwks_uri, kid, alg)
    return _verified_claims(token, key, alg, profile, now)
