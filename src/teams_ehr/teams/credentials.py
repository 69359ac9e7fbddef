"""App-only Microsoft Entra credentials for Microsoft Graph (requirement B1; threat T17).

* Authority is tenant-specific, always ``{authority_host}/{tenant}/oauth2/v2.0/token``: the
  multi-tenant aliases ``common``, ``organizations`` and ``consumers`` are refused, so a token is
  only ever minted in the organization's own tenant.
* Grant: OAuth 2.0 client credentials (RFC 6749 §4.4) with either a certificate assertion
  (RFC 7523; Microsoft identity platform "certificate credentials": RS256, header ``x5t`` = base64url
  SHA-1 of the DER certificate and ``x5t#S256`` = its SHA-256, ``aud`` = the token endpoint, fresh
  ``jti``, ``exp`` ≤ 10 minutes) or a client secret.
* Tokens are cached per scope set until ``refresh_margin`` before expiry; concurrent callers share
  one request (single-flight, reliability case R20).

The token request is a sans-IO :data:`~teams_ehr._types.Flow` run by :func:`teams_ehr.sansio.run_async`.
:class:`SyncCredentialAdapter` plugs in azure-identity credentials (sync or ``.aio``, managed identity).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import inspect
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol

import anyio
import anyio.to_thread
import httpx
from pydantic import SecretStr

from teams_ehr._concurrency import KeyedLocks
from teams_ehr._redact import get_logger
from teams_ehr._types import Clock, Flow, require_aware, utc_now
from teams_ehr.errors import ConfigurationError, OAuthError
from teams_ehr.sansio import run_async, with_max_bytes

__all__ = [
    "AccessToken",
    "AccessTokenProvider",
    "CertificateCredential",
    "ClientCredentialsProvider",
    "SyncCredentialAdapter",
    "client_assertion",
    "token_request_flow",
]

log = get_logger(__name__)

MAX_ASSERTION_TTL = timedelta(minutes=10)
_MULTI_TENANT_ALIASES = frozenset({"common", "organizations", "consumers"})
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")
_TOKEN_RESPONSE_MAX_BYTES = 64 * 1024


class AccessToken(NamedTuple):
    """azure-identity's ``AccessToken`` shape; ``expires_on`` is Unix seconds. Never in repr."""

    token: str
    expires_on: int

    def __repr__(self) -> str:
        return f"AccessToken(token='[redacted]', expires_on={self.expires_on})"


class AccessTokenProvider(Protocol):
    """Anything that can hand out a bearer token for the given scopes."""

    async def get_token(self, *scopes: str) -> AccessToken: ...


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _check_tenant(tenant_id: str) -> str:
    if tenant_id.lower() in _MULTI_TENANT_ALIASES or not _TENANT.match(tenant_id):
        raise ConfigurationError(
            "Graph credentials need a tenant-specific authority (tenant id or verified domain), "
            "never common/organizations/consumers",
            reason="tenant_authority_required",
        )
    return tenant_id


def client_assertion(
    private_key_pem: bytes,
    certificate_pem: bytes,
    *,
    client_id: str,
    token_endpoint: str,
    now: int,
    ttl: timedelta,
    jti: str,
) -> str:
    """A signed RS256 client assertion for the Microsoft identity platform."""
    if ttl <= timedelta(0) or ttl > MAX_ASSERTION_TTL:
        raise ConfigurationError("assertion lifetime must be within 10 minutes", reason="bad_ttl")
    # Imported here: a secret- or managed-identity-only host never pays for X.509 and JWS.
    import jwt
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    der = x509.load_pem_x509_certificate(certificate_pem).public_bytes(serialization.Encoding.DER)
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    headers = {
        "typ": "JWT",
        "x5t": _b64url(hashlib.sha1(der, usedforsecurity=False).digest()),
        "x5t#S256": _b64url(hashlib.sha256(der).digest()),
    }
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_endpoint,
        "jti": jti,
        "iat": now,
        "nbf": now,
        "exp": now + int(ttl.total_seconds()),
    }
    return jwt.encode(claims, key, algorithm="RS256", headers=headers)  # type: ignore[arg-type]


def token_request_flow(token_endpoint: str, form: dict[str, str], *, now: int) -> Flow[AccessToken]:
    """POST the client-credentials form; parse ``access_token``/``expires_in`` (RFC 6749 §5)."""
    request = httpx.Request(
        "POST", token_endpoint, data=form, headers={"Accept": "application/json"}
    )
    response = yield with_max_bytes(request, _TOKEN_RESPONSE_MAX_BYTES)
    try:
        body: Any = response.json()
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise OAuthError(status_code=response.status_code, reason="token_response_invalid")
    if response.status_code != 200 or "error" in body:
        raise OAuthError(
            error=str(body.get("error", "server_error"))[:64],
            description=str(body.get("error_description", ""))[:512] or None,
            status_code=response.status_code,
        )
    token, expires_in = body.get("access_token"), body.get("expires_in")
    if (
        not isinstance(token, str)
        or not token
        or str(body.get("token_type", "")).lower() != "bearer"
    ):
        raise OAuthError(status_code=response.status_code, reason="token_response_invalid")
    if isinstance(expires_in, str) and expires_in.isascii() and expires_in.isdigit():
        expires_in = int(expires_in)
    if not isinstance(expires_in, int) or isinstance(expires_in, bool) or expires_in <= 0:
        raise OAuthError(status_code=response.status_code, reason="token_response_invalid")
    lifetime = expires_in
    return AccessToken(token, now + lifetime)


