"""The authorization request and the pending state it leaves behind (requirement A3).

SMART App Launch 2.x app-launch.md §"Obtain authorization code": ``response_type=code``,
``client_id``, ``redirect_uri``, ``scope``, ``state``, ``aud`` (the FHIR base), PKCE
``code_challenge`` + ``S256``, ``launch`` on EHR launch only; GET query or POST form (servers SHALL
support both; Epic supports POST for EHR launch only, Nov 2020+,
fhir.epic.com/Documentation?docId=oauth2). Threat T04: ``state`` is 256 bits from the CSPRNG, single
use, TTL ≤ 10 minutes, bound to the browser session (only a hash of the session id is kept) and
stored server-side keyed by
:func:`state_key`, never by the state itself. Threat T05: a fresh verifier per request, never sent
to the browser. Threat T01: ``aud`` is the approved canonical base byte for byte. The OIDC ``nonce``
is echoed in the ``id_token`` (Epic does) and checked at the callback.
"""

from __future__ import annotations

import base64
import hashlib
import html as html_lib
import json
import secrets
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Literal, Self
from urllib.parse import urlencode, urlsplit

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SecretStr, model_validator

from teams_ehr._types import CallerModel, require_aware
from teams_ehr.errors import ConfigurationError, DiscoveryError
from teams_ehr.smart.discovery import SmartConfiguration
from teams_ehr.smart.launch import launch_hash
from teams_ehr.smart.pkce import code_challenge_s256, new_code_verifier
from teams_ehr.smart.scopes import format_scopes, validate_scopes

__all__ = [
    "AUTO_SUBMIT_SCRIPT",
    "MAX_PENDING_TTL",
    "AuthorizationRedirect",
    "PendingAuthorization",
    "SmartClientConfig",
    "begin_authorization",
    "session_binding",
    "state_key",
]

MAX_PENDING_TTL = timedelta(minutes=10)
AUTO_SUBMIT_SCRIPT = "document.forms[0].submit();"
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(AUTO_SUBMIT_SCRIPT.encode()).digest()).decode()


class SmartClientConfig(CallerModel):
    """Our registration at one EHR environment.

    ``scopes`` are validated (v1 and v2 syntax); ``launch`` is added for EHR launches and dropped
    for standalone ones. ``use_post`` sends the authorization request as an auto-submitting form
    when the server advertises ``authorize-post`` (EHR launch only, as at Epic).
    ``epic_client_id_header`` sends ``Epic-Client-ID: <client_id>`` on discovery (harmless
    elsewhere). ``pending_ttl`` ≤ 10 minutes (threat T04). ``allow_http`` is for loopback tests
    only. ``allow_missing_pkce_metadata`` accepts a legacy server that does not advertise
    ``code_challenge_methods_supported`` (PKCE S256 is still sent). ``id_token_algorithms``:
    RS256 by default (Epic signs with RS256 only; SMART servers SHALL support it). Invalid
    values raise :class:`~teams_ehr.errors.ConfigurationError` naming the field.
    """

    refusal = ConfigurationError

    client_id: str = Field(min_length=1, max_length=256)
    redirect_uri: str
    scopes: tuple[str, ...] = ("launch", "openid", "fhirUser")
    use_post: bool = False
    epic_client_id_header: bool = True
    pending_ttl: timedelta = MAX_PENDING_TTL
    allow_http: bool = False
    allow_missing_pkce_metadata: bool = False
    id_token_algorithms: tuple[str, ...] = ("RS256",)

    @model_validator(mode="after")
    def _check(self) -> Self:
        validate_scopes(self.scopes)
        parts = urlsplit(self.redirect_uri)
        if parts.scheme != "https" and not (self.allow_http and parts.scheme == "http"):
            raise ConfigurationError("redirect_uri must be https")
        if not parts.hostname or parts.fragment or parts.username:
            raise ConfigurationError("redirect_uri must be absolute, without fragment or userinfo")
        if not timedelta(0) < self.pending_ttl <= MAX_PENDING_TTL:
            raise ConfigurationError("pending_ttl must be within (0, 10 minutes]")
        return self


def state_key(state: str) -> str:
    """SHA-256 hex of ``state``: the store's key for a pending authorization (threat T04)."""
    return hashlib.sha256(state.encode("utf-8")).hexdigest()


def session_binding(session_id: str) -> str:
    """SHA-256 hex of the browser session id; the pending row stores only this."""
    return hashlib.sha256(b"teams-ehr/session\x00" + session_id.encode("utf-8")).hexdigest()


class PendingAuthorization(BaseModel):
    """What the callback needs to finish one authorization; stored encrypted by the host."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    state: SecretStr
    code_verifier: SecretStr
    nonce: SecretStr
    org_id: str
    issuer: str
    client_id: str
    token_endpoint: str
    jwks_uri: str | None
    oidc_issuer: str | None
    redirect_uri: str
    scope: str
    session_binding: str
    launch_hash: str | None
    mode: Literal["ehr", "standalone"]
    require_iss_parameter: bool = False
    created_at: AwareDatetime
    expires_at: AwareDatetime

    @model_validator(mode="after")
    def _check_ttl(self) -> Self:
        if not timedelta(0) < self.expires_at - self.created_at <= MAX_PENDING_TTL:
            raise ValueError("a pending authorization lives at most 10 minutes")
        return self

    def to_bytes(self) -> bytes:
        """Serialize with secrets revealed, for the store's encrypted ``payload`` only."""
        data = self.model_dump(mode="json")
        for name in ("state", "code_verifier", "nonce"):
            data[name] = getattr(self, name).get_secret_value()
        return json.dumps(data, separators=(",", ":"), sort_keys=True).encode("utf-8")

    @classmethod
    def from_bytes(cls, payload: bytes) -> PendingAuthorization:
        return cls.model_validate_json(payload)


