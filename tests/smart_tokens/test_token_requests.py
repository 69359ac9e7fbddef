"""Token requests end to end against a strict fake endpoint (SPEC A5, A8; T08, T09, T15)."""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

import anyio
import httpx
import jwt
import pytest
from pydantic import SecretStr, ValidationError
from smart_tokens_fakes import TOKEN_URL, FakeClock, FakeTokenEndpoint

from leaks import assert_no_leak
from teams_ehr import install_redaction
from teams_ehr.errors import OAuthError, StorageError, TransportError, UsageError
from teams_ehr.keys import LocalSigner
from teams_ehr.smart.client_auth import ClientSecretBasic, PrivateKeyJwt
from teams_ehr.smart.tokens import (
    BackendServicesTokenSource,
    RefreshCoordinator,
    TokenResponse,
    authorization_code_form,
    client_credentials_form,
    refresh_form,
    request_token,
    request_token_sync,
)

install_redaction()  # as a host does at start-up (the runtime and the mount do it too)

CLIENT_ID = "client-abc"
CODE = "CODE-CANARY-7731"
SECRET = "SECRET-CANARY-5521"
CANARIES = ["ACCESS-CANARY", CODE, SECRET, "RT-CANARY", "PATIENT-CANARY"]


@cache
def signer(alg: str = "ES384") -> LocalSigner:
    return LocalSigner.generate(alg)


def fake(**kwargs: Any) -> tuple[FakeTokenEndpoint, PrivateKeyJwt, FakeClock]:
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(CLIENT_ID, public_jwk=signer().public_jwk(), clock=clock, **kwargs)
    return endpoint, PrivateKeyJwt(CLIENT_ID, signer()), clock


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)

    async def async_sleep(self, seconds: float) -> None:
        self.calls.append(seconds)


def code_form() -> dict[str, str]:
    return authorization_code_form(CODE, "https://app.test/cb", "v" * 43)


def run(
    endpoint: FakeTokenEndpoint,
    form: dict[str, str],
    auth: Any,
    clock: FakeClock,
    sleeps: Sleeps | None = None,
) -> TokenResponse:
    with httpx.Client(transport=httpx.MockTransport(endpoint)) as client:
        return request_token_sync(
            client, TOKEN_URL, form, auth, clock=clock, sleep=sleeps or Sleeps()
        )


def test_authorization_code_exchange_with_private_key_jwt() -> None:
    endpoint, auth, clock = fake(extra={"patient": "PATIENT-CANARY", "need_patient_banner": "true"})
    response = run(endpoint, code_form(), auth, clock)
    assert response.token_type == "Bearer"  # Epic's lowercase "bearer" is accepted
    assert response.access_token.get_secret_value() == "ACCESS-CANARY-0001-1"
    assert response.granted_scopes == {"launch", "openid", "fhirUser"}
    assert response.model_extra == {"patient": "PATIENT-CANARY", "need_patient_banner": "true"}
    post = endpoint.posts[0]
    assert post["code_verifier"] == "v" * 43
    assert "client_id" not in post  # confidential clients omit it (SMART, Epic)
    assert_no_leak(CANARIES, response)


def test_retry_after_503_uses_new_jti() -> None:
    endpoint, auth, clock = fake(script=[httpx.Response(503, headers={"Retry-After": "2"})])
    sleeps = Sleeps()
    run(endpoint, code_form(), auth, clock, sleeps)
    assert len(endpoint.posts) == 2
    assert len(endpoint.jtis) == 2
    assert endpoint.jtis[0] != endpoint.jtis[1]  # both accepted by the replay check
    assert sleeps.calls == [2.0]


