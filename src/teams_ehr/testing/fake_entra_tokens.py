"""The token side of FakeEntra: signing keys, claim sets, client-assertion checks (requirement E1).

Shapes follow the Microsoft identity platform references:

* id_token (id-token-claims-reference, v2.0): ``iss = {authority_host}/{tid}/v2.0``, ``aud`` = the
  client id, ``tid``, ``oid``, pairwise ``sub``, ``nonce``, ``iat``/``nbf``/``exp``, ``ver: "2.0"``,
  and ``name``/``preferred_username`` as the ``profile`` scope returns them;
* app-only access token (access-token-claims-reference, v1.0 as Graph receives it):
  ``iss = https://sts.windows.net/{tid}/``, ``aud`` = the resource, ``appid``, ``idtyp: "app"``;
* Graph ``validationTokens`` (webhooks-with-resource-data, "Validating the authenticity of
  notifications"): ``aud`` = the subscribing app, ``iss = https://sts.windows.net/{tid}/``,
  ``appid = 0bf30f3b-4a52-48df-9a82-234910c4a086`` (Microsoft Graph Change Tracking);
* certificate credentials (certificate-credentials): RS256 (or PS256), header ``x5t`` (SHA-1) or
  ``x5t#S256`` of the DER certificate, ``iss = sub = client_id``, ``aud`` = the token endpoint,
  ``exp`` at most 10 minutes ahead, ``jti`` unique.

Every token is signed RS256 with ``kid`` = ``x5t`` headers, like Entra's.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from teams_ehr.keys import b64url

__all__ = [
    "CLIENT_ASSERTION_TYPE",
    "GRAPH_CHANGE_TRACKING_APP_ID",
    "GRAPH_DEFAULT_SCOPE",
    "MAX_ASSERTION_LIFETIME",
    "AppRegistration",
    "EntraRefusalError",
    "IdTokenOverride",
    "ScriptedFailure",
    "SignedInUser",
    "SigningKeys",
    "apply_overrides",
    "check_client_assertion",
    "error_body",
    "openid_configuration",
]

GRAPH_CHANGE_TRACKING_APP_ID = "0bf30f3b-4a52-48df-9a82-234910c4a086"
"""``appid`` of "Microsoft Graph Change Tracking", the publisher of validation tokens."""
GRAPH_DEFAULT_SCOPE = "https://graph.microsoft.com/.default"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME = timedelta(minutes=10)
_CLOCK_SKEW_SECONDS = 60


def ts(moment: datetime) -> int:
    return int(moment.timestamp())


class EntraRefusalError(Exception):
    """An OAuth error the fake answers with (RFC 6749 §5.2, Entra ``AADSTS`` description)."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(error)
        self.error, self.description, self.status = error, description, status


@dataclass(frozen=True)
class _Key:
    kid: str
    private_key: rsa.RSAPrivateKey

    @classmethod
    def generate(cls) -> _Key:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(b64url(hashlib.sha1(der, usedforsecurity=False).digest()), key)


_KEY_SEQUENCE: list[_Key] = []
_KEY_SEQUENCE_LOCK = threading.Lock()


def _key_at(index: int) -> _Key:
    with _KEY_SEQUENCE_LOCK:
        while len(_KEY_SEQUENCE) <= index:
            _KEY_SEQUENCE.append(_Key.generate())
        return _KEY_SEQUENCE[index]


