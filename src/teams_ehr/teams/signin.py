"""Microsoft sign-in: Entra OpenID Connect, authorization code + PKCE (requirements B6, C1).

Used twice: the clinician's one-time sign-in that binds their EHR user to a Microsoft identity
(``purpose="clinician_binding"``, only from a live EHR launch session, threat T14) and the
approver's sign-in of organization approval (``purpose="approval"``, threat T28).

Microsoft identity platform, v2.0 endpoints (learn.microsoft.com/entra/identity-platform:
v2-oauth2-auth-code-flow, v2-protocols-oidc, id-token-claims-reference):

* authority ``{authority_host}/{tenant}`` with the organization's tenant id, never ``common``,
  ``organizations`` or ``consumers`` (threat T17: a tenant-specific authority);
* ``GET /oauth2/v2.0/authorize`` with ``response_type=code``, ``response_mode=query``, ``scope=openid
  profile`` (no ``email``: we keep no e-mail or UPN), ``state`` and ``nonce`` (256-bit), PKCE
  ``S256`` (RFC 7636) and ``prompt=select_account``;
* ``POST /oauth2/v2.0/token`` redeems the code with the verifier; the ``id_token`` is verified
  against ``/discovery/v2.0/keys`` with RS256 only, ``iss`` exactly
  ``{authority_host}/{tid}/v2.0``, ``aud`` = client id, ``nonce`` = ours, and ``tid`` must be the
  configured tenant (:class:`CrossTenantDeniedError` otherwise).

A callback with ``error=access_denied`` or ``consent_required`` (the person declined, or may not
consent) is :class:`AuthorizationDeclinedError`, a 4xx "you declined" page, never a server fault.
The result is a :class:`MicrosoftIdentity` (``tid``, ``oid``) and nothing else: names, UPN and
e-mail in the token are never copied out. The access token is discarded.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlencode, urlsplit

import httpx
import jwt
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SkipValidation,
    ValidationError,
    field_validator,
    model_validator,
)

from teams_ehr._redact import get_logger
from teams_ehr._types import Flow, require_aware
from teams_ehr.errors import (
    AuthorizationDeclinedError,
    CrossTenantDeniedError,
    IdentityBindingError,
    OAuthError,
    StateInvalidError,
    TokenInvalidError,
)
from teams_ehr.sansio import run_async, run_sync
from teams_ehr.smart.authorize import session_binding, state_key
from teams_ehr.smart.callback import MAX_CODE_LENGTH, extract_state
from teams_ehr.smart.client_auth import ClientAuthentication, ClientSecretBasic
from teams_ehr.smart.jwks import JwksCache
from teams_ehr.smart.jwt_verify import JwtProfile, verify_jwt_flow
from teams_ehr.smart.pkce import code_challenge_s256, new_code_verifier
from teams_ehr.smart.tokens import authorization_code_form, token_request_flow
from teams_ehr.store.protocol import PendingAuthorizationStore
from teams_ehr.teams.identity import MicrosoftIdentity, normalize_guid

__all__ = [
    "DEFAULT_AUTHORITY_HOSTS",
    "EntraAppConfig",
    "MicrosoftIdentity",
    "PendingMicrosoftSignin",
    "SigninPurpose",
    "begin_microsoft_signin",
    "complete_microsoft_signin",
    "complete_microsoft_signin_async",
    "complete_microsoft_signin_flow",
    "id_token_profile",
    "store_pending_signin",
    "take_pending_signin",
    "verify_id_token_flow",
]

_log = get_logger(__name__)

DEFAULT_AUTHORITY_HOSTS = frozenset(
    {
        "login.microsoftonline.com",  # global Azure
        "login.microsoftonline.us",  # Azure US Government
        "login.chinacloudapi.cn",  # Azure operated by 21Vianet
        "login.partner.microsoftonline.cn",  # 21Vianet, newer endpoint
    }
)
"""Entra authority hosts of the public and sovereign clouds (MSAL's known authorities)."""

SigninPurpose = Literal["clinician_binding", "approval"]
SCOPE = "openid profile"
MAX_PENDING_TTL = timedelta(minutes=10)
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_RESERVED_TENANTS = frozenset({"common", "organizations", "consumers"})
_ERROR_CODE = re.compile(r"^[a-z_]{1,64}$")
_DECLINED = frozenset({"access_denied", "consent_required"})  # the person did not consent
_ID_TOKEN_CLAIMS = ("exp", "iat", "iss", "aud", "sub", "tid", "oid", "nonce")
_LEEWAY_SECONDS = 60


def _new_token() -> str:
    return secrets.token_urlsafe(32)


def _check_url(url: str, *, what: str, path_allowed: bool) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "https" or (parts.scheme == "http" and host in _LOOPBACK)
    if not secure or not host or parts.username or parts.password or parts.fragment:
        raise ValueError(f"{what} must be https (http only on loopback), without userinfo")
    if not path_allowed and (parts.path not in ("", "/") or parts.query):
        raise ValueError(f"{what} must have no path or query")
    return url


class EntraAppConfig(BaseModel):
    """The Entra app registration used for Microsoft sign-in (one per organization tenant).

    Give either ``client_secret`` (sent with ``client_secret_basic``) or ``client_auth`` (any
    :class:`~teams_ehr.smart.client_auth.ClientAuthentication`, e.g. a certificate assertion).
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        hide_input_in_errors=True,
        arbitrary_types_allowed=True,
    )

    tenant_id: str
    client_id: str = Field(min_length=1, max_length=128)
    redirect_uri: str = Field(max_length=2048)
    client_secret: SecretStr | None = None
    client_auth: Annotated[ClientAuthentication | None, SkipValidation] = None
    authority_host: str = "https://login.microsoftonline.com"
    allowed_authority_hosts: frozenset[str] = DEFAULT_AUTHORITY_HOSTS

    @field_validator("tenant_id")
    @classmethod
    def _tenant(cls, value: str) -> str:
        if value.strip().lower() in _RESERVED_TENANTS:
            raise ValueError("a tenant-specific authority is required (not common/organizations)")
        return normalize_guid(value)

    @field_validator("redirect_uri")
    @classmethod
    def _redirect(cls, value: str) -> str:
        return _check_url(value, what="redirect_uri", path_allowed=True)

    @model_validator(mode="after")
    def _consistent(self) -> EntraAppConfig:
        _check_url(self.authority_host, what="authority_host", path_allowed=False)
        if urlsplit(self.authority_host).hostname not in self.allowed_authority_hosts:
            raise ValueError("authority_host is not an allowed Entra authority")
        if (self.client_secret is None) == (self.client_auth is None):
            raise ValueError("give exactly one of client_secret and client_auth")
        if self.client_auth is not None and self.client_auth.client_id != self.client_id:
            raise ValueError("client_auth is for another client id")
        return self

    @property
    def authority(self) -> str:
        return f"{self.authority_host.rstrip('/')}/{self.tenant_id}"

    @property
    def authorize_endpoint(self) -> str:
        return f"{self.authority}/oauth2/v2.0/authorize"

    @property
    def token_endpoint(self) -> str:
        return f"{self.authority}/oauth2/v2.0/token"

    @property
    def jwks_uri(self) -> str:
        return f"{self.authority}/discovery/v2.0/keys"

    @property
    def issuer(self) -> str:
        """The only accepted ``iss`` of id_tokens: ``{authority_host}/{tenant}/v2.0``."""
        return f"{self.authority}/v2.0"

    def client_authentication(self) -> ClientAuthentication:
        if self.client_auth is not None:
            return self.client_auth
        secret = self.client_secret or SecretStr("")
        return ClientSecretBasic(self.client_id, secret)


class PendingMicrosoftSignin(BaseModel):
    """What the callback needs; the host stores it (encrypted) under :attr:`store_key`, a hash of
    ``state`` (:func:`teams_ehr.smart.authorize.state_key`), never under the state itself."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    state: SecretStr
    code_verifier: SecretStr
    nonce: SecretStr
    purpose: SigninPurpose
    tenant_id: str
    session_binding: str = Field(repr=False)
    bound_launch: str | None = Field(default=None, repr=False)
    created_at: AwareDatetime
    expires_at: AwareDatetime

    @model_validator(mode="after")
    def _times(self) -> PendingMicrosoftSignin:
        if not self.created_at < self.expires_at <= self.created_at + MAX_PENDING_TTL:
            raise ValueError("a pending sign-in lives at most 10 minutes")
        return self

    @property
    def store_key(self) -> str:
        return state_key(self.state.get_secret_value())

    def to_bytes(self) -> bytes:
        document: dict[str, Any] = self.model_dump(mode="json")
        for name in ("state", "code_verifier", "nonce"):
            document[name] = getattr(self, name).get_secret_value()
        return json.dumps(document, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, payload: bytes) -> PendingMicrosoftSignin:
        try:
            return cls.model_validate_json(payload)
        except ValidationError:
            raise StateInvalidError(
                "stored sign-in is unreadable", reason="state_corrupt"
            ) from None


def begin_microsoft_signin(
    config: EntraAppConfig,
    *,
    purpose: SigninPurpose,
    bound_launch: str | None,
    session_id: str,
    now: datetime,
    ttl: timedelta = MAX_PENDING_TTL,
    token_factory: Callable[[], str] = _new_token,
) -> tuple[str, PendingMicrosoftSignin]:
    """The authorize URL to redirect the browser to, and the pending sign-in to store.

    ``bound_launch`` is an opaque handle of the live, validated EHR launch session; it is required
    for ``clinician_binding`` (threat T14: binding starts only from a launch session).
    """
    require_aware(now, "now")
    if purpose == "clinician_binding" and not bound_launch:
        raise IdentityBindingError(
            "clinician sign-in must start from a live EHR launch session",
            reason="no_launch_session",
        )
    if not session_id:
        raise StateInvalidError("a browser session is required", reason="no_session")
    verifier = new_code_verifier()
    pending = PendingMicrosoftSignin(
        state=SecretStr(token_factory()),
        code_verifier=SecretStr(verifier),
        nonce=SecretStr(token_factory()),
        purpose=purpose,
        tenant_id=config.tenant_id,
        session_binding=session_binding(session_id),
        bound_launch=bound_launch,
        created_at=now,
        expires_at=now + min(ttl, MAX_PENDING_TTL),
    )
    query = {
        "client_id": config.client_id,
        "response_type": "code",
        "redirect_uri": config.redirect_uri,
        "response_mode": "query",
        "scope": SCOPE,
        "state": pending.state.get_secret_value(),
        "nonce": pending.nonce.get_secret_value(),
        "code_challenge": code_challenge_s256(verifier),
        "code_challenge_method": "S256",
        "prompt": "select_account",
    }
    return f"{config.authorize_endpoint}?{urlencode(query)}", pending


async def store_pending_signin(
    store: PendingAuthorizationStore, pending: PendingMicrosoftSignin, *, org_id: str
) -> None:
    """Persist ``pending`` under its state hash until it expires."""
    await store.put_pending(
        pending.store_key, org_id=org_id, payload=pending.to_bytes(), expires_at=pending.expires_at
    )


async def take_pending_signin(
    store: PendingAuthorizationStore, params: Mapping[str, str], *, now: datetime
) -> tuple[str, PendingMicrosoftSignin]:
    """Take (single use) the pending sign-in named by the callback's ``state``.

    Unknown, reused or expired state → :class:`StateInvalidError`; the code is never redeemed.
    """
    taken = await store.take_pending(state_key(extract_state(params)), now=now)
    if taken is None:
        raise StateInvalidError("unknown, reused or expired sign-in state", reason="state_unknown")
    org_id, payload = taken
    return org_id, PendingMicrosoftSignin.from_bytes(payload)


def _check_callback(
    config: EntraAppConfig,
    params: Mapping[str, str],
    pending: PendingMicrosoftSignin,
    session_id: str,
    now: datetime,
) -> str:
    state = extract_state(params)
    if not hmac.compare_digest(state.encode(), pending.state.get_secret_value().encode()):
        raise StateInvalidError("sign-in state does not match", reason="state_mismatch")
    if not hmac.compare_digest(session_binding(session_id), pending.session_binding):
        raise StateInvalidError("sign-in started in another session", reason="state_other_session")
    if now >= pending.expires_at:
        raise StateInvalidError("sign-in state expired", reason="state_expired")
    if pending.tenant_id != config.tenant_id:
        raise StateInvalidError("sign-in started for another tenant", reason="state_other_tenant")
    if pending.purpose == "clinician_binding" and not pending.bound_launch:
        raise IdentityBindingError("no EHR launch session", reason="no_launch_session")
    error = params.get("error")
    if error is not None and error in _DECLINED:
        _log.info("Microsoft sign-in declined by the user", extra={"security_event": error})
        raise AuthorizationDeclinedError(
            "the user declined the Microsoft sign-in",
            error=error,
            description=params.get("error_description"),
            reason=error,
        )
    if error is not None:
        code = error if _ERROR_CODE.match(error) else "invalid_response"
        raise OAuthError(error=code, description=params.get("error_description"))
    code_value = params.get("code")
    if not code_value or len(code_value) > MAX_CODE_LENGTH:
        raise OAuthError(error="invalid_request", reason="missing_code")
    return code_value


def _peek_tenant(id_token: str, configured: str) -> str:
    """The token's unverified ``tid``, used only to choose the issuer the full verification
    then requires (``{authority_host}/{tid}/v2.0``); the configured tenant if there is none, so
    the verifier reports what is wrong with the token."""
    try:
        claims = jwt.decode(id_token, options={"verify_signature": False})
        return normalize_guid(str(claims["tid"]))
    except (jwt.PyJWTError, KeyError, ValueError):
        return configured


def id_token_profile(config: EntraAppConfig, tenant_id: str, nonce: str) -> JwtProfile:
    """The verification profile of an Entra v2.0 id_token for ``config``'s app."""
    return JwtProfile(
        algorithms=("RS256",),
        issuers=(f"{config.authority_host.rstrip('/')}/{tenant_id}/v2.0",),
        audience=config.client_id,
        required=_ID_TOKEN_CLAIMS,
        leeway_seconds=_LEEWAY_SECONDS,
        expected_claims={"nonce": nonce, "tid": tenant_id},
    )


def complete_microsoft_signin_flow(
    config: EntraAppConfig,
    params: Mapping[str, str],
    pending: PendingMicrosoftSignin,
    *,
    session_id: str,
    jwks: JwksCache,
    now: datetime,
) -> Flow[MicrosoftIdentity]:
    """Check the callback, redeem the code, verify the id_token; yield requests (sans-IO)."""
    code = _check_callback(config, params, pending, session_id, now)
    verifier = pending.code_verifier.get_secret_value()
    form = {**authorization_code_form(code, config.redirect_uri, verifier), "scope": SCOPE}
    response = yield from token_request_flow(
        config.token_endpoint, form, config.client_authentication(), clock=lambda: now
    )
    if response.id_token is None:
        raise TokenInvalidError("the token response has no id_token", reason="missing_id_token")
    identity = yield from verify_id_token_flow(
        config, response.id_token.get_secret_value(), nonce=pending.nonce, jwks=jwks, now=now
    )
    _log.info("Microsoft sign-in verified (%s)", pending.purpose)
    return identity


def verify_id_token_flow(
    config: EntraAppConfig, id_token: str, *, nonce: SecretStr, jwks: JwksCache, now: datetime
) -> Flow[MicrosoftIdentity]:
    """Verify an Entra v2.0 id_token for ``config``'s app; yields a JWKS GET if needed.

    RS256 from the tenant's JWKS, ``iss`` exactly ``{authority_host}/{tid}/v2.0``, ``aud`` = the
    client id (a string, not a list with other audiences), ``nonce`` ours, ``exp iat sub tid oid`` present; then ``tid`` must be the configured tenant
    (:class:`CrossTenantDeniedError`) and ``oid`` a GUID.
    """
    token_tenant = _peek_tenant(id_token, config.tenant_id)
    profile = id_token_profile(config, token_tenant, nonce.get_secret_value())
    claims = yield from verify_jwt_flow(id_token, profile, jwks, config.jwks_uri, now=now)
    if claims["aud"] != config.client_id:  # OIDC Core §3.1.3.7: no untrusted extra audiences
        raise TokenInvalidError("id_token has other audiences", reason="wrong_audience")
    if not isinstance(claims["sub"], str) or not claims["sub"]:
        raise TokenInvalidError("id_token sub is not a string", reason="bad_sub")
    if token_tenant != config.tenant_id:
        _log.warning("Microsoft sign-in refused: the account belongs to another tenant")
        raise CrossTenantDeniedError("the Microsoft account belongs to another tenant")
    try:
        return MicrosoftIdentity(tenant_id=token_tenant, object_id=str(claims["oid"]))
    except ValidationError:
        raise TokenInvalidError("id_token oid is not a GUID", reason="bad_oid") from None


def complete_microsoft_signin(
    config: EntraAppConfig,
    params: Mapping[str, str],
    pending: PendingMicrosoftSignin,
    *,
    session_id: str,
    jwks: JwksCache,
    client: httpx.Client,
    now: datetime,
) -> MicrosoftIdentity:
    """Synchronous :func:`complete_microsoft_signin_flow`."""
    flow = complete_microsoft_signin_flow(
        config, params, pending, session_id=session_id, jwks=jwks, now=now
    )
    return run_sync(flow, client)


async def complete_microsoft_signin_async(
    config: EntraAppConfig,
    params: Mapping[str, str],
    pending: PendingMicrosoftSignin,
    *,
    session_id: str,
    jwks: JwksCache,
    client: httpx.AsyncClient,
    now: datetime,
) -> MicrosoftIdentity:
    """Asynchronous :func:`complete_microsoft_signin_flow` (asyncio or trio)."""
    flow = complete_microsoft_signin_flow(
        config, params, pending, session_id=session_id, jwks=jwks, now=now
    )
    return await run_async(flow, client)