@pytest.mark.parametrize(
    ("status", "grant", "posts"),
    [(429, "code", 1), (502, "code", 1), (429, "client", 2), (504, "client", 2), (503, "code", 2)],
)
def test_what_is_retried(status: int, grant: str, posts: int) -> None:
    endpoint, auth, clock = fake(script=[httpx.Response(status, headers={"Retry-After": "0"})])
    form = code_form() if grant == "code" else client_credentials_form(["system/Patient.rs"])
    if posts == 1:
        with pytest.raises(OAuthError) as info:
            run(endpoint, form, auth, clock)
        assert info.value.status_code == status
    else:
        run(endpoint, form, auth, clock)
    assert len(endpoint.posts) == posts


def test_retry_after_too_long_or_attempts_exhausted() -> None:
    endpoint, auth, clock = fake(script=[httpx.Response(503, headers={"Retry-After": "3600"})])
    with pytest.raises(OAuthError) as info:
        run(endpoint, code_form(), auth, clock)
    assert (info.value.error, info.value.status_code) == ("temporarily_unavailable", 503)
    assert len(endpoint.posts) == 1
    endpoint, auth, clock = fake(script=[httpx.Response(503)] * 3)
    sleeps = Sleeps()
    with pytest.raises(OAuthError):
        run(endpoint, code_form(), auth, clock, sleeps)
    assert len(endpoint.posts) == 3
    assert sleeps.calls == [1.0, 2.0]  # exponential backoff without Retry-After


def test_retry_after_http_date() -> None:
    endpoint, auth, clock = fake(
        script=[httpx.Response(503, headers={"Retry-After": "Sun, 01 Mar 2026 12:00:05 GMT"})]
    )
    sleeps = Sleeps()
    run(endpoint, code_form(), auth, clock, sleeps)
    assert sleeps.calls == [5.0]


@pytest.mark.parametrize(
    ("exc", "grant", "posts"),
    [
        (httpx.ConnectError, "code", 2),  # never sent: safe to retry even a single-use code
        (httpx.ReadTimeout, "code", 1),  # maybe processed: the code may be spent
        (httpx.ReadTimeout, "client", 2),
    ],
)
def test_network_failures(exc: type[httpx.TransportError], grant: str, posts: int) -> None:
    endpoint, auth, clock = fake()
    calls: list[int] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            raise exc("boom", request=request)
        return endpoint(request)

    form = code_form() if grant == "code" else client_credentials_form(["system/Patient.rs"])
    with httpx.Client(transport=httpx.MockTransport(flaky)) as client:
        if posts == 1:
            with pytest.raises(TransportError):
                request_token_sync(client, TOKEN_URL, form, auth, clock=clock, sleep=Sleeps())
        else:
            request_token_sync(client, TOKEN_URL, form, auth, clock=clock, sleep=Sleeps())
    assert len(calls) == posts


def test_oauth_error_keeps_description_off_str(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    body = {"error": "invalid_grant", "error_description": f"code {CODE} was used"}
    endpoint, auth, clock = fake(script=[httpx.Response(400, json=body)])
    with pytest.raises(OAuthError) as info:
        run(endpoint, code_form(), auth, clock)
    assert (info.value.error, info.value.status_code) == ("invalid_grant", 400)
    assert info.value.description is not None
    assert_no_leak(CANARIES, info.value, caplog.text)


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (httpx.Response(200, content=b"<html>"), "invalid_response"),
        (httpx.Response(200, json=["x"]), "invalid_response"),
        (
            httpx.Response(200, json={"access_token": "ACCESS-CANARY", "token_type": "mac"}),
            "invalid_response",
        ),
        (httpx.Response(200, json={"token_type": "bearer"}), "invalid_response"),
        (httpx.Response(200, json={"error": "access_denied"}), "access_denied"),
        (httpx.Response(400, content=b"nope"), "invalid_response"),
        (httpx.Response(401, json={"error": "code=ACCESS-CANARY"}), "invalid_response"),
        (httpx.Response(500, content=b""), "server_error"),
    ],
)
def test_bad_responses_map_to_oauth_error(response: httpx.Response, error: str) -> None:
    endpoint, auth, clock = fake(script=[response])
    with pytest.raises(OAuthError) as info:
        run(endpoint, code_form(), auth, clock)
    assert info.value.error == error
    assert info.value.__cause__ is None
    assert_no_leak(CANARIES, info.value)


