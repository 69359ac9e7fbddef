"""The composed SMART launch: discovery → authorize → callback → token → id_token → context.

SMART App Launch 2.x app-launch.md, end to end, as sans-IO flows (design rule 3):

* :func:`provider_launch_flow` (EHR launch, requirements A1–A3) and :func:`standalone_launch_flow`
  (approval sign-in) discover the server, compare it with the approval snapshot (threat T03), fetch
  ``openid-configuration`` when the SMART configuration lacks ``issuer``/``jwks_uri`` (Epic's OIDC
  issuer ≠ its FHIR base, fhir.epic.com/Documentation?docId=oauth2) and return the redirect + the
  pending state;
* :func:`complete_launch_flow` (requirements A4, A5, A7, A6) checks the callback, redeems the code
  with the caller's :class:`~teams_ehr.smart.client_auth.ClientAuthentication` (a fresh assertion
  per attempt), verifies the ``id_token`` (RS256 by default, ``iss`` = the OIDC issuer, ``aud`` =
  client id, keys only from the discovered ``jwks_uri``, ``nonce`` echoed) and builds the
  :class:`~teams_ehr.smart.context.LaunchContext`.

:class:`SmartLaunchClient` / :class:`AsyncSmartLaunchClient` run these on an injected httpx
client; pending authorizations are *returned*, never stored here (the visits layer keeps them in
its ``PendingAuthorizationStore`` under :func:`~teams_ehr.smart.authorize.state_key`).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict

from teams_ehr._types import Clock, Flow, utc_now
from teams_ehr.errors import ConfigurationError, TokenInvalidError
from teams_ehr.sansio import run_async, run_sync
from teams_ehr.smart.authorize import (
    AuthorizationRedirect,
    PendingAuthorization,
    SmartClientConfig,
    begin_authorization,
)
from teams_ehr.smart.callback import parse_callback
from teams_ehr.smart.canonical import canonical_fhir_base
from teams_ehr.smart.client_auth import ClientAuthentication
from teams_ehr.smart.context import LaunchContext, build_launch_context
from teams_ehr.smart.discovery import (
    DiscoveryCache,
    DiscoverySnapshot,
    SmartConfiguration,
    compare_snapshot,
    discovery_flow,
    openid_configuration_flow,
)
from teams_ehr.smart.jwks import JwksCache
from teams_ehr.smart.jwt_verify import JwtProfile, verify_jwt, verify_jwt_flow
from teams_ehr.smart.launch import LaunchRequest
from teams_ehr.smart.scopes import validate_scopes
from teams_ehr.smart.tokens import TokenResponse, authorization_code_form, token_request_flow
from teams_ehr.store.protocol import IssuerBinding

__all__ = [
    "AsyncSmartLaunchClient",
    "SmartLaunchClient",
    "LaunchResult",
    "LaunchStart",
    "authorize_flow",
    "complete_launch_flow",
    "finish_launch",
    "id_token_profile",
    "provider_launch_flow",
    "redeem_flow",
    "required_id_token",
    "standalone_launch_flow",
]

LaunchStart = tuple[AuthorizationRedirect, PendingAuthorization]
_SECRET_KEYS = frozenset({"access_token", "id_token", "refresh_token"})


class LaunchResult(BaseModel):
    """A completed launch: the verified context and the token response (secrets as SecretStr)."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    org_id: str
    issuer: str
    context: LaunchContext
    token: TokenResponse


def _epic_client_id(config: SmartClientConfig) -> str | None:
    return config.client_id if config.epic_client_id_header else None


