"""``FakeEhr``: a strict SMART authorization server + OIDC provider + FHIR front (requirement E1).

Usable without pytest: ``httpx.MockTransport(fake.handler)`` in-process, or ``fake.asgi_app()``
served on loopback (:mod:`teams_ehr.testing.loopback`). It enforces what a careful EHR enforces
(SMART App Launch 2.x app-launch.md, client-confidential-asymmetric.md, backend-services.md): exact
``redirect_uri``; PKCE ``S256`` only; ``aud`` equal to its FHIR base; ``launch`` values it issued,
single use; single-use codes; client assertions verified against the *registered* JWKS (``alg``
RS384/ES384, ``kid``, ``typ: JWT``, ``iss = sub = client_id``, ``aud`` = token URL, ``exp − now ≤
300 s``, ``jti`` never replayed); ``client_secret_basic``; rotating refresh tokens;
``client_credentials`` with ``system/`` scopes. Its id_tokens are RS256, ``iss`` = its OIDC issuer
(``{origin}/oauth2``, distinct from the FHIR base as at Epic), ``aud`` = client id, ``sub``,
``fhirUser``, ``nonce``. With ``epic=True`` the token response carries Epic's extras
(``appointment``, ``location``, ``loginDepartment``, ``__epic.dstu2.patient``, string
``need_patient_banner``, lower-case ``bearer``).

Requests under the FHIR base that are not SMART/metadata go to ``fhir_handler`` (a FHIR store
plugs in there) after the bearer token is checked; without one the answer is a 404
OperationOutcome.

Scripted faults, named as on every fake of this package: :meth:`FakeEhr.fail_next` (an error
answer instead of acting) and :meth:`FakeEhr.lose_next_response` (the fake acts, e.g. redeems
the code, then the client sees a read timeout), each for the next ``times`` requests.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from teams_ehr._types import Clock, utc_now
from teams_ehr.errors import UsageError
from teams_ehr.testing import _fake_ehr_wire as wire
from teams_ehr.testing._fake_ehr_checks import (
    ASSERTION_TYPE,
    FakeOAuthError,
    JtiRegistry,
    check_pkce,
    parse_basic,
    secrets_equal,
    verify_client_assertion,
)
from teams_ehr.testing.asgi import ASGIApp, asgi_app_from_handler
from teams_ehr.testing.browser import BrowserTarget, browser_request, redirect_params

__all__ = ["FakeEhr", "FakeEhrError"]

Endpoint = Literal[
    "smart-configuration", "metadata", "openid-configuration", "authorize", "token", "jwks", "fhir"
]
FhirHandler = Callable[[httpx.Request], httpx.Response]
_CODE_TTL = timedelta(seconds=60)
_LAUNCH_TTL = timedelta(minutes=5)


_KEY_LOCK = threading.Lock()
_KEYS: list[rsa.RSAPrivateKey] = []


def _signing_key() -> rsa.RSAPrivateKey:
    """One RS256 key per process for every fake (generating RSA keys is slow; it is a fake)."""
    with _KEY_LOCK:
        if not _KEYS:
            _KEYS.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        return _KEYS[0]


class FakeEhrError(UsageError):
    """The fake could not play a step (e.g. the authorize endpoint did not redirect)."""

    default_reason = "fake_ehr_refused"


class FakeEhr:
    """A strict fake EHR; see the module docstring. The constructor is not part of the stable API
    beyond the documented arguments."""

    def __init__(
        self,
        base_url: str = "https://ehr.test/fhir/r4",
        *,
        clock: Clock = utc_now,
        epic: bool = True,
        fhir_handler: FhirHandler | None = None,
        send_iss: bool = True,
        token_lifetime: timedelta = timedelta(hours=1),
    ) -> None:
        self.clock = clock
        self.epic = epic
        self.fhir_handler = fhir_handler
        self.send_iss = send_iss
        self.token_lifetime = token_lifetime
        self.deny_consent = False
        self.serve_well_known = True
        self.smart_configuration_overrides: dict[str, Any] = {}
        self.standalone_user = "practitioner-1"
        self.requests: list[httpx.Request] = []
        self._lock = threading.RLock()
        self._clients: dict[str, wire.ClientRecord] = {}
        self._launches: dict[str, wire.Grant] = {}
        self._codes: dict[str, wire.Grant] = {}
        self._refresh: dict[str, wire.Grant] = {}
        self._access: dict[str, wire.Grant] = {}
        self._jtis = JtiRegistry()
        self._failures: dict[str, list[wire.ScriptedFailure]] = {}
        self._lost: dict[str, int] = {}
        self._key = _signing_key()
        self._public_jwk: dict[str, Any] = json.loads(
            jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key())
        )
        self._kid = wire.thumbprint(self._public_jwk)
        self._public_jwk.update(kid=self._kid, alg="RS256", use="sig")
        self.rebase(base_url)

    # -- configuration ---------------------------------------------------------------------------

    def rebase(self, base_url: str) -> None:
        """Move the fake to another FHIR base (e.g. the loopback URL once the server started)."""
        parts = urlsplit(base_url.rstrip("/"))
        self.base_url = base_url.rstrip("/")
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.base_path = parts.path
        self.oidc_issuer = self.origin + "/oauth2"
        self.authorize_url = self.oidc_issuer + "/authorize"
        self.token_url = self.oidc_issuer + "/token"
        self.jwks_url = self.oidc_issuer + "/jwks"

    def register_client(
        self,
        client_id: str,
        *,
        redirect_uris: list[str] | tuple[str, ...],
        jwks: dict[str, Any] | None = None,
        secret: str | None = None,
        jwks_url: str | None = None,
    ) -> None:
        """Register a client: ``jwks`` (private_key_jwt), ``secret`` (Basic), or neither
        (public client). ``jwks_url`` is only the value an assertion's ``jku`` must equal."""
        with self._lock:
            self._clients[client_id] = wire.ClientRecord(
                client_id, tuple(redirect_uris), jwks, secret, jwks_url
            )

    def issue_launch(
        self,
        *,
        patient: str | None = "patient-1",
        encounter: str | None = "encounter-1",
        appointment: str | None = None,
        user: str = "practitioner-1",
        location: str | None = None,
        login_department: str | None = None,
        intent: str | None = None,
        need_patient_banner: bool = True,
    ) -> str:
        """Start an EHR launch for ``user`` and return the opaque ``launch`` value."""
        context: dict[str, Any] = {"need_patient_banner": need_patient_banner}
        for key, value in (("patient", patient), ("encounter", encounter), ("intent", intent)):
            if value is not None:
                context[key] = value
        if self.epic:
            context["need_patient_banner"] = "true" if need_patient_banner else "false"
            epic_keys = (
                ("appointment", appointment),
                ("location", location),
                ("loginDepartment", login_department),
                ("__epic.dstu2.patient", f"dstu2-{patient}" if patient else None),
            )
            context.update({k: v for k, v in epic_keys if v is not None})
        value = secrets.token_urlsafe(24)
        with self._lock:
            self._launches[value] = wire.Grant(
                "", "", context, user, expires_at=self.clock() + _LAUNCH_TTL
            )
        return value

    def fail_next(
        self,
        endpoint: Endpoint,
        status: int,
        *,
        retry_after: float | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests to ``endpoint`` with ``status`` instead of acting
        on them (queued after any failure already scripted for the endpoint)."""
        with self._lock:
            failure = wire.ScriptedFailure(status, retry_after, body, dict(headers or {}))
            self._failures.setdefault(endpoint, []).extend([failure] * times)

    def lose_next_response(self, endpoint: Endpoint, *, times: int = 1) -> None:
        """Act on the next ``times`` requests to ``endpoint`` (a code is redeemed, a token
        issued), then raise ``httpx.ReadTimeout`` instead of answering: the client cannot know."""
        with self._lock:
            self._lost[endpoint] = self._lost.get(endpoint, 0) + times

    def calls(self, endpoint: Endpoint) -> list[httpx.Request]:
        """Recorded requests that went to ``endpoint``."""
        return [r for r in self.requests if self._route(r) == endpoint]

    def token_info(self, access_token: str) -> dict[str, Any] | None:
        """Introspection for a plugged-in FHIR handler: scope, client, context; or ``None``."""
        with self._lock:
            grant = self._access.get(access_token)
            if grant is None or (grant.expires_at and grant.expires_at <= self.clock()):
                return None
            return {"client_id": grant.client_id, "scope": grant.scope, **grant.context}

    def asgi_app(self) -> ASGIApp:
        return asgi_app_from_handler(self.handler)

    # -- documents -------------------------------------------------------------------------------

    @property
    def _urls(self) -> wire.Endpoints:
        return wire.Endpoints(
            self.base_url, self.oidc_issuer, self.authorize_url, self.token_url, self.jwks_url
        )

    def smart_configuration(self) -> dict[str, Any]:
        """The served ``.well-known/smart-configuration`` (with ``smart_configuration_overrides``;
        an override of ``None`` removes the key)."""
        return wire.smart_configuration(
            self._urls, send_iss=self.send_iss, overrides=self.smart_configuration_overrides
        )

    def capability_statement(self) -> dict[str, Any]:
        return wire.capability_statement(self._urls)

    def openid_configuration(self) -> dict[str, Any]:
        return wire.openid_configuration(self._urls)

    # -- the handler -----------------------------------------------------------------------------

    def handler(self, request: httpx.Request) -> httpx.Response:
        """The ``httpx.MockTransport`` handler (thread-safe)."""
        with self._lock:
            self.requests.append(request)
            endpoint = self._route(request)
            if endpoint is None:
                return wire.json_response(404, wire.outcome("not-found", "no such endpoint"))
            failures = self._failures.get(endpoint)
            if failures:
                return wire.failure_response(failures.pop(0))
            try:
                response = self._dispatch(endpoint, request)
            except FakeOAuthError as failure:
                response = wire.json_response(failure.status, failure.body(), no_store=True)
            if self._lost.get(endpoint, 0) > 0:
                self._lost[endpoint] -= 1
                raise httpx.ReadTimeout("response lost (scripted)", request=request)
            return response

    def _route(self, request: httpx.Request) -> Endpoint | None:
        url = request.url
        if f"{url.scheme}://{url.netloc.decode()}" != self.origin:
            return None
        path = url.path
        oauth = urlsplit(self.oidc_issuer).path
        routes: dict[str, Endpoint] = {
            self.base_path + "/.well-known/smart-configuration": "smart-configuration",
            self.base_path + "/.well-known/openid-configuration": "openid-configuration",
            self.base_path + "/metadata": "metadata",
            oauth + "/.well-known/openid-configuration": "openid-configuration",
            oauth + "/authorize": "authorize",
            oauth + "/token": "token",
            oauth + "/jwks": "jwks",
        }
        if path in routes:
            return routes[path]
        if path.startswith(self.base_path + "/"):
            return "fhir"
        return None

    def _dispatch(self, endpoint: Endpoint, request: httpx.Request) -> httpx.Response:
        if endpoint == "smart-configuration":
            if not self.serve_well_known:
                return wire.json_response(404, wire.outcome("not-found", "no smart-configuration"))
            return wire.json_response(200, self.smart_configuration())
        if endpoint == "metadata":
            return wire.json_response(
                200, self.capability_statement(), media="application/fhir+json"
            )
        if endpoint == "openid-configuration":
            return wire.json_response(200, self.openid_configuration())
        if endpoint == "jwks":
            response = wire.json_response(200, {"keys": [self._public_jwk]})
            response.headers["Cache-Control"] = "public, max-age=3600"
            return response
        if endpoint == "authorize":
            return self._authorize(request)
        if endpoint == "token":
            return self._token(request)
        return self._fhir(request)

    # -- /authorize ------------------------------------------------------------------------------

    def _authorize(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            params = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
        elif request.method == "GET":
            params = dict(parse_qsl(request.url.query.decode(), keep_blank_values=True))
        else:
            return httpx.Response(405)
        client = self._clients.get(params.get("client_id", ""))
        redirect_uri = params.get("redirect_uri", "")
        if client is None or redirect_uri not in client.redirect_uris:
            # RFC 6749 §4.1.2.1: never redirect to an unverified redirect URI.
            return httpx.Response(400, text="invalid client or redirect_uri")
        state = params.get("state")

        def refuse(error: str, description: str) -> httpx.Response:
            return self._redirect(
                redirect_uri, error=error, error_description=description, state=state
            )

        scope = params.get("scope", "")
        if params.get("response_type") != "code":
            return refuse("unsupported_response_type", "response_type must be code")
        if not scope or not state:
            return refuse("invalid_request", "scope and state are required")
        if params.get("aud") != self.base_url:
            return refuse("invalid_request", "aud is not this FHIR server")
        challenge = params.get("code_challenge", "")
        if params.get("code_challenge_method") != "S256" or len(challenge) != 43:
            return refuse("invalid_request", "PKCE S256 is required")
        launch_value = params.get("launch")
        if launch_value is not None:
            grant = self._launches.pop(launch_value, None)
            if grant is None or (grant.expires_at and grant.expires_at <= self.clock()):
                return refuse("invalid_request", "invalid launch")
            if "launch" not in scope.split():
                return refuse("invalid_scope", "the launch scope is required")
            context, user = dict(grant.context), grant.user
        else:
            context, user = {}, self.standalone_user
        if self.deny_consent:
            return refuse("access_denied", "the user denied access")
        code = secrets.token_urlsafe(32)
        self._codes[code] = wire.Grant(
            client.client_id,
            scope,
            context,
            user,
            redirect_uri,
            challenge,
            params.get("nonce"),
            self.clock() + _CODE_TTL,
        )
        return self._redirect(redirect_uri, code=code, state=state)

    def _redirect(self, redirect_uri: str, **params: str | None) -> httpx.Response:
        query = {k: v for k, v in params.items() if v is not None}
        if self.send_iss and self.serve_well_known:  # RFC 9207 §3: advertised in metadata
            query["iss"] = self.oidc_issuer
        separator = "&" if "?" in redirect_uri else "?"
        location = redirect_uri + separator + urlencode(query)
        return httpx.Response(302, headers={"Location": location, "Cache-Control": "no-store"})

    # -- /token ----------------------------------------------------------------------------------

    def _token(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST" or request.url.query:
            raise FakeOAuthError("invalid_request", "POST form without query string required")
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            raise FakeOAuthError("invalid_request", "form body required")
        form = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
        grant_type = form.get("grant_type")
        client = self._authenticate(request, form)
        if grant_type == "authorization_code":
            return self._redeem_code(client, form)
        if grant_type == "refresh_token":
            return self._redeem_refresh(client, form)
        if grant_type == "client_credentials":
            return self._client_credentials(client, form)
        raise FakeOAuthError("unsupported_grant_type", "grant_type not supported")

    def _authenticate(self, request: httpx.Request, form: dict[str, str]) -> wire.ClientRecord:
        basic = parse_basic(request.headers.get("authorization", ""))
        if basic is not None:
            client = self._clients.get(basic[0])
            if (
                client is None
                or client.secret is None
                or not secrets_equal(client.secret, basic[1])
            ):
                raise FakeOAuthError("invalid_client", "client authentication failed", 401)
            return client
        if "client_assertion" in form:
            if form.get("client_assertion_type") != ASSERTION_TYPE:
                raise FakeOAuthError("invalid_client", "unsupported client_assertion_type")
            client_id = wire.unverified_issuer(form["client_assertion"])
            client = self._clients.get(client_id)
            if client is None or client.jwks is None:
                raise FakeOAuthError("invalid_client", "unknown client or no registered JWKS")
            if form.get("client_id") not in (None, client.client_id):
                raise FakeOAuthError("invalid_client", "client_id differs from the assertion")
            verify_client_assertion(
                form["client_assertion"],
                client.client_id,
                client.jwks,
                client.jwks_url,
                token_url=self.token_url,
                now=self.clock(),
                seen_jtis=self._jtis,
            )
            return client
        client = self._clients.get(form.get("client_id", ""))
        if client is None or client.jwks is not None or client.secret is not None:
            raise FakeOAuthError("invalid_client", "client authentication required", 401)
        return client

    def _redeem_code(self, client: wire.ClientRecord, form: dict[str, str]) -> httpx.Response:
        grant = self._codes.get(form.get("code", ""))
        if grant is None or grant.used:
            raise FakeOAuthError("invalid_grant", "code unknown or already used")
        grant.used = True
        if grant.expires_at is not None and grant.expires_at <= self.clock():
            raise FakeOAuthError("invalid_grant", "code expired")
        if grant.client_id != client.client_id or grant.redirect_uri != form.get("redirect_uri"):
            raise FakeOAuthError("invalid_grant", "client or redirect_uri mismatch")
        check_pkce(form.get("code_verifier"), grant.challenge)
        return self._issue(client, grant.scope, grant.context, grant.user, grant.nonce)

    def _redeem_refresh(self, client: wire.ClientRecord, form: dict[str, str]) -> httpx.Response:
        grant = self._refresh.pop(form.get("refresh_token", ""), None)  # rotation: single use
        if grant is None or grant.client_id != client.client_id:
            raise FakeOAuthError("invalid_grant", "refresh token unknown, used or not yours")
        return self._issue(client, grant.scope, grant.context, grant.user, None, refresh=True)

    def _client_credentials(
        self, client: wire.ClientRecord, form: dict[str, str]
    ) -> httpx.Response:
        if client.jwks is None:
            raise FakeOAuthError("invalid_client", "backend services need private_key_jwt")
        scopes = form.get("scope", "").split()
        if not scopes or any(not s.startswith("system/") for s in scopes):
            raise FakeOAuthError("invalid_scope", "backend services grant system/ scopes only")
        return self._issue(client, " ".join(scopes), {}, None, None, backend=True)

    def _issue(
        self,
        client: wire.ClientRecord,
        scope: str,
        context: dict[str, Any],
        user: str | None,
        nonce: str | None,
        *,
        refresh: bool = False,
        backend: bool = False,
    ) -> httpx.Response:
        now = self.clock()
        lifetime = timedelta(seconds=300) if backend else self.token_lifetime
        access = secrets.token_urlsafe(32)
        self._access[access] = wire.Grant(
            client.client_id, scope, context, user, expires_at=now + lifetime
        )
        body: dict[str, Any] = {
            "access_token": access,
            "token_type": "bearer" if self.epic else "Bearer",
            "expires_in": int(lifetime.total_seconds()),
            "scope": scope,
        }
        scopes = scope.split()
        if not backend:
            body.update(context)
        if "offline_access" in scopes or "online_access" in scopes:
            token = secrets.token_urlsafe(32)
            self._refresh[token] = wire.Grant(client.client_id, scope, context, user)
            body["refresh_token"] = token
        if "openid" in scopes and user is not None and not refresh:
            body["id_token"] = self.id_token(client.client_id, user, nonce=nonce, now=now)
        return wire.json_response(200, body, no_store=True)

    def id_token(
        self, client_id: str, user: str, *, nonce: str | None, now: datetime | None = None
    ) -> str:
        """An id_token as this server issues it (tests may also mint tokens directly)."""
        issued = now or self.clock()
        claims: dict[str, Any] = {
            "iss": self.oidc_issuer,
            "aud": client_id,
            "sub": user,
            "fhirUser": f"{self.base_url}/Practitioner/{user}",
            "iat": int(issued.timestamp()),
            "exp": int((issued + timedelta(minutes=5)).timestamp()),
        }
        if nonce is not None:
            claims["nonce"] = nonce
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self._kid})

    # -- FHIR ------------------------------------------------------------------------------------

    def _fhir(self, request: httpx.Request) -> httpx.Response:
        authorization = request.headers.get("authorization", "")
        token = authorization[7:] if authorization.lower().startswith("bearer ") else ""
        if self.token_info(token) is None:
            return wire.json_response(
                401, wire.outcome("login", "a valid bearer token is required")
            )
        if self.fhir_handler is None:
            return wire.json_response(404, wire.outcome("not-found", "no FHIR store plugged in"))
        return self.fhir_handler(request)

    # -- the browser -----------------------------------------------------------------------------

    def authorize_in_browser(self, redirect: BrowserTarget) -> dict[str, str]:
        """Play browser + user consent: send the authorization request to this fake, follow its
        302 (without network) and return the callback's query parameters.

        ``redirect`` is the authorize URL (``str`` or ``httpx.URL``), an ``httpx.Request`` (e.g.
        a form ``POST``), or the SMART client's ``AuthorizationRedirect``
        (:mod:`teams_ehr.testing.browser`). Raises :class:`FakeEhrError` when the fake answers
        with an error page instead of redirecting back (unknown client or redirect URI)."""
        response = self.handler(browser_request(redirect))
        params = redirect_params(response)
        if params is None:
            raise FakeEhrError(
                f"FakeEhr refused the authorization request ({response.status_code})"
            )
        return params
