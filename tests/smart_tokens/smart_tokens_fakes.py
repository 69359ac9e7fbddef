"""Test doubles for the token tests: a strict token endpoint and a settable clock.

``FakeTokenEndpoint`` checks client assertions the way SMART servers must (client-confidential-
asymmetric "server rules"): signature with the registered public JWK, ``typ``, ``iss = sub =
client_id``, ``aud`` = this endpoint, ``exp`` ≤ 5 minutes ahead of *its* clock, string ``jti``
≤ 151 characters and never replayed. It is an ``httpx.MockTransport`` handler.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote_plus

import httpx
import jwt

from teams_ehr.smart.client_auth import CLIENT_ASSERTION_TYPE

TOKEN_URL = "https://ehr.test/oauth2/token"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """A settable clock (the :data:`~teams_ehr._types.Clock` shape)."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class FakeTokenEndpoint:
    client_id: str
    public_jwk: dict[str, str] | None = None
    client_secret: str | None = None
    clock: Callable[[], datetime] = field(default_factory=FakeClock)
    url: str = TOKEN_URL
    script: list[httpx.Response] = field(default_factory=list)
    access_token: str = "ACCESS-CANARY-0001"
    refresh_token: str | None = None
    expires_in: int = 3600
    extra: dict[str, Any] = field(default_factory=dict)
    seen_jti: set[str] = field(default_factory=set)
    jtis: list[str] = field(default_factory=list)
    posts: list[dict[str, str]] = field(default_factory=list)
    used_refresh_tokens: set[str] = field(default_factory=set)
    issued: int = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST" or str(request.url) != self.url:
            return httpx.Response(404)
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        self.posts.append(form)
        error = self._authenticate(request, form)
        if error is not None:
            return self._error("invalid_client", error, 401)
        if self.script:
            return self.script.pop(0)
        return self._grant(form)

    def _authenticate(self, request: httpx.Request, form: dict[str, str]) -> str | None:
        if "client_assertion" in form:
            return self._check_assertion(form)
        if self.client_secret is not None:
            header = request.headers.get("authorization", "")
            if not header.startswith("Basic "):
                return "no credentials"
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if (unquote_plus(user), unquote_plus(password)) != (self.client_id, self.client_secret):
                return "bad secret"
            return None
        return "no credentials" if self.public_jwk else None

    def _check_assertion(self, form: dict[str, str]) -> str | None:
        if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE or self.public_jwk is None:
            return "bad assertion type"
        token = form["client_assertion"]
        header = jwt.get_unverified_header(token)
        if header.get("typ") != "JWT" or header.get("kid") != self.public_jwk["kid"]:
            return "bad header"
        key = jwt.PyJWK(self.public_jwk, algorithm=header["alg"])
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["RS384", "ES384"],
                audience=self.url,
                issuer=self.client_id,
                options={
                    "require": ["iss", "sub", "aud", "exp", "iat", "jti"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError as exc:
            return f"assertion rejected: {type(exc).__name__}"
        now = self.clock().timestamp()
        if claims["sub"] != self.client_id:
            return "sub"
        if not 0 < claims["exp"] - now <= 300:
            return "exp window"
        jti = claims["jti"]
        if not isinstance(jti, str) or len(jti) > 151 or jti in self.seen_jti:
            return "jti"
        self.seen_jti.add(jti)
        self.jtis.append(jti)
        return None

    def _grant(self, form: dict[str, str]) -> httpx.Response:
        grant = form.get("grant_type")
        if grant == "refresh_token":
            presented = form.get("refresh_token", "")
            if presented in self.used_refresh_tokens or presented != self.refresh_token:
                return self._error("invalid_grant", "refresh token reused", 400)
            self.used_refresh_tokens.add(presented)
        elif grant not in ("authorization_code", "client_credentials"):
            return self._error("unsupported_grant_type", None, 400)
        self.issued += 1
        body: dict[str, Any] = {
            "access_token": f"{self.access_token}-{self.issued}",
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "scope": form.get("scope", "launch openid fhirUser"),
            **self.extra,
        }
        if grant == "refresh_token" and self.refresh_token is not None:
            self.refresh_token = f"{self.refresh_token.split('#')[0]}#{self.issued}"
            body["refresh_token"] = self.refresh_token
        return httpx.Response(200, json=body, headers={"Cache-Control": "no-store"})

    @staticmethod
    def _error(error: str, description: str | None, status: int) -> httpx.Response:
        body = {"error": error} | ({"error_description": description} if description else {})
        return httpx.Response(
            status, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )


@dataclass
class JwksEndpoint:
    """A JWKS URL as an ``httpx.MockTransport`` handler, with scripted failure modes.

    ``mode``: ``ok``, ``down`` (503), ``refuse`` (connection error), ``redirect`` (302 to
    ``/moved``, which fails the test if fetched), ``huge`` (a body over 64 KiB).
    """

    keys: list[dict[str, str]]
    url: str = "https://ehr.test/oauth2/jwks"
    cache_control: str | None = "max-age=3600"
    mode: str = "ok"
    gets: int = 0
    forbidden_hosts: tuple[str, ...] = ("evil.test",)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host in self.forbidden_hosts or request.url.path == "/moved":
            raise AssertionError(f"fetched a URL the verifier must never fetch: {request.url}")
        if str(request.url) != self.url:
            return httpx.Response(404)
        self.gets += 1
        if self.mode == "refuse":
            raise httpx.ConnectError("refused", request=request)
        if self.mode == "down":
            return httpx.Response(503)
        if self.mode == "redirect":
            return httpx.Response(302, headers={"Location": "https://ehr.test/moved"})
        if self.mode == "huge":
            return httpx.Response(200, json={"keys": self.keys, "pad": "x" * 70_000})
        headers = {"Cache-Control": self.cache_control} if self.cache_control else {}
        return httpx.Response(200, json={"keys": self.keys}, headers=headers)