class AuthorizationRedirect(BaseModel):
    """Where to send the browser: a GET URL, or a POST form (``html()`` renders it)."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    method: Literal["GET", "POST"]
    url: str = Field(repr=False)
    fields: tuple[tuple[str, str], ...] = Field(default=(), repr=False)

    def html(self) -> str:
        """An auto-submitting form; every value is HTML-escaped. Serve with :meth:`csp`."""
        if self.method != "POST":
            raise ConfigurationError("html() is only for POST authorization requests")
        inputs = "".join(
            f'<input type="hidden" name="{html_lib.escape(k)}" value="{html_lib.escape(v)}">'
            for k, v in self.fields
        )
        return (
            '<!DOCTYPE html><html><head><meta charset="utf-8">'
            '<meta name="referrer" content="no-referrer"><title>Signing in…</title></head>'
            f'<body><form method="post" action="{html_lib.escape(self.url)}">{inputs}'
            '<noscript><button type="submit">Continue</button></noscript></form>'
            f"<script>{AUTO_SUBMIT_SCRIPT}</script></body></html>"
        )

    @staticmethod
    def csp() -> str:
        """A ``Content-Security-Policy`` for :meth:`html`: only the fixed script runs."""
        return f"default-src 'none'; script-src 'sha256-{_SCRIPT_HASH}'; base-uri 'none'"


def _effective_scopes(scopes: Sequence[str], *, ehr: bool) -> tuple[str, ...]:
    # EHR launch needs `launch` (Epic asks the user to log in otherwise); standalone must not
    # send the bare `launch` scope since there is no launch handle to bind it to.
    chosen = [s for s in scopes if ehr or s != "launch"]
    if ehr and "launch" not in chosen:
        chosen.insert(0, "launch")
    return validate_scopes(chosen)


def begin_authorization(
    config: SmartClientConfig,
    smart_configuration: SmartConfiguration,
    *,
    issuer: str,
    org_id: str,
    launch: str | None,
    session_id: str,
    now: datetime,
    scopes: Sequence[str] | None = None,
    oidc_issuer: str | None = None,
    jwks_uri: str | None = None,
    token_factory: Callable[[int], str] = secrets.token_urlsafe,
) -> tuple[AuthorizationRedirect, PendingAuthorization]:
    """Build the authorization redirect and its pending state (EHR launch when ``launch``).

    ``issuer`` must be the approved canonical FHIR base: it is sent verbatim as ``aud``.
    ``oidc_issuer``/``jwks_uri`` default to the SMART configuration's ``issuer``/``jwks_uri``.
    """
    require_aware(now, "now")
    endpoint = smart_configuration.authorization_endpoint
    if not endpoint:
        raise DiscoveryError("no authorization_endpoint", reason="no_authorization_endpoint")
    if not session_id:
        raise ConfigurationError("a browser session id is required to bind state")
    ehr = launch is not None
    chosen = _effective_scopes(scopes if scopes is not None else config.scopes, ehr=ehr)
    state, nonce, verifier = token_factory(32), token_factory(32), new_code_verifier()
    params = [
        ("response_type", "code"),
        ("client_id", config.client_id),
        ("redirect_uri", config.redirect_uri),
        ("scope", format_scopes(chosen)),
        ("state", state),
        ("aud", issuer),
        ("code_challenge", code_challenge_s256(verifier)),
        ("code_challenge_method", "S256"),
        ("nonce", nonce),
    ]
    if launch is not None:
        params.insert(4, ("launch", launch))
    post = config.use_post and ehr and smart_configuration.supports("authorize-post")
    redirect = (
        AuthorizationRedirect(method="POST", url=endpoint, fields=tuple(params))
        if post
        else AuthorizationRedirect(method="GET", url=_with_query(endpoint, params))
    )
    pending = PendingAuthorization(
        state=SecretStr(state),
        code_verifier=SecretStr(verifier),
        nonce=SecretStr(nonce),
        org_id=org_id,
        issuer=issuer,
        client_id=config.client_id,
        token_endpoint=smart_configuration.token_endpoint,
        jwks_uri=jwks_uri or smart_configuration.jwks_uri,
        oidc_issuer=oidc_issuer or smart_configuration.issuer,
        redirect_uri=config.redirect_uri,
        scope=format_scopes(chosen),
        session_binding=session_binding(session_id),
        launch_hash=launch_hash(launch) if launch is not None else None,
        mode="ehr" if ehr else "standalone",
        require_iss_parameter=smart_configuration.authorization_response_iss_parameter_supported,
        created_at=now,
        expires_at=now + config.pending_ttl,
    )
    return redirect, pending


def _with_query(endpoint: str, params: Sequence[tuple[str, str]]) -> str:
    separator = "&" if urlsplit(endpoint).query else "?"
    return endpoint + separator + urlencode(params)