_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class CertificateCredential:
    """Microsoft identity platform certificate credentials as a client authentication: a fresh
    :func:`client_assertion` per token request (RFC 7523 §2.2; learn.microsoft.com/entra/
    identity-platform/certificate-credentials). Used for app-only Graph tokens and for redeeming
    a user's sign-in code, so a certificate-only app registration needs no secret."""

    __slots__ = ("_certificate", "_client_id", "_jti", "_ttl")

    def __init__(
        self,
        client_id: str,
        certificate: tuple[bytes, bytes],
        *,
        assertion_ttl: timedelta = timedelta(minutes=5),
        jti_factory: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        if assertion_ttl > MAX_ASSERTION_TTL:
            raise ConfigurationError(
                "assertion lifetime must be within 10 minutes", reason="bad_ttl"
            )
        self._client_id = client_id
        self._certificate = certificate
        self._ttl = assertion_ttl
        self._jti = jti_factory

    def __repr__(self) -> str:
        return f"<CertificateCredential client={self._client_id!r}>"

    @property
    def client_id(self) -> str:
        return self._client_id

    def token_request_auth(
        self, token_endpoint: str, *, now: datetime
    ) -> tuple[dict[str, str], dict[str, str]]:
        """The ``client_assertion`` form fields for one request to ``token_endpoint``."""
        key_pem, cert_pem = self._certificate
        assertion = client_assertion(
            key_pem,
            cert_pem,
            client_id=self._client_id,
            token_endpoint=token_endpoint,
            now=int(require_aware(now, "now").timestamp()),
            ttl=self._ttl,
            jti=self._jti(),
        )
        fields = {
            "client_id": self._client_id,
            "client_assertion_type": _ASSERTION_TYPE,
            "client_assertion": assertion,
        }
        return fields, {}


class ClientCredentialsProvider:
    """Client-credentials tokens for one app in one tenant, cached and single-flight."""

    def __init__(
        self,
        tenant_id: str,
        client_id: str,
        *,
        http: httpx.AsyncClient,
        certificate: tuple[bytes, bytes] | None = None,
        client_secret: SecretStr | None = None,
        authority_host: str = "https://login.microsoftonline.com",
        clock: Clock = utc_now,
        refresh_margin: timedelta = timedelta(minutes=5),
        assertion_ttl: timedelta = timedelta(minutes=5),
        jti_factory: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        if (certificate is None) == (client_secret is None):
            raise ConfigurationError(
                "give exactly one of certificate or client_secret", reason="credential_choice"
            )
        self.tenant_id = _check_tenant(tenant_id)
        self.client_id = client_id
        self.token_endpoint = f"{authority_host.rstrip('/')}/{tenant_id}/oauth2/v2.0/token"
        self._http = http
        self._assertion = (
            None
            if certificate is None
            else CertificateCredential(
                client_id, certificate, assertion_ttl=assertion_ttl, jti_factory=jti_factory
            )
        )
        self._secret = client_secret
        self._clock = clock
        self._margin = int(refresh_margin.total_seconds())
        self._cache: dict[tuple[str, ...], AccessToken] = {}
        self._locks = KeyedLocks()

    def __repr__(self) -> str:
        return f"<ClientCredentialsProvider tenant={self.tenant_id!r} client={self.client_id!r}>"

    def _fresh(self, key: tuple[str, ...], now: int) -> AccessToken | None:
        cached = self._cache.get(key)
        if cached is not None and cached.expires_on - self._margin > now:
            return cached
        return None

    def invalidate(self, *scopes: str) -> None:
        """Forget the cached token for ``scopes`` (after the resource rejected it with 401)."""
        self._cache.pop(tuple(sorted(scopes)), None)

    async def get_token(self, *scopes: str) -> AccessToken:
        if not scopes:
            raise ConfigurationError("at least one scope is required", reason="scope_required")
        key = tuple(sorted(scopes))
        now = int(require_aware(self._clock(), "clock()").timestamp())
        if (token := self._fresh(key, now)) is not None:
            return token
        async with self._locks.hold(key):
            now = int(self._clock().timestamp())
            if (token := self._fresh(key, now)) is not None:
                return token
            token = await run_async(self._flow(key, now), self._http)
            self._cache[key] = token
            log.debug("acquired Graph app token for tenant %s", self.tenant_id)
            return token

    def _flow(self, scopes: tuple[str, ...], now: int) -> Flow[AccessToken]:
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "scope": " ".join(scopes),
        }
        if self._assertion is not None:
            fields, _ = self._assertion.token_request_auth(
                self.token_endpoint, now=datetime.fromtimestamp(now, UTC)
            )
            form.update(fields)
        elif self._secret is not None:
            form["client_secret"] = self._secret.get_secret_value()
        return token_request_flow(self.token_endpoint, form, now=now)


class SyncCredentialAdapter:
    """Wrap any credential with a sync or async ``get_token(*scopes)`` (azure-identity, managed
    identity, MSAL wrappers) as an :class:`AccessTokenProvider`. Sync credentials run in a worker
    thread so the event loop never blocks on their network I/O."""

    def __init__(self, credential: Any) -> None:
        getter = getattr(credential, "get_token", None)
        if getter is None or not callable(getter):
            raise ConfigurationError("credential has no get_token()", reason="credential_choice")
        self._getter: Callable[..., Any] = getter
        self._is_async = inspect.iscoroutinefunction(getter)

    def __repr__(self) -> str:
        return "<SyncCredentialAdapter>"

    async def get_token(self, *scopes: str) -> AccessToken:
        if self._is_async:
            result = await self._getter(*scopes)
        else:
            result = await anyio.to_thread.run_sync(functools.partial(self._getter, *scopes))
            if inspect.isawaitable(result):
                result = await result
        return AccessToken(str(result.token), int(result.expires_on))
