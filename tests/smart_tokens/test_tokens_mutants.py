"""Exact behaviour of token requests, backend tokens and refresh (smart/tokens.py; A5, A8, T15).

RFC 6749 §5.1/§5.2 and SMART App Launch "Refresh access token": each test pins one rule of the
module docstring (what is retried, how long it waits, how errors map, what a refresh keys on)
with exact values, so a changed constant, dropped argument or weakened comparison is noticed.
"""

from __future__ import annotations

from datetime import timedelta
from functools import cache
from typing import Any

import anyio
import httpx
import pytest
from pydantic import SecretStr, ValidationError
from smart_tokens_fakes import T0, TOKEN_URL, FakeClock, FakeTokenEndpoint

from teams_ehr.errors import ConfigurationError, OAuthError, UsageError
from teams_ehr.keys import LocalSigner
from teams_ehr.sansio import run_sync
from teams_ehr.smart.client_auth import PrivateKeyJwt
from teams_ehr.smart.tokens import (
    BackendServicesTokenSource,
    BackendTokenSources,
    RefreshCoordinator,
    TokenResponse,
    authorization_code_form,
    client_credentials_form,
    refresh_form,
    request_token,
    request_token_sync,
    token_request_flow,
)

CLIENT_ID = "client-abc"


@cache
def signer() -> LocalSigner:
    return LocalSigner.generate("ES384")


def fake(**kwargs: Any) -> tuple[FakeTokenEndpoint, PrivateKeyJwt, FakeClock]:
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(CLIENT_ID, public_jwk=signer().public_jwk(), clock=clock, **kwargs)
    return endpoint, PrivateKeyJwt(CLIENT_ID, signer()), clock


def code_form() -> dict[str, str]:
    return authorization_code_form("CODE", "https://app.test/cb", "v" * 43)


def cc_form() -> dict[str, str]:
    return client_credentials_form(["system/Patient.rs"])


def run(
    endpoint: FakeTokenEndpoint,
    form: dict[str, str],
    auth: Any,
    clock: FakeClock,
    sleeps: list[float] | None = None,
    **kwargs: Any,
) -> TokenResponse:
    calls = sleeps if sleeps is not None else []
    with httpx.Client(transport=httpx.MockTransport(endpoint)) as client:
        return request_token_sync(
            client, TOKEN_URL, form, auth, clock=clock, sleep=calls.append, **kwargs
        )


def refused(endpoint: FakeTokenEndpoint, form: dict[str, str], **kwargs: Any) -> OAuthError:
    _, auth, clock = fake()
    endpoint.clock = clock
    with pytest.raises(OAuthError) as info:
        run(endpoint, form, auth, clock, **kwargs)
    return info.value


# -- TokenResponse and forms ----------------------------------------------------------------


def test_token_response_repr_exact() -> None:
    response = TokenResponse.model_validate(
        {
            "access_token": "AT",
            "token_type": "bearer",
            "expires_in": 3600,
            "scope": "a b",
            "patient": "P",
            "encounter": "E",
        }
    )
    assert repr(response) == (
        "TokenResponse(token_type='Bearer', expires_in=3600, scope='a b', "
        "extra_keys=['encounter', 'patient'])"
    )
    assert response.granted_scopes == {"a", "b"}


@pytest.mark.parametrize("token_type", ["Bearer", "BEARER", "bearer"])
def test_token_type_normalized(token_type: str) -> None:
    response = TokenResponse.model_validate({"access_token": "AT", "token_type": token_type})
    assert response.token_type == "Bearer"


def test_negative_expires_in_refused() -> None:
    with pytest.raises(ValidationError, match="expires_in"):
        TokenResponse.model_validate(
            {"access_token": "AT", "token_type": "bearer", "expires_in": -1}
        )
    ok = TokenResponse.model_validate(
        {"access_token": "AT", "token_type": "bearer", "expires_in": 0}
    )
    assert ok.expires_in == 0


