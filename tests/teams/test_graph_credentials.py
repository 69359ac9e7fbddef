"""App-only credentials for Graph (SPEC B1; security.md T17, R20)."""

from __future__ import annotations

import base64
import hashlib
import logging
from datetime import timedelta
from types import SimpleNamespace
from urllib.parse import parse_qs

import anyio
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from graph_test_support import TENANT, FakeTime, self_signed_certificate
from pydantic import SecretStr
from trio import __version__ as trio_version

from leaks import assert_no_leak
from teams_ehr.errors import ConfigurationError, OAuthError
from teams_ehr.teams.credentials import (
    AccessToken,
    ClientCredentialsProvider,
    SyncCredentialAdapter,
    client_assertion,
)

CLIENT_ID = "app-client-id"
TOKEN_URL = f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token"
SCOPE = "https://graph.microsoft.com/.default"
CERT = self_signed_certificate()


class TokenEndpoint:
    """An in-test Entra token endpoint: records forms, answers with numbered tokens."""

    def __init__(self, *, expires_in: int = 3600, status: int = 200) -> None:
        self.forms: list[dict[str, str]] = []
        self.urls: list[str] = []
        self.expires_in = expires_in
        self.status = status

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0)  # let concurrent callers pile up
        self.urls.append(str(request.url))
        form = {k: v[0] for k, v in parse_qs((await request.aread()).decode()).items()}
        self.forms.append(form)
        if self.status != 200:
            body = {"error": "invalid_client", "error_description": "AADSTS7000215 secret=LEAK"}
            return httpx.Response(self.status, json=body)
        return httpx.Response(
            200,
            json={
                "token_type": "Bearer",
                "expires_in": self.expires_in,
                "access_token": f"graph-token-{len(self.forms)}",
            },
        )


def provider(
    endpoint: TokenEndpoint, time: FakeTime, **kwargs: object
) -> tuple[ClientCredentialsProvider, httpx.AsyncClient]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(endpoint))
    options: dict[str, object] = {"certificate": CERT[:2]} | kwargs
    return ClientCredentialsProvider(
        TENANT,
        CLIENT_ID,
        http=http,
        clock=time.clock,
        **options,  # type: ignore[arg-type]
    ), http