class SigningKeys:
    """Entra's token-signing keys: sign with the newest, publish newest + previous.

    Entra's signing keys are global (the same for every tenant), so every fake in a process
    draws from one lazily generated key sequence: a new fake signs with key 0 and each rotation
    moves to the next key. It is also what keeps many fakes cheap (RSA generation is slow).
    """

    def __init__(self) -> None:
        self._index = 0
        self._keys = [_key_at(0)]

    @property
    def current_kid(self) -> str:
        return self._keys[0].kid

    def rotate(self, *, keep_previous: bool = True) -> str:
        self._index += 1
        new = _key_at(self._index)
        self._keys = [new, *self._keys[:1]] if keep_previous else [new]
        return new.kid

    def jwks(self, authority_host: str) -> dict[str, list[dict[str, Any]]]:
        issuer = f"{authority_host}/{{tenantid}}/v2.0"
        keys = []
        for key in self._keys:
            jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(key.private_key.public_key()))
            keys.append({**jwk, "kid": key.kid, "x5t": key.kid, "use": "sig", "issuer": issuer})
        return {"keys": keys}

    def sign(self, claims: Mapping[str, Any], header: Mapping[str, Any] | None = None) -> str:
        key = self._keys[0]
        headers = {"typ": "JWT", "kid": key.kid, "x5t": key.kid, **(header or {})}
        # JWS over raw JSON: claims of any type can be signed (attack tests need wrong types).
        payload = json.dumps(dict(claims), separators=(",", ":")).encode()
        return jwt.api_jws.encode(payload, key.private_key, algorithm="RS256", headers=headers)

    @staticmethod
    def unsigned(claims: Mapping[str, Any], header: Mapping[str, Any] | None = None) -> str:
        """An ``alg: none`` token (attack tests)."""
        full_header = {"typ": "JWT", **(header or {}), "alg": "none"}
        segments = [b64url(json.dumps(part).encode()) for part in (full_header, dict(claims))]
        return f"{segments[0]}.{segments[1]}."


@dataclass
class ScriptedFailure:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    remaining: int


@dataclass
class IdTokenOverride:
    claims: dict[str, Any] = field(default_factory=dict)
    header: dict[str, Any] = field(default_factory=dict)
    alg: str = "RS256"


@dataclass(frozen=True)
class AppRegistration:
    client_id: str
    redirect_uris: frozenset[str]
    secret: str | None
    certificate: x509.Certificate | None

    def thumbprints(self) -> set[str]:
        if self.certificate is None:
            return set()
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        return {
            b64url(hashlib.sha1(der, usedforsecurity=False).digest()),  # x5t (RFC 7515 §4.1.7)
            b64url(hashlib.sha256(der).digest()),  # x5t#S256
        }


@dataclass(frozen=True)
class SignedInUser:
    object_id: str
    tenant_id: str
    name: str
    preferred_username: str


