"""Documents and response helpers of :class:`~teams_ehr.testing.fake_ehr.FakeEhr`.

The SMART configuration follows SMART App Launch 2.x conformance.md §"Metadata" (capability
strings, ``code_challenge_methods_supported: ["S256"]``); the CapabilityStatement carries the
legacy ``oauth-uris`` extension (Epic's documented fallback,
fhir.epic.com/Documentation?docId=oauth2); the OpenID configuration follows OIDC Discovery 1.0 §3
with RS256 id_tokens (Epic, fhir.epic.com/Documentation?docId=oauth2).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import jwt

from teams_ehr.testing._fake_ehr_checks import FakeOAuthError

__all__ = [
    "CAPABILITIES",
    "ClientRecord",
    "Grant",
    "Endpoints",
    "ScriptedFailure",
    "capability_statement",
    "failure_response",
    "json_response",
    "openid_configuration",
    "outcome",
    "smart_configuration",
    "thumbprint",
    "unverified_issuer",
]

CAPABILITIES = (
    "launch-ehr",
    "launch-standalone",
    "authorize-post",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "context-banner",
    "context-ehr-patient",
    "context-ehr-encounter",
    "permission-offline",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
    "sso-openid-connect",
)
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


@dataclass(frozen=True, slots=True)
class Endpoints:
    base_url: str
    oidc_issuer: str
    authorize_url: str
    token_url: str
    jwks_url: str


@dataclass
class ClientRecord:
    client_id: str
    redirect_uris: tuple[str, ...]
    jwks: dict[str, Any] | None
    secret: str | None
    jwks_url: str | None


@dataclass
class Grant:
    client_id: str
    scope: str
    context: dict[str, Any]
    user: str | None
    redirect_uri: str = ""
    challenge: str = ""
    nonce: str | None = None
    expires_at: datetime | None = None
    used: bool = False


@dataclass
class ScriptedFailure:
    status: int
    retry_after: float | None
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def smart_configuration(
    urls: Endpoints, *, send_iss: bool, overrides: dict[str, Any]
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "issuer": urls.oidc_issuer,
        "jwks_uri": urls.jwks_url,
        "authorization_endpoint": urls.authorize_url,
        "token_endpoint": urls.token_url,
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "scopes_supported": ["openid", "fhirUser", "launch", "launch/patient", "offline_access"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": list(CAPABILITIES),
    }
    if send_iss:
        document["authorization_response_iss_parameter_supported"] = True
    for key, value in overrides.items():
        if value is None:
            document.pop(key, None)
        else:
            document[key] = value
    return document


def capability_statement(urls: Endpoints) -> dict[str, Any]:
    oauth_uris = [
        {"url": "authorize", "valueUri": urls.authorize_url},
        {"url": "token", "valueUri": urls.token_url},
    ]
    security = {"extension": [{"url": OAUTH_URIS, "extension": oauth_uris}]}
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2024-01-01",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "implementation": {"description": "FakeEhr", "url": urls.base_url},
        "rest": [{"mode": "server", "security": security}],
    }


def openid_configuration(urls: Endpoints) -> dict[str, Any]:
    return {
        "issuer": urls.oidc_issuer,
        "jwks_uri": urls.jwks_url,
        "authorization_endpoint": urls.authorize_url,
        "token_endpoint": urls.token_url,
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint of an RSA public JWK."""
    members = {k: jwk[k] for k in ("e", "kty", "n")}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode())
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def unverified_issuer(assertion: str) -> str:
    """The ``iss`` of an assertion before verification (to find the registered client)."""
    try:
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise FakeOAuthError("invalid_client", "malformed client assertion") from None
    issuer = claims.get("iss")
    return issuer if isinstance(issuer, str) else ""


def outcome(code: str, text: str) -> dict[str, Any]:
    issue = {"severity": "error", "code": code, "diagnostics": text}
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def json_response(
    status: int, body: Any, *, media: str = "application/json", no_store: bool = False
) -> httpx.Response:
    headers = {"Content-Type": media}
    if no_store:
        headers.update({"Cache-Control": "no-store", "Pragma": "no-cache"})
    return httpx.Response(status, headers=headers, content=json.dumps(body).encode())


def failure_response(failure: ScriptedFailure) -> httpx.Response:
    headers = dict(failure.headers)
    if failure.retry_after is not None:
        headers["Retry-After"] = str(int(failure.retry_after))
    body = failure.body
    if body is None or isinstance(body, dict | list):
        content = json.dumps(body if body is not None else {"error": "temporarily_unavailable"})
        headers.setdefault("Content-Type", "application/json")
        return httpx.Response(failure.status, headers=headers, content=content.encode())
    raw = body.encode() if isinstance(body, str) else bytes(body)
    return httpx.Response(failure.status, headers=headers, content=raw)