def authorize_flow(
    config: SmartClientConfig,
    smart: SmartConfiguration,
    *,
    issuer: str,
    org_id: str,
    launch: str | None,
    session_id: str,
    now: datetime,
    approved: DiscoverySnapshot | None = None,
    scopes: Sequence[str] | None = None,
) -> Flow[LaunchStart]:
    """From a discovered configuration to the redirect (yields only for openid-configuration).

    ``approved``, when given, must match ``smart`` (:class:`~teams_ehr.errors.MetadataMismatchError`
    otherwise); ``None`` skips the comparison.
    """
    issuer = canonical_fhir_base(issuer, allow_http=config.allow_http)  # sent verbatim as aud
    if approved is not None:
        compare_snapshot(smart, approved)
    chosen = validate_scopes(scopes if scopes is not None else config.scopes)
    oidc_issuer, jwks_uri = smart.issuer, smart.jwks_uri
    if "openid" in chosen and (oidc_issuer is None or jwks_uri is None):
        oidc = yield from openid_configuration_flow(
            issuer, epic_client_id=_epic_client_id(config), allow_http=config.allow_http
        )
        oidc_issuer, jwks_uri = oidc.issuer, oidc.jwks_uri
    return begin_authorization(
        config,
        smart,
        issuer=issuer,
        org_id=org_id,
        launch=launch,
        session_id=session_id,
        now=now,
        scopes=chosen,
        oidc_issuer=oidc_issuer,
        jwks_uri=jwks_uri,
    )


def _discover(config: SmartClientConfig, base: str) -> Flow[SmartConfiguration]:
    return discovery_flow(
        base,
        epic_client_id=_epic_client_id(config),
        allow_http=config.allow_http,
        allow_missing_pkce_metadata=config.allow_missing_pkce_metadata,
    )


def provider_launch_flow(
    config: SmartClientConfig,
    request: LaunchRequest,
    binding: IssuerBinding,
    *,
    session_id: str,
    now: datetime,
    approved: DiscoverySnapshot | None = None,
    scopes: Sequence[str] | None = None,
) -> Flow[LaunchStart]:
    """EHR launch, after :func:`~teams_ehr.smart.launch.admit_launch` admitted ``request``."""
    if binding.canonical_base != request.iss:
        raise ConfigurationError("the binding does not belong to this launch's issuer")
    smart = yield from _discover(config, binding.canonical_base)
    return (
        yield from authorize_flow(
            config,
            smart,
            issuer=binding.canonical_base,
            org_id=binding.org_id,
            launch=request.launch,
            session_id=session_id,
            now=now,
            approved=approved,
            scopes=scopes,
        )
    )


def standalone_launch_flow(
    config: SmartClientConfig,
    fhir_base: str,
    org_id: str,
    *,
    session_id: str,
    now: datetime,
    approved: DiscoverySnapshot | None = None,
    scopes: Sequence[str] | None = None,
) -> Flow[LaunchStart]:
    """Standalone launch against a configured base (no ``launch`` parameter; SMART §1.4)."""
    smart = yield from _discover(config, fhir_base)
    return (
        yield from authorize_flow(
            config,
            smart,
            issuer=fhir_base,
            org_id=org_id,
            launch=None,
            session_id=session_id,
            now=now,
            approved=approved,
            scopes=scopes,
        )
    )


def redeem_flow(
    pending: PendingAuthorization | None,
    params: Mapping[str, str],
    auth: ClientAuthentication,
    *,
    session_id: str,
    clock: Clock = utc_now,
    max_attempts: int = 3,
) -> Flow[TokenResponse]:
    """Check the callback (nothing is sent unless it passes) and redeem the code (requirements A4, A5)."""
    code = parse_callback(params, pending, session_id=session_id, now=clock())
    if pending is None:  # pragma: no cover - parse_callback refused already
        raise TokenInvalidError("no pending authorization")
    if auth.client_id != pending.client_id:
        raise ConfigurationError("client authentication is for another client id")
    verifier = pending.code_verifier.get_secret_value()
    form = authorization_code_form(code, pending.redirect_uri, verifier)
    return (
        yield from token_request_flow(
            pending.token_endpoint, form, auth, clock=clock, max_attempts=max_attempts
        )
    )


def id_token_profile(
    pending: PendingAuthorization, algorithms: Sequence[str] = ("RS256",)
) -> tuple[JwtProfile, str] | None:
    """The id_token rules and ``jwks_uri`` of ``pending``, or ``None`` without ``openid``."""
    if "openid" not in pending.scope.split():
        return None
    if pending.oidc_issuer is None or pending.jwks_uri is None:
        raise TokenInvalidError("no OIDC issuer or jwks_uri to verify with", reason="no_oidc")
    profile = JwtProfile(
        algorithms=tuple(algorithms), issuers=(pending.oidc_issuer,), audience=pending.client_id
    )
    return profile, pending.jwks_uri