def test_token_response_validation_error_hides_secret() -> None:
    with pytest.raises(ValidationError) as info:
        TokenResponse.model_validate({"access_token": "ACCESS-CANARY", "token_type": "MAC"})
    assert_no_leak(CANARIES, info.value)
    ok = TokenResponse.model_validate(
        {
            "access_token": "ACCESS-CANARY",
            "token_type": "BEARER",
            "refresh_token": "RT-CANARY",
            "id_token": "ID-CANARY",
            "patient": "PATIENT-CANARY",
        }
    )
    assert_no_leak([*CANARIES, "ID-CANARY"], ok)
    assert "extra_keys=['patient']" in repr(ok)
    assert ok.granted_scopes == frozenset()


def test_nothing_secret_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assertions: list[str] = []
    endpoint, auth, clock = fake(script=[httpx.Response(503, headers={"Retry-After": "0"})])

    def spy(request: httpx.Request) -> httpx.Response:
        assertions.append(request.content.decode())
        return endpoint(request)

    with httpx.Client(transport=httpx.MockTransport(spy)) as client:
        response = request_token_sync(client, TOKEN_URL, code_form(), auth, clock=clock)
    basic = ClientSecretBasic(CLIENT_ID, SecretStr(SECRET))
    secret_endpoint = FakeTokenEndpoint(CLIENT_ID, client_secret=SECRET, clock=clock)
    run(secret_endpoint, code_form(), basic, clock)
    assert "HTTP Request" in caplog.text
    client_assertions = [a.split("client_assertion=")[1].split("&")[0] for a in assertions]
    assert_no_leak([*CANARIES, *client_assertions], caplog.text, response, auth, basic)


def test_client_secret_basic_accepted_by_strict_server() -> None:
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(CLIENT_ID, client_secret="s p/+", clock=clock)
    response = run(endpoint, code_form(), ClientSecretBasic(CLIENT_ID, SecretStr("s p/+")), clock)
    assert response.token_type == "Bearer"


def test_forms() -> None:
    assert refresh_form(SecretStr("RT"), "launch/patient") == {
        "grant_type": "refresh_token",
        "refresh_token": "RT",
        "scope": "launch/patient",
    }
    assert client_credentials_form(["system/Patient.rs", "system/Encounter.cud"])["scope"] == (
        "system/Patient.rs system/Encounter.cud"
    )
    for bad in ("system/Patient.rs", [], ["a b"], [""]):
        with pytest.raises(UsageError):
            client_credentials_form(bad)  # type: ignore[arg-type]


def test_assertion_aud_is_the_token_url() -> None:
    endpoint, auth, clock = fake()
    run(endpoint, code_form(), auth, clock)
    claims = jwt.decode(endpoint.posts[0]["client_assertion"], options={"verify_signature": False})
    assert claims["aud"] == TOKEN_URL


# -- backend services and refresh ---------------------------------------------------------------


def async_transport(endpoint: FakeTokenEndpoint) -> httpx.MockTransport:
    async def handler(request: httpx.Request) -> httpx.Response:
        for _ in range(3):
            await anyio.sleep(0)
        return endpoint(request)

    return httpx.MockTransport(handler)


