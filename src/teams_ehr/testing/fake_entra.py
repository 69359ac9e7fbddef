"""FakeEntra: an offline Microsoft Entra ID (identity platform v2.0) for one tenant (requirement E1).

Usable without pytest, as an ``httpx.MockTransport`` handler (:meth:`FakeEntra.handler`) or an
ASGI app (:meth:`FakeEntra.asgi_app`). Endpoints, under ``{authority_host}/{tenant}``:

* ``/v2.0/.well-known/openid-configuration``; ``/discovery/v2.0/keys`` (also served at
  ``/common/discovery/v2.0/keys``, where Graph validation tokens are checked);
* ``/oauth2/v2.0/authorize``: registered ``client_id``, exact ``redirect_uri``, ``response_type=
  code``, ``response_mode=query``, ``openid`` scope, PKCE ``S256`` required; the code goes to the
  user chosen with :meth:`FakeEntra.sign_in_as` (a user of a foreign tenant can be simulated), or
  to the browser's own signed-in user when the request carries its session cookie; with
  :attr:`FakeEntra.deny_consent` the person declines (``error=access_denied``, AADSTS65004);
* ``/oauth2/v2.0/token``: ``authorization_code`` (single use, 10 minutes, PKCE verified, same
  redirect URI) and ``client_credentials`` (scope ``{resource}/.default``), the client
  authenticated by a secret (Basic or body) or a certificate assertion.

Browser sessions: :meth:`FakeEntra.sign_in_browser` signs one browser in and returns the value of
its :data:`SESSION_COOKIE` (Entra's own session cookie on ``login.microsoftonline.com``), and
:meth:`FakeEntra.browser_user` says who a cookie's browser is signed in as — what the simulated
Teams asks before it lets a browser join as the meeting's organizer.

Claim sets are documented in :mod:`teams_ehr.testing.fake_entra_tokens`. Issued access tokens are
recorded, so :meth:`FakeEntra.validate_access_token` can be FakeGraph's token checker. Errors are
Entra-shaped: ``{error, error_description: "AADSTS…", error_codes, trace_id, correlation_id}``.

Scripted faults, named as on every fake of this package: :meth:`FakeEntra.fail_next` and
:meth:`FakeEntra.lose_next_response` (the fake acts, then the client sees a read timeout), each
for the next ``times`` requests to an endpoint.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, unquote_plus, urlencode

import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from teams_ehr._types import Clock, utc_now
from teams_ehr.errors import UsageError
from teams_ehr.keys import b64url
from teams_ehr.testing.browser import BrowserTarget, browser_request, redirect_params
from teams_ehr.testing.fake_entra_tokens import (
    CLIENT_ASSERTION_TYPE,
    GRAPH_CHANGE_TRACKING_APP_ID,
    GRAPH_DEFAULT_SCOPE,
    AppRegistration,
    EntraRefusalError,
    IdTokenOverride,
    ScriptedFailure,
    SignedInUser,
    SigningKeys,
    access_token_claims,
    apply_overrides,
    check_client_assertion,
    error_body,
    graph_validation_claims,
    id_token_claims,
    openid_configuration,
    ts,
)

if TYPE_CHECKING:
    from teams_ehr.testing.asgi import ASGIApp

__all__ = ["GRAPH_CHANGE_TRACKING_APP_ID", "GRAPH_DEFAULT_SCOPE", "SESSION_COOKIE", "FakeEntra"]

Endpoint = Literal["authorize", "token", "jwks", "openid_configuration"]
CODE_LIFETIME = timedelta(minutes=10)
SESSION_COOKIE = "fake-entra-session"
"""The browser's Microsoft session cookie (see :meth:`FakeEntra.sign_in_browser`)."""


@dataclass(frozen=True)
class _Code:
    client_id: str
    redirect_uri: str
    code_challenge: str
    nonce: str | None
    scope: str
    user: SignedInUser
    expires_at: datetime