def required_id_token(token: TokenResponse) -> str:
    """The raw ``id_token`` of a response to an ``openid`` request, or ``TokenInvalidError``."""
    if token.id_token is None:
        raise TokenInvalidError("openid was requested but no id_token came back", reason="no_id")
    return token.id_token.get_secret_value()


def finish_launch(
    pending: PendingAuthorization, token: TokenResponse, claims: Mapping[str, Any] | None
) -> LaunchResult:
    """Check the ``nonce`` and build the result (pure)."""
    if claims is not None:
        nonce = claims.get("nonce")
        expected = pending.nonce.get_secret_value()
        if not isinstance(nonce, str) or not hmac.compare_digest(nonce, expected):
            raise TokenInvalidError("id_token nonce does not match", reason="nonce_mismatch")
    fields = {
        k: v
        for k, v in token.model_dump(by_alias=True, exclude_none=True).items()
        if k not in _SECRET_KEYS
    }
    context = build_launch_context(fields, claims)
    return LaunchResult(org_id=pending.org_id, issuer=pending.issuer, context=context, token=token)


def complete_launch_flow(
    config: SmartClientConfig,
    pending: PendingAuthorization | None,
    params: Mapping[str, str],
    *,
    auth: ClientAuthentication,
    jwks: JwksCache,
    session_id: str,
    clock: Clock = utc_now,
    max_attempts: int = 3,
) -> Flow[LaunchResult]:
    """Callback → token → verified id_token → :class:`LaunchResult` (sans-IO)."""
    token = yield from redeem_flow(
        pending, params, auth, session_id=session_id, clock=clock, max_attempts=max_attempts
    )
    if pending is None:  # pragma: no cover - redeem_flow refused already
        raise TokenInvalidError("no pending authorization")
    check = id_token_profile(pending, config.id_token_algorithms)
    claims = None
    if check is not None:
        profile, jwks_uri = check
        claims = yield from verify_jwt_flow(
            required_id_token(token), profile, jwks, jwks_uri, now=clock()
        )
    return finish_launch(pending, token, claims)


class _LaunchClientBase:
    """Shared configuration of the two facades (the flows above do the work)."""

    def __init__(
        self,
        config: SmartClientConfig,
        auth: ClientAuthentication,
        *,
        jwks: JwksCache | None = None,
        discovery: DiscoveryCache | None = None,
        clock: Clock = utc_now,
        max_attempts: int = 3,
    ) -> None:
        if auth.client_id != config.client_id:
            raise ConfigurationError("client authentication is for another client id")
        self.config = config
        self._auth = auth
        self._clock = clock
        self._max_attempts = max_attempts
        self._jwks = jwks or JwksCache(clock=clock, allow_http=config.allow_http)
        self._discovery = discovery or DiscoveryCache(
            clock=clock,
            allow_http=config.allow_http,
            allow_missing_pkce_metadata=config.allow_missing_pkce_metadata,
        )

    def _authorize(
        self,
        smart: SmartConfiguration,
        base: str,
        org_id: str,
        launch: str | None,
        session_id: str,
        approved: DiscoverySnapshot | None,
        scopes: Sequence[str] | None,
    ) -> Flow[LaunchStart]:
        return authorize_flow(
            self.config,
            smart,
            issuer=base,
            org_id=org_id,
            launch=launch,
            session_id=session_id,
            now=self._clock(),
            approved=approved,
            scopes=scopes,
        )

    def _redeem(
        self, pending: PendingAuthorization | None, params: Mapping[str, str], session_id: str
    ) -> Flow[TokenResponse]:
        return redeem_flow(
            pending,
            params,
            self._auth,
            session_id=session_id,
            clock=self._clock,
            max_attempts=self._max_attempts,
        )

    def _checked(
        self, pending: PendingAuthorization | None
    ) -> tuple[PendingAuthorization, tuple[JwtProfile, str] | None]:
        if pending is None:  # pragma: no cover - _redeem refused already
            raise TokenInvalidError("no pending authorization")
        return pending, id_token_profile(pending, self.config.id_token_algorithms)