def test_forms_exact() -> None:
    assert authorization_code_form("C", "https://a/cb", "V") == {
        "grant_type": "authorization_code",
        "code": "C",
        "redirect_uri": "https://a/cb",
        "code_verifier": "V",
    }
    assert refresh_form("RT") == {"grant_type": "refresh_token", "refresh_token": "RT"}
    assert refresh_form(SecretStr("RT"), "") == {
        "grant_type": "refresh_token",
        "refresh_token": "RT",
    }
    assert refresh_form("RT", "openid") == {
        "grant_type": "refresh_token",
        "refresh_token": "RT",
        "scope": "openid",
    }


@pytest.mark.parametrize("scopes", [" system/a.rs", "system/a.rs ", "a b", "\tsystem/a.rs"])
def test_client_credentials_scope_refusals(scopes: str) -> None:
    for value in ([scopes], ["system/b.rs", scopes]):
        with pytest.raises(UsageError) as info:
            client_credentials_form(value)
        assert info.value.reason == "bad_scopes"
        assert str(info.value) == "scopes must be a non-empty list of single scopes"


def test_client_credentials_form_exact() -> None:
    assert client_credentials_form(("system/a.rs",)) == {
        "grant_type": "client_credentials",
        "scope": "system/a.rs",
    }


# -- the request ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_retry_after_seconds": -0.1},
        {"max_retry_after_seconds": 60.1},
    ],
)
def test_bad_retry_settings(kwargs: dict[str, Any]) -> None:
    _, auth, clock = fake()
    flow = token_request_flow(TOKEN_URL, code_form(), auth, clock=clock, **kwargs)
    with pytest.raises(ConfigurationError) as info:
        next(flow)
    assert info.value.reason == "bad_retry_settings"
    assert str(info.value) == "bad retry settings"


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": 1}, {"max_retry_after_seconds": 0}, {"max_retry_after_seconds": 60}]
)
def test_retry_setting_edges_accepted(kwargs: dict[str, Any]) -> None:
    _, auth, clock = fake()
    request = next(token_request_flow(TOKEN_URL, code_form(), auth, clock=clock, **kwargs))
    assert request.method == "POST"


def test_request_shape() -> None:
    _, auth, clock = fake()
    request = next(token_request_flow(TOKEN_URL, code_form(), auth, clock=clock))
    assert str(request.url) == TOKEN_URL
    assert request.headers["Accept"] == "application/json"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"


class _Clash:
    def token_request_auth(self, token_endpoint: str, *, now: Any) -> Any:
        return {"code": "x"}, {}


def test_auth_may_not_override_the_form() -> None:
    flow = token_request_flow(TOKEN_URL, code_form(), _Clash(), clock=FakeClock())  # type: ignore[arg-type]
    with pytest.raises(UsageError) as info:
        next(flow)
    assert info.value.reason == "form_clash"
    assert str(info.value) == "client authentication overrides a form field"


def test_max_attempts_reaches_the_flow() -> None:
    endpoint, auth, clock = fake(script=[httpx.Response(503)] * 5)
    with pytest.raises(OAuthError):
        run(endpoint, cc_form(), auth, clock, max_attempts=1)
    assert len(endpoint.posts) == 1
    endpoint, auth, clock = fake(script=[httpx.Response(503)] * 5)
    with pytest.raises(OAuthError):
        run(endpoint, cc_form(), auth, clock, max_attempts=4)
    assert len(endpoint.posts) == 4


@pytest.mark.anyio
async def test_async_max_attempts_reaches_the_flow() -> None:
    endpoint, auth, clock = fake(script=[httpx.Response(503)] * 5)
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async with httpx.AsyncClient(transport=httpx.MockTransport(endpoint)) as client:
        with pytest.raises(OAuthError):
            await request_token(
                client, TOKEN_URL, cc_form(), auth, clock=clock, max_attempts=2, sleep=sleep
            )
    assert len(endpoint.posts) == 2
    assert sleeps == [1.0]