def check_client_assertion(
    app: AppRegistration,
    assertion: str,
    *,
    token_urls: list[str],
    now: datetime,
    seen_jti: set[tuple[str, str]],
) -> None:
    """Verify a certificate client assertion; :class:`EntraRefusalError` on any problem."""

    def refuse(description: str) -> EntraRefusalError:
        return EntraRefusalError("invalid_client", f"AADSTS700027: {description}", 401)

    if app.certificate is None:
        raise refuse("no certificate is registered for this app.")
    try:
        header = jwt.get_unverified_header(assertion)
        claims = jwt.decode(
            assertion,
            app.certificate.public_key(),  # type: ignore[arg-type]  # RSA, checked at register
            algorithms=["RS256", "PS256"],
            audience=token_urls,
            options={
                "require": ["exp", "iss", "sub", "aud", "jti"],
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.InvalidTokenError as exc:
        raise refuse(f"assertion invalid ({type(exc).__name__}).") from None
    if (header.get("x5t") or header.get("x5t#S256")) not in app.thumbprints():
        raise refuse("x5t does not name a registered certificate.")
    at = ts(now)
    if claims["iss"] != app.client_id or claims["sub"] != app.client_id:
        raise refuse("iss and sub must be the client id.")
    expires = int(claims["exp"])
    if not at - _CLOCK_SKEW_SECONDS < expires <= at + int(MAX_ASSERTION_LIFETIME.total_seconds()):
        raise refuse("assertion expired or lives more than 10 minutes.")
    if int(claims.get("nbf", at)) > at + _CLOCK_SKEW_SECONDS:
        raise refuse("assertion not yet valid.")
    seen = (app.client_id, str(claims["jti"]))
    if seen in seen_jti:
        raise refuse("jti replayed.")
    seen_jti.add(seen)


def id_token_claims(
    *,
    authority_host: str,
    client_id: str,
    user: SignedInUser,
    nonce: str | None,
    now: datetime,
    lifetime: timedelta,
) -> dict[str, Any]:
    pairwise = b64url(hashlib.sha256(f"{user.object_id}|{client_id}".encode()).digest())
    claims: dict[str, Any] = {
        "aud": client_id,
        "iss": f"{authority_host}/{user.tenant_id}/v2.0",
        "iat": ts(now),
        "nbf": ts(now),
        "exp": ts(now + lifetime),
        "name": user.name,
        "preferred_username": user.preferred_username,
        "oid": user.object_id,
        "sub": pairwise,
        "tid": user.tenant_id,
        "uti": secrets.token_urlsafe(16),
        "ver": "2.0",
    }
    if nonce is not None:
        claims["nonce"] = nonce
    return claims


def access_token_claims(
    *,
    client_id: str,
    tenant_id: str,
    now: datetime,
    lifetime: timedelta,
    resource: str = "https://graph.microsoft.com",
    user: SignedInUser | None = None,
    scope: str | None = None,
) -> dict[str, Any]:
    """v1.0 access-token claims: app-only (``idtyp: app``) or delegated (``user`` + ``scp``)."""
    principal = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant_id}/{client_id}"))
    claims: dict[str, Any] = {
        "aud": resource,
        "iss": f"https://sts.windows.net/{tenant_id}/",
        "iat": ts(now),
        "nbf": ts(now),
        "exp": ts(now + lifetime),
        "appid": client_id,
        "appidacr": "2",
        "oid": principal,
        "sub": principal,
        "tid": tenant_id,
        "uti": secrets.token_urlsafe(16),
        "ver": "1.0",
    }
    if user is None:
        claims.update(idtyp="app", roles=[])
    else:
        claims.update(idtyp="user", oid=user.object_id, sub=user.object_id, scp=scope or "")
    return claims


def graph_validation_claims(
    *,
    authority_host: str,
    tenant_id: str,
    audience: str | None,
    version: Literal["1.0", "2.0"],
    now: datetime,
) -> dict[str, Any]:
    """The claims Graph puts in a rich notification's ``validationTokens`` entry."""
    issuer = (
        f"https://sts.windows.net/{tenant_id}/"
        if version == "1.0"
        else f"{authority_host}/{tenant_id}/v2.0"
    )
    principal = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant_id}/{GRAPH_CHANGE_TRACKING_APP_ID}"))
    claims: dict[str, Any] = {
        "iss": issuer,
        "iat": ts(now),
        "nbf": ts(now),
        "exp": ts(now + timedelta(hours=1)),
        "idp": issuer,
        "tid": tenant_id,
        "oid": principal,
        "sub": principal,
        "uti": secrets.token_urlsafe(16),
        "ver": version,
    }
    claims["appid" if version == "1.0" else "azp"] = GRAPH_CHANGE_TRACKING_APP_ID
    claims["appidacr" if version == "1.0" else "azpacr"] = "2"
    if audience is not None:
        claims["aud"] = audience
    return claims


def apply_overrides(claims: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``claims`` with ``overrides`` applied; an override of ``None`` deletes the claim."""
    merged = dict(claims)
    for name, value in overrides.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


def openid_configuration(authority_host: str, tenant_id: str) -> dict[str, Any]:
    """The tenant's v2.0 discovery document (the fields a client reads)."""
    authority = f"{authority_host}/{tenant_id}"
    return {
        "issuer": f"{authority}/v2.0",
        "authorization_endpoint": f"{authority}/oauth2/v2.0/authorize",
        "token_endpoint": f"{authority}/oauth2/v2.0/token",
        "jwks_uri": f"{authority}/discovery/v2.0/keys",
        "response_types_supported": ["code", "id_token", "code id_token"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_post",
            "private_key_jwt",
            "client_secret_basic",
        ],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "tid", "oid", "ver"],
        "cloud_instance_name": urlsplit(authority_host).hostname,
    }


def error_body(error: str, description: str) -> dict[str, Any]:
    """An Entra error body: RFC 6749 §5.2 plus ``error_codes``, ``trace_id``, ``correlation_id``."""
    code = description.split(":", 1)[0].removeprefix("AADSTS")
    return {
        "error": error,
        "error_description": description,
        "error_codes": [int(code)] if code.isdigit() else [],
        "trace_id": str(uuid.uuid4()),
        "correlation_id": str(uuid.uuid4()),
    }