@pytest.mark.anyio
async def test_backend_token_single_flight_and_cached_until_margin() -> None:
    endpoint, auth, clock = fake(expires_in=300)
    source = BackendServicesTokenSource(TOKEN_URL, auth, ["system/Patient.rs"], clock=clock)
    tokens: list[str] = []

    async def one(client: httpx.AsyncClient) -> None:
        tokens.append((await source.get_token(client)).get_secret_value())

    async with httpx.AsyncClient(transport=async_transport(endpoint)) as client:
        async with anyio.create_task_group() as tg:
            for _ in range(1000):
                tg.start_soon(one, client)
        assert len(endpoint.posts) == 1
        assert set(tokens) == {"ACCESS-CANARY-0001-1"}
        assert source.granted_scopes == {"system/Patient.rs"}
        clock.advance(239)
        await one(client)
        assert len(endpoint.posts) == 1
        clock.advance(1)  # 60 s before expiry: renew
        await one(client)
        assert len(endpoint.posts) == 2
        source.invalidate()
        await one(client)
        assert len(endpoint.posts) == 3
    assert endpoint.posts[0]["grant_type"] == "client_credentials"
    assert len(set(endpoint.jtis)) == 3
    assert "ACCESS" not in repr(source)


@pytest.mark.anyio
async def test_concurrent_refresh_single_post_and_persisted_before_use() -> None:
    endpoint, auth, clock = fake(refresh_token="RT-CANARY")
    events: list[str] = []

    async def persist(response: TokenResponse) -> None:
        await anyio.sleep(0)
        assert response.refresh_token is not None
        events.append(f"persisted {response.refresh_token.get_secret_value()}")

    coordinator = RefreshCoordinator(TOKEN_URL, auth, persist, clock=clock)

    async def one(client: httpx.AsyncClient) -> None:
        response = await coordinator.refresh("grant-1", SecretStr("RT-CANARY"), client=client)
        events.append(f"used {response.access_token.get_secret_value()}")

    async with (
        httpx.AsyncClient(transport=async_transport(endpoint)) as client,
        anyio.create_task_group() as tg,
    ):
        for _ in range(50):
            tg.start_soon(one, client)
    assert len(endpoint.posts) == 1
    assert events[0] == "persisted RT-CANARY#1"
    assert events[1:] == ["used ACCESS-CANARY-0001-1"] * 50


@pytest.mark.anyio
async def test_failed_persist_means_new_tokens_never_used() -> None:
    endpoint, auth, clock = fake(refresh_token="RT-CANARY")

    async def crash(response: TokenResponse) -> None:
        raise StorageError("disk full")

    coordinator = RefreshCoordinator(TOKEN_URL, auth, crash, clock=clock)
    async with httpx.AsyncClient(transport=async_transport(endpoint)) as client:
        with pytest.raises(StorageError):
            await coordinator.refresh("grant-1", SecretStr("RT-CANARY"), client=client)
        # the old token is spent at the server: reuse surfaces as "re-authorize", never a loop
        with pytest.raises(OAuthError) as info:
            await coordinator.refresh("grant-1", SecretStr("RT-CANARY"), client=client)
    assert info.value.reason == "reauthorization_required"
    assert len(endpoint.posts) == 2


@pytest.mark.anyio
async def test_refresh_survives_caller_cancellation() -> None:
    endpoint, auth, clock = fake(refresh_token="RT-CANARY")
    persisted: list[str] = []

    async def persist(response: TokenResponse) -> None:
        await anyio.sleep(0)
        persisted.append("yes")

    coordinator = RefreshCoordinator(TOKEN_URL, auth, persist, clock=clock)
    async with httpx.AsyncClient(transport=async_transport(endpoint)) as client:
        with anyio.move_on_after(0):
            await coordinator.refresh("grant-1", SecretStr("RT-CANARY"), client=client)
    assert persisted == ["yes"]
    assert endpoint.refresh_token == "RT-CANARY#1"


@pytest.mark.anyio
async def test_async_request_token_sleeps_as_asked() -> None:
    endpoint, auth, clock = fake(script=[httpx.Response(429, headers={"Retry-After": "3"})])
    sleeps = Sleeps()
    async with httpx.AsyncClient(transport=async_transport(endpoint)) as client:
        response = await request_token(
            client,
            TOKEN_URL,
            client_credentials_form(["system/Patient.rs"]),
            auth,
            clock=clock,
            sleep=sleeps.async_sleep,
        )
    assert sleeps.calls == [3.0]
    assert response.expires_in == 3600
