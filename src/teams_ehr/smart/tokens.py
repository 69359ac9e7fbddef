"""Token requests, the token response, backend-services tokens and refresh (requirements A5, A8).

Sources: SMART App Launch 2.2 app-launch §"Obtain access token" and §"Refresh", backend-services,
RFC 6749 §5.1/§5.2; threat T09 (fresh assertion per attempt), threat T15 (refresh single-flight).

Retries. A flow cannot sleep, so :func:`token_request_flow` marks a retry request with the wait
(:func:`teams_ehr.sansio.with_delay`) and :func:`request_token` / :func:`request_token_sync` sleep
before sending it. Each attempt carries a new client assertion. What is retried:

* ``client_credentials`` (nothing single-use is spent): 429, 502, 503, 504 and network failures;
* ``authorization_code`` and ``refresh_token`` (the code and a rotating refresh token are
  single-use, and a replay can revoke the whole grant): only 503 (the server did not process the
  request) and connection failures before anything was sent.

``Retry-After`` (seconds or HTTP date) is honoured up to ``max_retry_after_seconds`` (≤ 60 s, as
the assertion is signed before the wait and must still be valid when sent); a longer wait ends the
attempts. Without it the wait is ``backoff_seconds × 2^(attempt−1)``. Driven by the plain
:mod:`teams_ehr.sansio` drivers the flow still works, but retries immediately and network failures
end it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from teams_ehr._concurrency import KeyedLocks, SingleFlight
from teams_ehr._redact import get_logger, redact_url
from teams_ehr._types import Clock, Flow, utc_now
from teams_ehr.errors import ConfigurationError, OAuthError, TransportError, UsageError
from teams_ehr.sansio import run_async, run_sync, with_delay, with_max_bytes
from teams_ehr.smart.client_auth import ClientAuthentication

__all__ = [
    "BackendServicesTokenSource",
    "BackendTokenSources",
    "RefreshCoordinator",
    "TokenResponse",
    "authorization_code_form",
    "client_credentials_form",
    "refresh_form",
    "request_token",
    "request_token_sync",
    "token_request_flow",
]

_log = get_logger(__name__)

MAX_TOKEN_RESPONSE_BYTES = 262_144
_SINGLE_USE_GRANTS = frozenset({"authorization_code", "refresh_token"})
_RETRYABLE = frozenset({429, 502, 503, 504})
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class TokenResponse(BaseModel):
    """A token endpoint's success response (RFC 6749 §5.1, SMART app-launch).

    Launch context (``patient``, ``encounter``, ``fhirContext``, Epic's extras …) stays in
    ``model_extra``. ``repr`` shows key names only, never tokens or context values.
    """

    model_config = ConfigDict(frozen=True, extra="allow", hide_input_in_errors=True)

    access_token: SecretStr
    token_type: str
    expires_in: int | None = Field(default=None, ge=0)
    scope: str | None = None
    id_token: SecretStr | None = None
    refresh_token: SecretStr | None = None

    @field_validator("token_type")
    @classmethod
    def _bearer_only(cls, value: str) -> str:
        if value.lower() != "bearer":  # Epic sends "bearer"
            raise ValueError("token_type must be Bearer")
        return "Bearer"

    @property
    def granted_scopes(self) -> frozenset[str]:
        """The scopes the server granted (may differ from those requested: inspect them)."""
        return frozenset((self.scope or "").split())

    def __repr_args__(self) -> Any:
        yield "token_type", self.token_type
        yield "expires_in", self.expires_in
        yield "scope", self.scope
        yield "extra_keys", sorted(self.model_extra or {})


def authorization_code_form(code: str, redirect_uri: str, code_verifier: str) -> dict[str, str]:
    """The body of an authorization-code token request (SMART app-launch, PKCE)."""
    return {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
    }


def refresh_form(refresh_token: SecretStr | str, scope: str | None = None) -> dict[str, str]:
    """The body of a refresh request; ``scope`` must be a subset of the original grant."""
    token = (
        refresh_token.get_secret_value() if isinstance(refresh_token, SecretStr) else refresh_token
    )
    form = {"grant_type": "refresh_token", "refresh_token": token}
    if scope:
        form["scope"] = scope
    return form


def client_credentials_form(scopes: Sequence[str]) -> dict[str, str]:
    """The body of a SMART Backend Services token request (``system/...`` scopes)."""
    if (
        isinstance(scopes, str)
        or not scopes
        or any(not s or s != s.strip() or " " in s for s in scopes)
    ):
        raise UsageError("scopes must be a non-empty list of single scopes", reason="bad_scopes")
    return {"grant_type": "client_credentials", "scope": " ".join(scopes)}


def _retry_after(response: httpx.Response, now: datetime) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime  # the rare HTTP-date form (RFC 9110 §10.2.3)

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - now).total_seconds()) if when.tzinfo else None


def _oauth_error(response: httpx.Response) -> OAuthError:
    status = response.status_code
    try:
        body = json.loads(response.content)
    except (ValueError, RecursionError):
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, str) and _ERROR_CODE.fullmatch(error):
        description = body.get("error_description") if isinstance(body, dict) else None
        text = description[:500] if isinstance(description, str) else None
        return OAuthError(error=error, description=text, status_code=status)
    if status in (429, 503):
        return OAuthError(error="temporarily_unavailable", status_code=status)
    error = "server_error" if status >= 500 else "invalid_response"
    return OAuthError(error=error, status_code=status)


def _token_response(response: httpx.Response) -> TokenResponse:
    try:
        body = json.loads(response.content)
    except (ValueError, RecursionError):
        raise OAuthError(error="invalid_response", status_code=response.status_code) from None
    if isinstance(body, dict) and "access_token" not in body and "error" in body:
        raise _oauth_error(response)
    try:
        return TokenResponse.model_validate(body)
    except ValidationError:
        raise OAuthError(error="invalid_response", status_code=response.status_code) from None


def token_request_flow(
    token_endpoint: str,
    form: Mapping[str, str],
    auth: ClientAuthentication,
    *,
    clock: Clock,
    max_attempts: int = 3,
    max_retry_after_seconds: float = 30.0,
    backoff_seconds: float = 1.0,
) -> Flow[TokenResponse]:
    """POST ``form`` (form-urlencoded) to the token endpoint; see the module doc for retries."""
    if max_attempts < 1 or not 0 <= max_retry_after_seconds <= 60:
        raise ConfigurationError("bad retry settings", reason="bad_retry_settings")
    single_use = form.get("grant_type") in _SINGLE_USE_GRANTS
    attempt, delay = 0, 0.0
    while True:
        attempt += 1
        auth_form, auth_headers = auth.token_request_auth(token_endpoint, now=clock())
        if auth_form.keys() & form.keys():
            raise UsageError("client authentication overrides a form field", reason="form_clash")
        request = httpx.Request(
            "POST",
            token_endpoint,
            data={**form, **auth_form},
            headers={"Accept": "application/json", **auth_headers},
        )
        with_delay(with_max_bytes(request, MAX_TOKEN_RESPONSE_BYTES), delay)
        backoff = backoff_seconds * 2 ** (attempt - 1)
        last = attempt == max_attempts
        try:
            response = yield request
        except TransportError as exc:
            never_sent = isinstance(exc.__cause__, httpx.ConnectError | httpx.ConnectTimeout)
            if last or (single_use and not never_sent):
                raise
            delay = backoff
            continue
        _log.info(
            "token request to %s: HTTP %d (attempt %d)",
            redact_url(token_endpoint),
            response.status_code,
            attempt,
        )
        if response.status_code == 200:
            return _token_response(response)
        retryable = response.status_code == 503 or (
            not single_use and response.status_code in _RETRYABLE
        )
        wait = _retry_after(response, clock())
        wait = backoff if wait is None else wait
        if last or not retryable or wait > max_retry_after_seconds:
            raise _oauth_error(response)
        delay = wait


async def request_token(
    client: httpx.AsyncClient,
    token_endpoint: str,
    form: Mapping[str, str],
    auth: ClientAuthentication,
    *,
    clock: Clock,
    max_attempts: int = 3,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> TokenResponse:
    """Run :func:`token_request_flow` on ``client``, sleeping between attempts as asked."""
    flow = token_request_flow(token_endpoint, form, auth, clock=clock, max_attempts=max_attempts)
    return await run_async(flow, client, sleep=sleep)


def request_token_sync(
    client: httpx.Client,
    token_endpoint: str,
    form: Mapping[str, str],
    auth: ClientAuthentication,
    *,
    clock: Clock,
    max_attempts: int = 3,
    sleep: Callable[[float], None] = time.sleep,
) -> TokenResponse:
    """Synchronous :func:`request_token`."""
    flow = token_request_flow(token_endpoint, form, auth, clock=clock, max_attempts=max_attempts)
    return run_sync(flow, client, sleep=sleep)


class BackendServicesTokenSource:
    """A SMART Backend Services access token, cached until shortly before it expires.

    Like :class:`~teams_ehr.teams.credentials.ClientCredentialsProvider`, it takes its client as
    ``http=`` and its clock as ``clock=`` (default :func:`~teams_ehr._types.utc_now`) at
    construction; ``get_token(client)`` may still name another client for one call. Concurrent
    callers share one token request (single-flight). Call :meth:`invalidate` after a FHIR server
    answered 401 with this token.
    """

    def __init__(
        self,
        token_endpoint: str,
        auth: ClientAuthentication,
        scopes: Sequence[str],
        *,
        http: httpx.AsyncClient | None = None,
        clock: Clock = utc_now,
        refresh_margin_seconds: int = 60,
        default_lifetime_seconds: int = 300,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._endpoint = token_endpoint
        self._auth = auth
        self._form = client_credentials_form(scopes)
        self._http = http
        self._clock = clock
        self._margin = timedelta(seconds=refresh_margin_seconds)
        self._default_lifetime = timedelta(seconds=default_lifetime_seconds)
        self._sleep = sleep
        self._token: SecretStr | None = None
        self._refresh_at = datetime.min.replace(tzinfo=UTC)
        self._granted: frozenset[str] = frozenset()
        self._lock: anyio.Lock | None = None

    @property
    def granted_scopes(self) -> frozenset[str]:
        """Scopes of the current token (Epic grants its registered APIs, whatever we asked)."""
        return self._granted

    def _fresh(self) -> SecretStr | None:
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token
        return None

    async def get_token(self, client: httpx.AsyncClient | None = None) -> SecretStr:
        """A valid access token, requesting a new one only when needed.

        The request goes through ``client`` if given, else the ``http`` client of the constructor.
        """
        if (token := self._fresh()) is not None:
            return token
        http = client or self._http
        if http is None:
            raise UsageError("no HTTP client: pass http= or a client")
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if (token := self._fresh()) is not None:
                return token
            issued_at = self._clock()
            response = await request_token(
                http, self._endpoint, self._form, self._auth, clock=self._clock, sleep=self._sleep
            )
            lifetime = (
                timedelta(seconds=response.expires_in)
                if response.expires_in is not None
                else self._default_lifetime
            )
            self._refresh_at = issued_at + lifetime - min(self._margin, lifetime / 2)
            self._token, self._granted = response.access_token, response.granted_scopes
            return response.access_token

    def invalidate(self) -> None:
        """Forget the cached token (the next :meth:`get_token` requests a new one)."""
        self._token = None

    def __repr__(self) -> str:
        return f"<BackendServicesTokenSource endpoint={redact_url(self._endpoint)}>"


class BackendTokenSources:
    """One :class:`BackendServicesTokenSource` per key (e.g. an organization's environment).

    ``create`` (which may await, e.g. to read the organization's approved token endpoint) runs
    once per key: concurrent first callers wait for it and then share the new source, so they
    share its single token request too. Without this, each caller arriving while ``create``
    awaits would build its own source and request its own token.
    """

    def __init__(self) -> None:
        self._sources: dict[Hashable, BackendServicesTokenSource] = {}
        self._locks = KeyedLocks()

    def __len__(self) -> int:
        return len(self._sources)

    async def get(
        self, key: Hashable, create: Callable[[], Awaitable[BackendServicesTokenSource]]
    ) -> BackendServicesTokenSource:
        """The source for ``key``, made with ``create`` the first time (single-flight)."""
        if (source := self._sources.get(key)) is not None:
            return source
        async with self._locks.hold(key):
            if (source := self._sources.get(key)) is None:
                source = self._sources[key] = await create()
            return source

    def forget(self, key: Hashable) -> None:
        """Drop the source of ``key`` (its organization's configuration changed or was removed)."""
        self._sources.pop(key, None)

    def __repr__(self) -> str:
        return f"<BackendTokenSources keys={len(self._sources)}>"


class RefreshCoordinator:
    """Single-flight refresh per grant; the rotated refresh token is persisted before use (threat T15).

    SMART App Launch §"Refresh access token", RFC 6749 §6. One coordinator serves one token
    endpoint and client authentication; like :class:`BackendServicesTokenSource` it takes its
    client as ``http=`` and its clock as ``clock=``. ``persist`` receives the new
    :class:`TokenResponse` (with the rotated ``refresh_token`` when the server rotated it) and must
    store it durably; only then is the response returned. The POST and ``persist`` are shielded
    from cancellation: once a single-use refresh token is spent, losing its replacement would kill
    the grant. If ``persist`` fails the error propagates and the new tokens are never used; the
    grant must be re-launched. ``invalid_grant`` surfaces as an
    :class:`~teams_ehr.errors.OAuthError` with ``reason="reauthorization_required"``.
    """

    def __init__(
        self,
        token_endpoint: str,
        auth: ClientAuthentication,
        persist: Callable[[TokenResponse], Awaitable[None]],
        *,
        http: httpx.AsyncClient | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._endpoint = token_endpoint
        self._auth = auth
        self._persist = persist
        self._http = http
        self._clock = clock
        self._flights: SingleFlight[TokenResponse] = SingleFlight()

    async def refresh(
        self,
        grant_key: str,
        refresh_token: SecretStr,
        *,
        scope: str | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> TokenResponse:
        """Refresh grant ``grant_key``; concurrent callers share one request and its result.

        ``scope`` narrows the grant (a subset of the original); ``client`` overrides ``http``.
        """
        http = client or self._http
        if http is None:
            raise UsageError("no HTTP client: pass http= or client=")

        async def refresh_once() -> TokenResponse:
            with anyio.CancelScope(shield=True):
                form = refresh_form(refresh_token, scope)
                try:
                    response = await request_token(
                        http, self._endpoint, form, self._auth, clock=self._clock
                    )
                except OAuthError as exc:
                    if exc.error != "invalid_grant":
                        raise
                    raise OAuthError(
                        error=exc.error,
                        description=exc.description,
                        status_code=exc.status_code,
                        reason="reauthorization_required",
                    ) from None
                await self._persist(response)
            return response

        return await self._flights.run(grant_key, refresh_once)

    def __repr__(self) -> str:
        return f"<RefreshCoordinator endpoint={redact_url(self._endpoint)}>"