class FakeEntra:
    """One Entra tenant: app registrations, a signed-in user, signing keys, issued tokens."""

    def __init__(
        self,
        tenant_id: str,
        *,
        clock: Clock = utc_now,
        authority_host: str = "https://login.microsoftonline.com",
        token_lifetime: timedelta = timedelta(hours=1),
    ) -> None:
        self.tenant_id = tenant_id.lower()
        self.authority_host = authority_host.rstrip("/")
        self.requests: list[httpx.Request] = []
        self._clock = clock
        self._token_lifetime = token_lifetime
        self._keys = SigningKeys()
        self._apps: dict[str, AppRegistration] = {}
        self._user: SignedInUser | None = None
        self._browsers: dict[str, SignedInUser] = {}
        self.deny_consent = False
        self._codes: dict[str, _Code] = {}
        self._seen_jti: set[tuple[str, str]] = set()
        self._access_tokens: dict[str, dict[str, Any]] = {}
        self._failures: dict[str, ScriptedFailure] = {}
        self._lost: dict[str, int] = {}
        self._id_token_override: IdTokenOverride | None = None
        self._lock = threading.RLock()  # served on loopback, the handler runs in another thread

    # -- well-known URLs ----------------------------------------------------------------------

    @property
    def authority(self) -> str:
        return f"{self.authority_host}/{self.tenant_id}"

    @property
    def issuer(self) -> str:
        """The v2.0 issuer of this tenant's id_tokens."""
        return f"{self.authority}/v2.0"

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
    def common_jwks_uri(self) -> str:
        """Where Graph ``validationTokens`` keys are published (the common key set)."""
        return f"{self.authority_host}/common/discovery/v2.0/keys"

    @property
    def openid_configuration_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    # -- scripting ----------------------------------------------------------------------------

    def register_app(
        self,
        client_id: str,
        *,
        redirect_uris: tuple[str, ...] | list[str] = (),
        secret: str | None = None,
        certificate_pem: bytes | None = None,
    ) -> None:
        """Register (or replace) an app: exact redirect URIs, a secret and/or a certificate."""
        certificate = x509.load_pem_x509_certificate(certificate_pem) if certificate_pem else None
        if certificate is not None and not isinstance(certificate.public_key(), rsa.RSAPublicKey):
            raise UsageError("FakeEntra certificates must hold RSA keys", reason="fake_setup")
        self._apps[client_id] = AppRegistration(
            client_id, frozenset(redirect_uris), secret, certificate
        )

    def sign_in_as(
        self,
        object_id: str,
        *,
        tenant_id: str | None = None,
        name: str = "Test Clinician",
        preferred_username: str = "clinician@example.org",
    ) -> None:
        """The user the next authorizations sign in as (``tenant_id`` ≠ ours: a foreign user)."""
        tid = (tenant_id or self.tenant_id).lower()
        self._user = SignedInUser(object_id.lower(), tid, name, preferred_username)

    def sign_out(self) -> None:
        self._user = None

    def sign_in_browser(
        self,
        object_id: str,
        *,
        tenant_id: str | None = None,
        name: str = "Test Clinician",
        preferred_username: str = "clinician@example.org",
    ) -> str:
        """Sign one browser in; returns the value of its :data:`SESSION_COOKIE`. An authorization
        request carrying that cookie signs in as this user."""
        tid = (tenant_id or self.tenant_id).lower()
        session = secrets.token_urlsafe(32)
        with self._lock:
            self._browsers[session] = SignedInUser(object_id.lower(), tid, name, preferred_username)
        return session

    def browser_user(self, session: str | None) -> SignedInUser | None:
        """Who the browser holding ``session`` (its :data:`SESSION_COOKIE`) is signed in as."""
        if not session:
            return None
        with self._lock:
            return self._browsers.get(session)

    def sign_out_browser(self, session: str) -> None:
        with self._lock:
            self._browsers.pop(session, None)

    def _request_user(self, request: httpx.Request) -> SignedInUser | None:
        """The browser's own user (its session cookie), else the scripted :meth:`sign_in_as`."""
        cookies: SimpleCookie = SimpleCookie()
        try:
            cookies.load(request.headers.get("cookie", ""))
        except CookieError:
            return self._user
        morsel = cookies.get(SESSION_COOKIE)
        browser = None if morsel is None else self._browsers.get(morsel.value)
        return browser or self._user

    def rotate_keys(self, *, keep_previous: bool = True) -> str:
        """Sign with a new key from now on; the old key stays published unless told otherwise.
        Returns the new ``kid``."""
        return self._keys.rotate(keep_previous=keep_previous)

    @property
    def current_kid(self) -> str:
        return self._keys.current_kid

    def override_next_id_token(
        self,
        claims: Mapping[str, Any] | None = None,
        *,
        header: Mapping[str, Any] | None = None,
        alg: Literal["RS256", "none"] = "RS256",
    ) -> None:
        """Tamper with the next id_token (attack tests): claim overrides (``None`` deletes),
        extra header members, or ``alg="none"`` for an unsigned token."""
        self._id_token_override = IdTokenOverride(dict(claims or {}), dict(header or {}), alg)

    def fail_next(
        self,
        endpoint: Endpoint,
        status: int = 503,
        *,
        error: str = "temporarily_unavailable",
        retry_after: float | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` calls to ``endpoint`` with an Entra-style error."""
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        body = error_body(error, "AADSTS90000: scripted failure.")
        with self._lock:
            self._failures[endpoint] = ScriptedFailure(status, body, headers, times)

    def lose_next_response(self, endpoint: Endpoint, *, times: int = 1) -> None:
        """Act on the next ``times`` calls to ``endpoint`` (a code is redeemed, a token issued),
        then raise ``httpx.ReadTimeout`` instead of answering: the client cannot know."""
        with self._lock:
            self._lost[endpoint] = self._lost.get(endpoint, 0) + times

    # -- tokens -------------------------------------------------------------------------------

    def sign_jwt(
        self, claims: Mapping[str, Any], *, header: Mapping[str, Any] | None = None
    ) -> str:
        """Sign ``claims`` RS256 with the current key (headers ``typ``, ``kid``, ``x5t``)."""
        return self._keys.sign(claims, header)

    def issue_app_token(
        self, client_id: str, *, scope: str = GRAPH_DEFAULT_SCOPE, tenant_id: str | None = None
    ) -> str:
        """An app-only access token, as the client-credentials grant returns it."""
        claims = access_token_claims(
            client_id=client_id,
            tenant_id=(tenant_id or self.tenant_id).lower(),
            now=self._clock(),
            lifetime=self._token_lifetime,
            resource=scope.removesuffix("/.default"),
        )
        return self._record(claims)

    def validate_access_token(self, token: str) -> dict[str, Any] | None:
        """The claims of an unexpired access token this fake issued, else ``None`` (FakeGraph)."""
        claims = self._access_tokens.get(token)
        if claims is None or claims["exp"] <= ts(self._clock()):
            return None
        return dict(claims)

    def graph_token_tenant(self, token: str) -> str | None:
        """FakeGraph's ``token_checker``: the tenant of a valid app-only Graph token, else None."""
        claims = self.validate_access_token(token)
        if claims is None or claims["aud"] != GRAPH_DEFAULT_SCOPE.removesuffix("/.default"):
            return None
        return str(claims["tid"])

    def sign_graph_validation_token(
        self,
        claims: Mapping[str, Any] | None = None,
        *,
        audience: str | None = None,
        tenant_id: str | None = None,
        version: Literal["1.0", "2.0"] = "1.0",
    ) -> str:
        """A Graph rich-notification ``validationTokens`` entry, signed by this fake's keys.

        Claims produced, then ``claims`` overrides (``None`` deletes a claim)::

            aud      = audience (the subscribing app's client id; required here or in claims)
            iss      = https://sts.windows.net/{tid}/      (version "2.0": {authority}/{tid}/v2.0)
            appid    = 0bf30f3b-4a52-48df-9a82-234910c4a086   (version "2.0": azp instead)
            appidacr = "2" (or azpacr)   idp = iss   tid = the tenant   ver = version
            oid = sub = the Change Tracking service principal   uti = random
            iat = nbf = now   exp = now + 1 h

        Header: ``typ: JWT``, ``alg: RS256``, ``kid`` = ``x5t`` = the current key, published at
        :attr:`jwks_uri` and :attr:`common_jwks_uri`.
        """
        base = graph_validation_claims(
            authority_host=self.authority_host,
            tenant_id=(tenant_id or self.tenant_id).lower(),
            audience=audience,
            version=version,
            now=self._clock(),
        )
        merged = apply_overrides(base, claims or {})
        if "aud" not in merged:
            raise UsageError("a validation token needs an audience", reason="fake_setup")
        return self.sign_jwt(merged)

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The published key set (public members only)."""
        return self._keys.jwks(self.authority_host)

    def _record(self, claims: dict[str, Any]) -> str:
        token = self.sign_jwt(claims)
        self._access_tokens[token] = claims
        return token

    # -- the browser --------------------------------------------------------------------------

    def authorize_in_browser(self, url: BrowserTarget) -> dict[str, str]:
        """Play the browser: open the authorize URL, sign in, return the callback's parameters.

        ``url`` is a ``str``, an ``httpx.URL`` or an ``httpx.Request``, as for
        :meth:`FakeEhr.authorize_in_browser` (:mod:`teams_ehr.testing.browser`). Raises
        :class:`UsageError` if Entra shows an error page instead of redirecting back (an
        unknown client or a redirect URI that is not registered)."""
        response = self.handler(browser_request(url))
        params = redirect_params(response)
        if params is None:
            raise UsageError(
                f"FakeEntra refused the authorization request ({response.status_code})",
                reason="fake_entra_refused",
            )
        return params

    # -- HTTP ---------------------------------------------------------------------------------

    def handler(self, request: httpx.Request) -> httpx.Response:
        """The ``httpx.MockTransport`` handler (thread-safe)."""
        with self._lock:
            return self._handle(request)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        tenant = f"/{self.tenant_id}"
        routes: dict[str, tuple[Endpoint, Callable[[httpx.Request], httpx.Response]]] = {
            f"{tenant}/v2.0/.well-known/openid-configuration": (
                "openid_configuration",
                self._openid_configuration,
            ),
            f"{tenant}/discovery/v2.0/keys": ("jwks", self._jwks),
            "/common/discovery/v2.0/keys": ("jwks", self._jwks),
            f"{tenant}/oauth2/v2.0/authorize": ("authorize", self._authorize),
            f"{tenant}/oauth2/v2.0/token": ("token", self._token),
        }
        route = routes.get(request.url.path)
        if route is None:
            return _error(404, "invalid_tenant", "AADSTS90002: Tenant not found.")
        endpoint, serve = route
        failure = self._failures.get(endpoint)
        if failure is not None and failure.remaining > 0:
            failure.remaining -= 1
            return httpx.Response(failure.status, json=failure.body, headers=failure.headers)
        response = serve(request)
        if self._lost.get(endpoint, 0) > 0:
            self._lost[endpoint] -= 1
            raise httpx.ReadTimeout("response lost (scripted)", request=request)
        return response

    def asgi_app(self) -> ASGIApp:
        """This fake as an ASGI application (for a loopback server)."""
        from teams_ehr.testing.asgi import asgi_app_from_handler  # lazy: only when served

        return asgi_app_from_handler(self.handler)

    def _openid_configuration(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=openid_configuration(self.authority_host, self.tenant_id))

    def _jwks(self, request: httpx.Request) -> httpx.Response:
        headers = {"Cache-Control": "max-age=86400, private"}
        return httpx.Response(200, json=self.jwks(), headers=headers)

    def _authorize(self, request: httpx.Request) -> httpx.Response:
        query = dict(request.url.params)
        app = self._apps.get(query.get("client_id", ""))
        redirect_uri = query.get("redirect_uri", "")
        if app is None:
            return _error(400, "unauthorized_client", "AADSTS700016: Application not found.")
        if redirect_uri not in app.redirect_uris:
            return _error(400, "invalid_request", "AADSTS50011: Redirect URI mismatch.")
        state = query.get("state")

        def back(params: dict[str, str]) -> httpx.Response:
            if state is not None:
                params["state"] = state
            return httpx.Response(302, headers={"Location": f"{redirect_uri}?{urlencode(params)}"})

        scopes = query.get("scope", "").split()
        user = self._request_user(request)
        problem = None
        if query.get("response_type") != "code":
            problem = ("unsupported_response_type", "AADSTS700054: response_type is not code.")
        elif query.get("response_mode", "query") != "query":
            problem = ("invalid_request", "AADSTS900144: only response_mode=query is faked.")
        elif "openid" not in scopes:
            problem = ("invalid_scope", "AADSTS70011: the openid scope is required.")
        elif query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            problem = ("invalid_request", "AADSTS501491: PKCE S256 is required.")
        elif user is None:
            problem = ("login_required", "AADSTS50058: no user is signed in.")
        elif self.deny_consent:
            problem = ("access_denied", "AADSTS65004: User declined to consent to access the app.")
        if problem is not None or user is None:
            error, description = problem or ("login_required", "AADSTS50058: no user.")
            return back({"error": error, "error_description": description})
        code = secrets.token_urlsafe(48)
        self._codes[code] = _Code(
            client_id=app.client_id,
            redirect_uri=redirect_uri,
            code_challenge=query["code_challenge"],
            nonce=query.get("nonce"),
            scope=" ".join(scopes),
            user=user,
            expires_at=self._clock() + CODE_LIFETIME,
        )
        return back({"code": code, "session_state": str(uuid.uuid4())})

    def _token(self, request: httpx.Request) -> httpx.Response:
        form = dict(parse_qsl(request.content.decode("utf-8", "replace")))
        lifetime = int(self._token_lifetime.total_seconds())
        try:
            if request.method != "POST":
                raise EntraRefusalError("invalid_request", "AADSTS900561: POST required.", 405)
            app = self._authenticate_client(request, form)
            grant = form.get("grant_type")
            if grant == "authorization_code":
                body = self._redeem_code(app, form)
            elif grant == "client_credentials":
                scope = form.get("scope", "")
                if not scope.endswith("/.default") or " " in scope:
                    raise EntraRefusalError("invalid_scope", "AADSTS1002012: {resource}/.default.")
                token = self.issue_app_token(app.client_id, scope=scope)
                body = {"token_type": "Bearer", "expires_in": lifetime, "access_token": token}
            else:
                raise EntraRefusalError("unsupported_grant_type", "AADSTS70003: bad grant_type.")
        except EntraRefusalError as refusal:
            return _error(refusal.status, refusal.error, refusal.description)
        return httpx.Response(200, json=body, headers={"Cache-Control": "no-store"})

    def _authenticate_client(self, request: httpx.Request, form: dict[str, str]) -> AppRegistration:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        authorization = request.headers.get("authorization", "")
        if authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:], validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise EntraRefusalError(
                    "invalid_client", "AADSTS7000216: bad Basic.", 401
                ) from None
            user, _, password = decoded.partition(":")
            client_id, secret = unquote_plus(user), unquote_plus(password)
        assertion = form.get("client_assertion")
        if assertion is not None and client_id is None:
            try:
                client_id = str(jwt.decode(assertion, options={"verify_signature": False})["iss"])
            except (jwt.InvalidTokenError, KeyError):
                client_id = None
        app = self._apps.get(client_id or "")
        if app is None:
            raise EntraRefusalError("invalid_client", "AADSTS700016: Application not found.", 401)
        if assertion is not None:
            if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
                raise EntraRefusalError("invalid_client", "AADSTS700027: bad assertion type.", 401)
            check_client_assertion(
                app,
                assertion,
                token_urls=[self.token_endpoint, str(request.url.copy_with(query=None))],
                now=self._clock(),
                seen_jti=self._seen_jti,
            )
        elif secret is None or app.secret is None or not hmac.compare_digest(secret, app.secret):
            raise EntraRefusalError("invalid_client", "AADSTS7000215: Invalid client secret.", 401)
        return app

    def _redeem_code(self, app: AppRegistration, form: dict[str, str]) -> dict[str, Any]:
        code = self._codes.pop(form.get("code", ""), None)
        if code is None or code.client_id != app.client_id or code.expires_at <= self._clock():
            raise EntraRefusalError("invalid_grant", "AADSTS70008: code expired or already used.")
        if form.get("redirect_uri") != code.redirect_uri:
            raise EntraRefusalError("invalid_grant", "AADSTS50148: redirect_uri differs.")
        verifier = form.get("code_verifier", "").encode("utf-8")
        if not hmac.compare_digest(b64url(hashlib.sha256(verifier).digest()), code.code_challenge):
            raise EntraRefusalError("invalid_grant", "AADSTS501481: code_verifier mismatch.")
        now = self._clock()
        lifetime = int(self._token_lifetime.total_seconds())
        access = access_token_claims(
            client_id=app.client_id,
            tenant_id=code.user.tenant_id,
            now=now,
            lifetime=self._token_lifetime,
            user=code.user,
            scope=code.scope,
        )
        return {
            "token_type": "Bearer",
            "scope": code.scope,
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": self._record(access),
            "id_token": self._id_token(app, code, now),
        }

    def _id_token(self, app: AppRegistration, code: _Code, now: datetime) -> str:
        claims = id_token_claims(
            authority_host=self.authority_host,
            client_id=app.client_id,
            user=code.user,
            nonce=code.nonce,
            now=now,
            lifetime=self._token_lifetime,
        )
        override, self._id_token_override = self._id_token_override, None
        if override is None:
            return self.sign_jwt(claims)
        claims = apply_overrides(claims, override.claims)
        if override.alg == "none":
            return SigningKeys.unsigned(claims, override.header)
        return self.sign_jwt(claims, header=override.header)


def _error(status: int, error: str, description: str) -> httpx.Response:
    """An Entra-style OAuth error response (RFC 6749 §5.2 plus ``error_codes``)."""
    return httpx.Response(status, json=error_body(error, description))