class SmartLaunchClient(_LaunchClientBase):
    """Synchronous SMART launches on an injected ``httpx.Client`` (threads share the caches).

    Keyword options: ``jwks``, ``discovery`` (caches to share), ``clock``, ``max_attempts``.
    """

    def __init__(
        self,
        http: httpx.Client,
        config: SmartClientConfig,
        auth: ClientAuthentication,
        *,
        jwks: JwksCache | None = None,
        discovery: DiscoveryCache | None = None,
        clock: Clock = utc_now,
        max_attempts: int = 3,
    ) -> None:
        super().__init__(
            config, auth, jwks=jwks, discovery=discovery, clock=clock, max_attempts=max_attempts
        )
        self._http = http

    def start_launch(
        self,
        base: str,
        org_id: str,
        *,
        launch: str | None,
        session_id: str,
        approved: DiscoverySnapshot | None = None,
        scopes: Sequence[str] | None = None,
    ) -> LaunchStart:
        """Discover ``base`` and build the authorization redirect (SMART App Launch §"Obtain
        authorization code").

        EHR launch when ``launch`` is given (``base`` = the admitted canonical ``iss``), else
        standalone. ``approved`` is the :class:`~teams_ehr.smart.discovery.DiscoverySnapshot`
        taken when the organization was approved (``DiscoverySnapshot.of(configuration)``): when
        given, the freshly fetched configuration must still match it, else
        :class:`~teams_ehr.errors.MetadataMismatchError`; when ``None`` (the default) the fetched
        configuration is used as it is. Returns the redirect and the pending state for the caller
        to store (see docs/primitives/oauth-client.md)."""
        client_id = _epic_client_id(self.config)
        smart = self._discovery.get_sync(self._http, base, epic_client_id=client_id)
        flow = self._authorize(smart, base, org_id, launch, session_id, approved, scopes)
        return run_sync(flow, self._http)

    def complete_launch(
        self, pending: PendingAuthorization | None, params: Mapping[str, str], *, session_id: str
    ) -> LaunchResult:
        """Callback → token → verified id_token → context; ``pending`` was taken by state."""
        flow = complete_launch_flow(
            self.config,
            pending,
            params,
            auth=self._auth,
            jwks=self._jwks,
            session_id=session_id,
            clock=self._clock,
            max_attempts=self._max_attempts,
        )
        return run_sync(flow, self._http)


class AsyncSmartLaunchClient(_LaunchClientBase):
    """Asynchronous SMART launches on an injected ``httpx.AsyncClient`` (asyncio or trio).

    Discovery and JWKS fetches are single-flight across concurrent launches.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        config: SmartClientConfig,
        auth: ClientAuthentication,
        *,
        jwks: JwksCache | None = None,
        discovery: DiscoveryCache | None = None,
        clock: Clock = utc_now,
        max_attempts: int = 3,
    ) -> None:
        super().__init__(
            config, auth, jwks=jwks, discovery=discovery, clock=clock, max_attempts=max_attempts
        )
        self._http = http

    async def start_launch(
        self,
        base: str,
        org_id: str,
        *,
        launch: str | None,
        session_id: str,
        approved: DiscoverySnapshot | None = None,
        scopes: Sequence[str] | None = None,
    ) -> LaunchStart:
        """See :meth:`SmartLaunchClient.start_launch`."""
        client_id = _epic_client_id(self.config)
        smart = await self._discovery.get(self._http, base, epic_client_id=client_id)
        flow = self._authorize(smart, base, org_id, launch, session_id, approved, scopes)
        return await run_async(flow, self._http)

    async def complete_launch(
        self, pending: PendingAuthorization | None, params: Mapping[str, str], *, session_id: str
    ) -> LaunchResult:
        """See :meth:`SmartLaunchClient.complete_launch`."""
        token = await run_async(self._redeem(pending, params, session_id), self._http)
        checked, check = self._checked(pending)
        claims = None
        if check is not None:
            id_token = required_id_token(token)
            profile, jwks_uri = check
            now = self._clock()
            claims = await verify_jwt(id_token, profile, self._jwks, jwks_uri, self._http, now=now)
        return finish_launch(checked, token, claims)