@pytest.mark.parametrize("tenant", ["common", "organizations", "consumers", "COMMON", "", "a/b"])
def test_graph_token_authority_is_org_tenant(tenant: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        ClientCredentialsProvider(
            tenant, CLIENT_ID, http=httpx.AsyncClient(), client_secret=SecretStr("s")
        )
    assert caught.value.reason == "tenant_authority_required"


def test_exactly_one_credential() -> None:
    with pytest.raises(ConfigurationError):
        ClientCredentialsProvider(TENANT, CLIENT_ID, http=httpx.AsyncClient())
    with pytest.raises(ConfigurationError):
        ClientCredentialsProvider(
            TENANT,
            CLIENT_ID,
            http=httpx.AsyncClient(),
            certificate=CERT[:2],
            client_secret=SecretStr("s"),
        )


@pytest.mark.anyio
async def test_certificate_assertion_claims_and_headers() -> None:
    endpoint, time = TokenEndpoint(), FakeTime()
    creds, _ = provider(endpoint, time)
    token = await creds.get_token(SCOPE)
    assert token == AccessToken("graph-token-1", int(time.now.timestamp()) + 3600)
    assert endpoint.urls == [TOKEN_URL]
    form = endpoint.forms[0]
    assert form["grant_type"] == "client_credentials"
    assert form["scope"] == SCOPE
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert "client_secret" not in form
    assertion = form["client_assertion"]
    der = CERT[3].public_bytes(serialization.Encoding.DER)
    header = jwt.get_unverified_header(assertion)
    b64 = lambda d: base64.urlsafe_b64encode(d).rstrip(b"=").decode()  # noqa: E731
    assert header["alg"] == "RS256"
    assert header["x5t"] == b64(hashlib.sha1(der).digest())
    assert header["x5t#S256"] == b64(hashlib.sha256(der).digest())
    claims = jwt.decode(
        assertion,
        CERT[2].public_key(),
        algorithms=["RS256"],
        audience=TOKEN_URL,
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert 0 < claims["exp"] - claims["iat"] <= 600
    assert claims["jti"]


@pytest.mark.anyio
async def test_secret_grant_and_fresh_jti_per_request() -> None:
    endpoint, time = TokenEndpoint(expires_in=600), FakeTime()
    creds, _ = provider(endpoint, time, certificate=None, client_secret=SecretStr("s3cr3t"))
    await creds.get_token(SCOPE)
    assert endpoint.forms[0]["client_secret"] == "s3cr3t"
    assert "client_assertion" not in endpoint.forms[0]
    assert "s3cr3t" not in repr(creds)


@pytest.mark.anyio
async def test_cached_until_margin_then_refreshed_with_new_jti() -> None:
    endpoint, time = TokenEndpoint(expires_in=3600), FakeTime()
    creds, _ = provider(endpoint, time)
    first = await creds.get_token(SCOPE)
    time.now += timedelta(minutes=50)
    assert await creds.get_token(SCOPE) is first
    time.now += timedelta(minutes=6)  # within 5 minutes of expiry
    second = await creds.get_token(SCOPE)
    assert second.token == "graph-token-2"
    jtis = [
        jwt.decode(f["client_assertion"], options={"verify_signature": False})["jti"]
        for f in endpoint.forms
    ]
    assert len(set(jtis)) == 2


@pytest.mark.anyio
async def test_single_flight_for_concurrent_callers() -> None:
    """R20: 50 concurrent callers → one token request."""
    endpoint, time = TokenEndpoint(), FakeTime()
    creds, _ = provider(endpoint, time)
    tokens: list[AccessToken] = []

    async def one() -> None:
        tokens.append(await creds.get_token(SCOPE))

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(one)
    assert len(endpoint.forms) == 1
    assert {t.token for t in tokens} == {"graph-token-1"}


@pytest.mark.anyio
async def test_token_error_is_typed_and_leaks_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    endpoint, time = TokenEndpoint(status=401), FakeTime()
    creds, _ = provider(endpoint, time, certificate=None, client_secret=SecretStr("s3cr3t"))
    with pytest.raises(OAuthError) as caught:
        await creds.get_token(SCOPE)
    assert caught.value.error == "invalid_client"
    assert caught.value.status_code == 401
    assert_no_leak(["s3cr3t", "LEAK"], str(caught.value), repr(caught.value), caplog.text)


def test_access_token_repr_hides_token() -> None:
    token = AccessToken("tok-SECRET", 10)
    assert "tok-SECRET" not in repr(token)
    assert token.token == "tok-SECRET"


def test_assertion_lifetime_capped_at_ten_minutes() -> None:
    with pytest.raises(ConfigurationError):
        client_assertion(
            *CERT[:2],
            client_id="c",
            token_endpoint=TOKEN_URL,
            now=0,
            ttl=timedelta(minutes=11),
            jti="j",
        )


@pytest.mark.anyio
async def test_adapter_wraps_sync_and_async_credentials(anyio_backend: str) -> None:
    if anyio_backend == "trio" and tuple(int(p) for p in trio_version.split(".")[:2]) < (0, 25):
        pytest.skip("anyio worker threads need trio >= 0.25 (pyproject's floor)")

    class SyncCred:
        def get_token(self, *scopes: str) -> SimpleNamespace:
            return SimpleNamespace(token=f"sync:{scopes[0]}", expires_on=123)

    class AsyncCred:
        async def get_token(self, *scopes: str) -> SimpleNamespace:
            return SimpleNamespace(token=f"async:{scopes[0]}", expires_on=456.0)

    assert await SyncCredentialAdapter(SyncCred()).get_token("s") == AccessToken("sync:s", 123)
    assert await SyncCredentialAdapter(AsyncCred()).get_token("s") == AccessToken("async:s", 456)
    with pytest.raises(ConfigurationError):
        SyncCredentialAdapter(object())