@pytest.mark.parametrize(
    ("header", "wait"),
    [
        ("0", 0.0),
        ("7", 7.0),
        (" 7 ", 7.0),
        ("Sun, 01 Mar 2026 11:59:00 GMT", 0.0),  # in the past: no wait, never negative
        ("Sun, 01 Mar 2026 12:00:05 GMT", 5.0),
        ("Sun, 01 Mar 2026 12:00:05 -0000", 1.0),  # no zone (RFC 5322 "-0000"): backoff
        ("soon", 1.0),
        ("", 1.0),
        ("-3", 1.0),
    ],
)
def test_retry_after_values(header: str, wait: float) -> None:
    endpoint, auth, clock = fake(script=[httpx.Response(503, headers={"Retry-After": header})])
    sleeps: list[float] = []
    run(endpoint, cc_form(), auth, clock, sleeps)
    assert sleeps == ([wait] if wait else [])  # the drivers skip a zero wait
    assert len(endpoint.posts) == 2


@pytest.mark.parametrize(("seconds", "retried"), [("30", True), ("31", False)])
def test_retry_after_cap_edge(seconds: str, retried: bool) -> None:
    endpoint, auth, clock = fake(script=[httpx.Response(503, headers={"Retry-After": seconds})])
    if retried:
        run(endpoint, cc_form(), auth, clock)
    else:
        with pytest.raises(OAuthError):
            run(endpoint, cc_form(), auth, clock)
    assert len(endpoint.posts) == (2 if retried else 1)


def test_backoff_doubles_per_attempt() -> None:
    endpoint, auth, clock = fake(script=[httpx.Response(502)] * 3)
    sleeps: list[float] = []
    run(endpoint, cc_form(), auth, clock, sleeps, max_attempts=4)
    assert sleeps == [1.0, 2.0, 4.0]


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_client_credentials_retries(status: int) -> None:
    endpoint, auth, clock = fake(script=[httpx.Response(status)])
    assert run(endpoint, cc_form(), auth, clock).token_type == "Bearer"
    assert len(endpoint.posts) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 500, 501, 505])
def test_not_retried(status: int) -> None:
    endpoint, auth, clock = fake(script=[httpx.Response(status)])
    with pytest.raises(OAuthError) as info:
        run(endpoint, cc_form(), auth, clock)
    assert info.value.status_code == status
    assert len(endpoint.posts) == 1


@pytest.mark.parametrize(("status", "retried"), [(429, False), (502, False), (503, True)])
def test_refresh_is_single_use(status: int, retried: bool) -> None:
    endpoint, auth, clock = fake(refresh_token="RT", script=[httpx.Response(status)])
    form = refresh_form("RT")
    if retried:
        run(endpoint, form, auth, clock)
    else:
        with pytest.raises(OAuthError):
            run(endpoint, form, auth, clock)
    assert len(endpoint.posts) == (2 if retried else 1)


# -- error mapping --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (429, "temporarily_unavailable"),
        (503, "temporarily_unavailable"),
        (500, "server_error"),
        (502, "server_error"),
        (499, "invalid_response"),
        (400, "invalid_response"),
    ],
)
def test_error_without_a_usable_body(status: int, error: str) -> None:
    endpoint, _, _ = fake(script=[httpx.Response(status, content=b"<html>")])
    exc = refused(endpoint, code_form(), max_attempts=1)
    assert (exc.error, exc.status_code, exc.description) == (error, status, None)
    assert exc.reason == "oauth"
    assert str(exc) == f"OAuth error: {error}"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"error": "x" * 64}, "x" * 64),
        ({"error": "x" * 65}, "invalid_response"),
        ({"error": "a.b:c-d_e"}, "a.b:c-d_e"),
        ({"error": "a b"}, "invalid_response"),
        ({"error": ""}, "invalid_response"),
        ({"error": 5}, "invalid_response"),
        ({"error_description": "d"}, "invalid_response"),
    ],
)
def test_error_code_shape(body: dict[str, Any], error: str) -> None:
    endpoint, _, _ = fake(script=[httpx.Response(400, json=body)])
    assert refused(endpoint, code_form()).error == error


def test_description_kept_and_capped() -> None:
    body = {"error": "invalid_grant", "error_description": "d" * 600}
    endpoint, _, _ = fake(script=[httpx.Response(400, json=body)])
    assert refused(endpoint, code_form()).description == "d" * 500
    endpoint, _, _ = fake(script=[httpx.Response(400, json={"error": "e", "error_description": 5})])
    assert refused(endpoint, code_form()).description is None


def test_200_error_body_maps_to_its_error() -> None:
    body = {"error": "invalid_scope", "error_description": "no"}
    endpoint, _, _ = fake(script=[httpx.Response(200, json=body)])
    exc = refused(endpoint, code_form())
    assert (exc.error, exc.status_code, exc.description) == ("invalid_scope", 200, "no")


@pytest.mark.parametrize(
    "body",
    [b"{", b"[1]", b'{"access_token": "A"}', b'{"access_token": "A", "token_type": "mac"}'],
)
def test_invalid_200_bodies(body: bytes) -> None:
    endpoint, _, _ = fake(script=[httpx.Response(200, content=body)])
    exc = refused(endpoint, code_form())
    assert (exc.error, exc.status_code) == ("invalid_response", 200)
    assert exc.__cause__ is None


def test_access_token_with_an_error_key_is_a_success() -> None:
    body = {"access_token": "A", "token_type": "bearer", "error": "ignored"}
    endpoint, auth, clock = fake(script=[httpx.Response(200, json=body)])
    assert run(endpoint, code_form(), auth, clock).access_token.get_secret_value() == "A"


def test_each_attempt_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    endpoint, auth, clock = fake(script=[httpx.Response(503)])
    with caplog.at_level("INFO", logger="teams_ehr.smart.tokens"):
        run(endpoint, cc_form(), auth, clock)
    messages = [r.getMessage() for r in caplog.records if r.name == "teams_ehr.smart.tokens"]
    assert messages == [
        f"token request to {TOKEN_URL}: HTTP 503 (attempt 1)",
        f"token request to {TOKEN_URL}: HTTP 200 (attempt 2)",
    ]


# -- backend services -----------------------------------------------------------------------


def _transport(endpoint: FakeTokenEndpoint) -> httpx.MockTransport:
    async def handler(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0)
        return endpoint(request)

    return httpx.MockTransport(handler)


@pytest.mark.anyio
async def test_backend_source_defaults_and_lifetime_edges() -> None:
    endpoint, auth, clock = fake(expires_in=1000)
    async with httpx.AsyncClient(transport=_transport(endpoint)) as http:
        source = BackendServicesTokenSource(
            TOKEN_URL, auth, ["system/a.rs"], http=http, clock=clock
        )
        assert source.granted_scopes == frozenset()
        await source.get_token()
        assert source.granted_scopes == {"system/a.rs"}
        clock.now = T0 + timedelta(seconds=940) - timedelta(microseconds=1)
        await source.get_token()
        assert len(endpoint.posts) == 1
        clock.now = T0 + timedelta(seconds=940)
        await source.get_token()
        assert len(endpoint.posts) == 2


@pytest.mark.anyio
async def test_backend_source_short_lifetime_renews_at_half() -> None:
    endpoint, auth, clock = fake(expires_in=100)
    async with httpx.AsyncClient(transport=_transport(endpoint)) as http:
        source = BackendServicesTokenSource(
            TOKEN_URL, auth, ["system/a.rs"], http=http, clock=clock
        )
        await source.get_token()
        clock.now = T0 + timedelta(seconds=50) - timedelta(microseconds=1)
        await source.get_token()
        assert len(endpoint.posts) == 1
        clock.now = T0 + timedelta(seconds=50)
        await source.get_token()
        assert len(endpoint.posts) == 2


@pytest.mark.anyio
async def test_backend_source_default_lifetime_without_expires_in() -> None:
    endpoint, auth, clock = fake()
    body = {"access_token": "A", "token_type": "bearer"}
    endpoint.script = [httpx.Response(200, json=body), httpx.Response(200, json=body)]
    async with httpx.AsyncClient(transport=_transport(endpoint)) as http:
        source = BackendServicesTokenSource(
            TOKEN_URL,
            auth,
            ["system/a.rs"],
            http=http,
            clock=clock,
            default_lifetime_seconds=400,
            refresh_margin_seconds=10,
        )
        await source.get_token()
        clock.now = T0 + timedelta(seconds=390) - timedelta(microseconds=1)
        await source.get_token()
        assert len(endpoint.posts) == 1
        clock.now = T0 + timedelta(seconds=390)
        await source.get_token()
        assert len(endpoint.posts) == 2


@pytest.mark.anyio
async def test_backend_source_sleeps_through_the_given_sleep() -> None:
    endpoint, auth, clock = fake(script=[httpx.Response(503, headers={"Retry-After": "4"})])
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async with httpx.AsyncClient(transport=_transport(endpoint)) as http:
        source = BackendServicesTokenSource(
            TOKEN_URL, auth, ["system/a.rs"], http=http, clock=clock, sleep=sleep
        )
        assert (await source.get_token()).get_secret_value() == "ACCESS-CANARY-0001-1"
    assert sleeps == [4.0]


@pytest.mark.anyio
async def test_backend_source_without_client() -> None:
    _, auth, clock = fake()
    source = BackendServicesTokenSource(TOKEN_URL, auth, ["system/a.rs"], clock=clock)
    with pytest.raises(UsageError) as info:
        await source.get_token()
    assert str(info.value) == "no HTTP client: pass http= or a client"


def test_backend_source_repr() -> None:
    _, auth, _ = fake()
    source = BackendServicesTokenSource(TOKEN_URL + "?secret=1", auth, ["system/a.rs"])
    assert repr(source) == f"<BackendServicesTokenSource endpoint={TOKEN_URL}>"


@pytest.mark.anyio
async def test_backend_sources_registry() -> None:
    _, auth, _ = fake()
    sources = BackendTokenSources()
    made: list[str] = []

    async def create() -> BackendServicesTokenSource:
        made.append("x")
        return BackendServicesTokenSource(TOKEN_URL, auth, ["system/a.rs"])

    sources.forget("never-made")
    first = await sources.get("a", create)
    assert await sources.get("a", create) is first
    assert len(sources) == 1
    assert repr(sources) == "<BackendTokenSources keys=1>"
    sources.forget("a")
    assert len(sources) == 0
    assert await sources.get("a", create) is not first
    assert made == ["x", "x"]


# -- refresh --------------------------------------------------------------------------------


async def _noop(response: TokenResponse) -> None:
    return None


@pytest.mark.anyio
async def test_refresh_uses_the_constructor_client_and_scope() -> None:
    endpoint, auth, clock = fake(refresh_token="RT")
    async with httpx.AsyncClient(transport=_transport(endpoint)) as http:
        coordinator = RefreshCoordinator(TOKEN_URL, auth, _noop, http=http, clock=clock)
        response = await coordinator.refresh("g", SecretStr("RT"), scope="launch/patient")
    assert endpoint.posts[0]["scope"] == "launch/patient"
    assert response.scope == "launch/patient"


@pytest.mark.anyio
async def test_refresh_without_client() -> None:
    _, auth, clock = fake()
    coordinator = RefreshCoordinator(TOKEN_URL, auth, _noop, clock=clock)
    with pytest.raises(UsageError) as info:
        await coordinator.refresh("g", SecretStr("RT"))
    assert str(info.value) == "no HTTP client: pass http= or client="
    assert repr(coordinator) == f"<RefreshCoordinator endpoint={TOKEN_URL}>"


@pytest.mark.anyio
async def test_invalid_grant_keeps_its_fields() -> None:
    body = {"error": "invalid_grant", "error_description": "expired"}
    endpoint, auth, clock = fake(script=[httpx.Response(400, json=body)])
    async with httpx.AsyncClient(transport=_transport(endpoint)) as http:
        coordinator = RefreshCoordinator(TOKEN_URL, auth, _noop, http=http, clock=clock)
        with pytest.raises(OAuthError) as info:
            await coordinator.refresh("g", SecretStr("RT"))
    error = info.value
    assert (error.error, error.description, error.status_code) == ("invalid_grant", "expired", 400)
    assert error.reason == "reauthorization_required"
    assert error.__cause__ is None


@pytest.mark.anyio
async def test_other_refresh_errors_pass_through() -> None:
    body = {"error": "invalid_client"}
    endpoint, auth, clock = fake(script=[httpx.Response(401, json=body)])
    async with httpx.AsyncClient(transport=_transport(endpoint)) as http:
        coordinator = RefreshCoordinator(TOKEN_URL, auth, _noop, http=http, clock=clock)
        with pytest.raises(OAuthError) as info:
            await coordinator.refresh("g", SecretStr("RT"))
    assert (info.value.error, info.value.reason) == ("invalid_client", "oauth")


@pytest.mark.anyio
async def test_refresh_flights_are_per_grant() -> None:
    endpoint, auth, clock = fake()
    bodies = [
        httpx.Response(200, json={"access_token": f"A{n}", "token_type": "bearer"}) for n in (1, 2)
    ]
    endpoint.script = bodies
    results: dict[str, str] = {}
    async with httpx.AsyncClient(transport=_transport(endpoint)) as http:
        coordinator = RefreshCoordinator(TOKEN_URL, auth, _noop, http=http, clock=clock)

        async def one(grant: str) -> None:
            response = await coordinator.refresh(grant, SecretStr(f"RT-{grant}"))
            results[grant] = response.access_token.get_secret_value()

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, "g1")
            tg.start_soon(one, "g2")
    assert len(endpoint.posts) == 2
    assert sorted(results.values()) == ["A1", "A2"]
    assert {p["refresh_token"] for p in endpoint.posts} == {"RT-g1", "RT-g2"}


# -- defaults of the drivers and registries ---------------------------------------------------


def test_flow_default_is_three_attempts() -> None:
    endpoint, auth, clock = fake(script=[httpx.Response(503)] * 5)
    flow = token_request_flow(TOKEN_URL, cc_form(), auth, clock=clock)
    with httpx.Client(transport=httpx.MockTransport(endpoint)) as client, pytest.raises(OAuthError):
        run_sync(flow, client, sleep=lambda seconds: None)
    assert len(endpoint.posts) == 3


@pytest.mark.anyio
async def test_async_default_is_three_attempts() -> None:
    endpoint, auth, clock = fake(script=[httpx.Response(503)] * 5)

    async def sleep(seconds: float) -> None:
        return None

    async with httpx.AsyncClient(transport=httpx.MockTransport(endpoint)) as client:
        with pytest.raises(OAuthError):
            await request_token(client, TOKEN_URL, cc_form(), auth, clock=clock, sleep=sleep)
    assert len(endpoint.posts) == 3


def test_sync_default_is_three_attempts() -> None:
    endpoint, auth, clock = fake(script=[httpx.Response(503)] * 5)
    with pytest.raises(OAuthError):
        run(endpoint, cc_form(), auth, clock)
    assert len(endpoint.posts) == 3


@pytest.mark.anyio
async def test_backend_source_default_lifetime_is_300_seconds() -> None:
    endpoint, auth, clock = fake()
    body = {"access_token": "A", "token_type": "bearer"}
    endpoint.script = [httpx.Response(200, json=body), httpx.Response(200, json=body)]
    async with httpx.AsyncClient(transport=_transport(endpoint)) as http:
        source = BackendServicesTokenSource(
            TOKEN_URL, auth, ["system/a.rs"], http=http, clock=clock
        )
        await source.get_token()
        clock.now = T0 + timedelta(seconds=240) - timedelta(microseconds=1)
        await source.get_token()
        assert len(endpoint.posts) == 1
        clock.now = T0 + timedelta(seconds=240)
        await source.get_token()
        assert len(endpoint.posts) == 2


@pytest.mark.anyio
async def test_backend_sources_keys_do_not_block_each_other() -> None:
    """``create`` for one key may wait on another key's ``create`` (single-flight is per key)."""
    _, auth, _ = fake()
    sources = BackendTokenSources()
    b_created = anyio.Event()

    async def create_a() -> BackendServicesTokenSource:
        await b_created.wait()
        return BackendServicesTokenSource(TOKEN_URL, auth, ["system/a.rs"])

    async def create_b() -> BackendServicesTokenSource:
        b_created.set()
        return BackendServicesTokenSource(TOKEN_URL, auth, ["system/b.rs"])

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sources.get, "a", create_a)
            await anyio.sleep(0.01)
            tg.start_soon(sources.get, "b", create_b)
    assert len(sources) == 2
