"""Microsoft sign-in refusals: state, errors, id_token attacks, leaks (security.md T04, T11, T14)."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from entra_helpers import (
    CLIENT_ID,
    CLIENT_SECRET,
    CLINICIAN_OID,
    OTHER_TENANT,
    REDIRECT_URI,
    TENANT,
    FakeClock,
    MemoryPendingStore,
)
from pydantic import SecretStr

from leaks import assert_no_leak
from teams_ehr.errors import (
    CrossTenantDeniedError,
    OAuthError,
    StateInvalidError,
    TeamsEhrError,
    TokenInvalidError,
)
from teams_ehr.smart.jwks import JwksCache
from teams_ehr.teams.identity import MicrosoftIdentity
from teams_ehr.teams.signin import (
    EntraAppConfig,
    PendingMicrosoftSignin,
    begin_microsoft_signin,
    complete_microsoft_signin,
    store_pending_signin,
    take_pending_signin,
)
from teams_ehr.testing.fake_entra import FakeEntra

SESSION = "browser-session-1"


@pytest.fixture
def config() -> EntraAppConfig:
    return EntraAppConfig(
        tenant_id=TENANT,
        client_id=CLIENT_ID,
        redirect_uri=REDIRECT_URI,
        client_secret=SecretStr(CLIENT_SECRET),
    )


@pytest.fixture
def jwks(clock: FakeClock) -> JwksCache:
    return JwksCache(clock=clock)


def _begin(config: EntraAppConfig, clock: FakeClock) -> tuple[str, PendingMicrosoftSignin]:
    return begin_microsoft_signin(
        config,
        purpose="clinician_binding",
        bound_launch="launch-handle",
        session_id=SESSION,
        now=clock(),
    )


def _complete(
    config: EntraAppConfig,
    fake: FakeEntra,
    jwks: JwksCache,
    clock: FakeClock,
    params: dict[str, str],
    pending: PendingMicrosoftSignin,
    *,
    session_id: str = SESSION,
) -> MicrosoftIdentity:
    with httpx.Client(transport=httpx.MockTransport(fake.handler)) as client:
        return complete_microsoft_signin(
            config, params, pending, session_id=session_id, jwks=jwks, client=client, now=clock()
        )


def _no_token_request(fake: FakeEntra) -> bool:
    return not any(r.url.path.endswith("/token") for r in fake.requests)


# -- state (T04): the code is never redeemed -------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda p: p.pop("state"), "state_missing"),
        (lambda p: p.update(state="bad state\n"), "state_malformed"),
        (lambda p: p.update(state="forged"), "state_mismatch"),
    ],
)
def test_state_missing_or_forged(
    config: EntraAppConfig,
    fake: FakeEntra,
    jwks: JwksCache,
    clock: FakeClock,
    mutate: Any,
    reason: str,
) -> None:
    url, pending = _begin(config, clock)
    params = fake.authorize_in_browser(url)
    mutate(params)
    with pytest.raises(StateInvalidError) as caught:
        _complete(config, fake, jwks, clock, params, pending)
    assert caught.value.reason == reason
    assert _no_token_request(fake)


def test_state_from_other_session_rejected(
    config: EntraAppConfig, fake: FakeEntra, jwks: JwksCache, clock: FakeClock
) -> None:
    url, pending = _begin(config, clock)
    params = fake.authorize_in_browser(url)
    with pytest.raises(StateInvalidError) as caught:
        _complete(config, fake, jwks, clock, params, pending, session_id="attacker-session")
    assert caught.value.reason == "state_other_session"
    assert _no_token_request(fake)


def test_state_expired(
    config: EntraAppConfig, fake: FakeEntra, jwks: JwksCache, clock: FakeClock
) -> None:
    url, pending = _begin(config, clock)
    params = fake.authorize_in_browser(url)
    clock.advance(600)
    with pytest.raises(StateInvalidError) as caught:
        _complete(config, fake, jwks, clock, params, pending)
    assert caught.value.reason == "state_expired"
    assert _no_token_request(fake)


def test_state_for_another_tenant_config(
    config: EntraAppConfig, fake: FakeEntra, jwks: JwksCache, clock: FakeClock
) -> None:
    url, pending = _begin(config, clock)
    params = fake.authorize_in_browser(url)
    other = config.model_copy(update={"tenant_id": OTHER_TENANT})
    with pytest.raises(StateInvalidError) as caught:
        _complete(other, fake, jwks, clock, params, pending)
    assert caught.value.reason == "state_other_tenant"


@pytest.mark.anyio
async def test_state_reused_or_unknown_or_missing(
    config: EntraAppConfig, fake: FakeEntra, clock: FakeClock
) -> None:
    store = MemoryPendingStore()
    url, pending = _begin(config, clock)
    await store_pending_signin(store, pending, org_id="org-a")
    params = fake.authorize_in_browser(url)
    await take_pending_signin(store, params, now=clock())
    with pytest.raises(StateInvalidError) as reused:
        await take_pending_signin(store, params, now=clock())
    assert reused.value.reason == "state_unknown"
    with pytest.raises(StateInvalidError) as missing:
        await take_pending_signin(store, {"code": "x"}, now=clock())
    assert missing.value.reason == "state_missing"
    with pytest.raises(StateInvalidError):
        await take_pending_signin(store, {"state": "s" * 600}, now=clock())


@pytest.mark.anyio
async def test_expired_pending_is_gone_from_the_store(
    config: EntraAppConfig, fake: FakeEntra, clock: FakeClock
) -> None:
    store = MemoryPendingStore()
    url, pending = _begin(config, clock)
    await store_pending_signin(store, pending, org_id="org-a")
    params = fake.authorize_in_browser(url)
    clock.advance(601)
    with pytest.raises(StateInvalidError):
        await take_pending_signin(store, params, now=clock())


# -- errors from Entra ----------------------------------------------------------------------------


def test_error_response_is_oauth_error(
    config: EntraAppConfig, fake: FakeEntra, jwks: JwksCache, clock: FakeClock
) -> None:
    url, pending = _begin(config, clock)
    params = fake.authorize_in_browser(url)
    params = {
        "state": params["state"],
        "error": "access_denied",
        "error_description": "AADSTS65004: CANARY-desc",
    }
    with pytest.raises(OAuthError) as caught:
        _complete(config, fake, jwks, clock, params, pending)
    assert caught.value.error == "access_denied"
    assert_no_leak(["CANARY-desc"], caught.value)
    params["error"] = "<script>CANARY</script>"
    with pytest.raises(OAuthError) as weird:
        _complete(config, fake, jwks, clock, params, pending)
    assert weird.value.error == "invalid_response"
    assert _no_token_request(fake)


def test_code_missing(
    config: EntraAppConfig, fake: FakeEntra, jwks: JwksCache, clock: FakeClock
) -> None:
    url, pending = _begin(config, clock)
    state = fake.authorize_in_browser(url)["state"]
    with pytest.raises(OAuthError) as caught:
        _complete(config, fake, jwks, clock, {"state": state}, pending)
    assert caught.value.reason == "missing_code"


def test_token_endpoint_refusal(
    config: EntraAppConfig, fake: FakeEntra, jwks: JwksCache, clock: FakeClock
) -> None:
    url, pending = _begin(config, clock)
    params = fake.authorize_in_browser(url)
    fake.register_app(CLIENT_ID, redirect_uris=[REDIRECT_URI], secret="rotated-secret")
    with pytest.raises(OAuthError) as caught:
        _complete(config, fake, jwks, clock, params, pending)
    assert caught.value.error == "invalid_client"


def test_code_redeemed_once(
    config: EntraAppConfig, fake: FakeEntra, jwks: JwksCache, clock: FakeClock
) -> None:
    url, pending = _begin(config, clock)
    params = fake.authorize_in_browser(url)
    _complete(config, fake, jwks, clock, params, pending)
    with pytest.raises(OAuthError) as caught:
        _complete(config, fake, jwks, clock, params, pending)
    assert caught.value.error == "invalid_grant"


# -- id_token attacks (T11) ------------------------------------------------------------------------

ATTACKS: list[tuple[dict[str, Any], dict[str, Any], type[TeamsEhrError], str | None]] = [
    ({"aud": "someone-else"}, {}, TokenInvalidError, "wrong_audience"),
    ({"aud": [CLIENT_ID, "someone-else"]}, {}, TokenInvalidError, "wrong_audience"),
    ({"aud": ["someone-else"]}, {}, TokenInvalidError, "wrong_audience"),
    (
        {"iss": "https://login.microsoftonline.com/common/v2.0"},
        {},
        TokenInvalidError,
        "wrong_issuer",
    ),
    (
        {"iss": "https://login.microsoftonline.com/{tenantid}/v2.0"},
        {},
        TokenInvalidError,
        "wrong_issuer",
    ),
    ({"iss": f"https://sts.windows.net/{TENANT}/"}, {}, TokenInvalidError, "wrong_issuer"),
    ({"iss": f"https://login.microsoftonline.com/{TENANT}"}, {}, TokenInvalidError, "wrong_issuer"),
    ({"tid": OTHER_TENANT}, {}, TokenInvalidError, "wrong_issuer"),
    ({"tid": None}, {}, TokenInvalidError, "missing_claim"),
    ({"tid": "common"}, {}, TokenInvalidError, "claim_mismatch"),
    ({"nonce": "replayed-nonce"}, {}, TokenInvalidError, "claim_mismatch"),
    ({"nonce": None}, {}, TokenInvalidError, "missing_claim"),
    ({"oid": None}, {}, TokenInvalidError, "missing_claim"),
    ({"oid": "not-a-guid"}, {}, TokenInvalidError, "bad_oid"),
    ({"exp": 1_000_000}, {}, TokenInvalidError, "expired"),
    ({"iat": 4_000_000_000}, {}, TokenInvalidError, "issued_in_future"),
    ({}, {"kid": "unknown-kid"}, TokenInvalidError, "unknown_kid"),
    ({}, {"crit": ["exp"]}, TokenInvalidError, "crit_unsupported"),
    ({}, {"alg": "none"}, TokenInvalidError, "alg_not_allowed"),
]


@pytest.mark.parametrize(("claims", "header", "error", "reason"), ATTACKS)
def test_id_token_attacks(
    config: EntraAppConfig,
    fake: FakeEntra,
    jwks: JwksCache,
    clock: FakeClock,
    claims: dict[str, Any],
    header: dict[str, Any],
    error: type[TeamsEhrError],
    reason: str | None,
) -> None:
    if header.get("alg") == "none":
        fake.override_next_id_token(claims, alg="none")
    else:
        fake.override_next_id_token(claims, header=header)
    url, pending = _begin(config, clock)
    with pytest.raises(error) as caught:
        _complete(config, fake, jwks, clock, fake.authorize_in_browser(url), pending)
    assert caught.value.reason == reason


def test_foreign_tenant_user_is_cross_tenant(
    config: EntraAppConfig, fake: FakeEntra, jwks: JwksCache, clock: FakeClock
) -> None:
    """A validly signed id_token of another tenant (iss and tid agree) → CrossTenantDenied."""
    fake.sign_in_as(CLINICIAN_OID, tenant_id=OTHER_TENANT)
    url, pending = _begin(config, clock)
    with pytest.raises(CrossTenantDeniedError):
        _complete(config, fake, jwks, clock, fake.authorize_in_browser(url), pending)


def test_id_token_missing(
    config: EntraAppConfig, fake: FakeEntra, jwks: JwksCache, clock: FakeClock
) -> None:
    url, pending = _begin(config, clock)
    params = fake.authorize_in_browser(url)

    def without_id_token(request: httpx.Request) -> httpx.Response:
        response = fake.handler(request)
        if request.url.path.endswith("/token"):
            body = response.json()
            body.pop("id_token")
            return httpx.Response(200, json=body)
        return response

    with (
        httpx.Client(transport=httpx.MockTransport(without_id_token)) as client,
        pytest.raises(TokenInvalidError) as caught,
    ):
        complete_microsoft_signin(
            config, params, pending, session_id=SESSION, jwks=jwks, client=client, now=clock()
        )
    assert caught.value.reason == "missing_id_token"


# -- leaks (T08) -----------------------------------------------------------------------------------


def test_no_secret_in_logs_errors_or_reprs(
    config: EntraAppConfig,
    fake: FakeEntra,
    jwks: JwksCache,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "teams_ehr"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    responses: list[httpx.Response] = []

    def recording(request: httpx.Request) -> httpx.Response:
        response = fake.handler(request)
        responses.append(response)
        return response

    url, pending = _begin(config, clock)
    params = fake.authorize_in_browser(url)
    with httpx.Client(transport=httpx.MockTransport(recording)) as client:
        identity = complete_microsoft_signin(
            config, params, pending, session_id=SESSION, jwks=jwks, client=client, now=clock()
        )
        errors: list[Exception] = []
        for bad in (
            {**params, "state": "wrong"},
            {**params},  # the code is spent: invalid_grant
            {"state": params["state"], "error": "access_denied", "error_description": "x"},
        ):
            try:
                complete_microsoft_signin(
                    config, bad, pending, session_id=SESSION, jwks=jwks, client=client, now=clock()
                )
            except TeamsEhrError as exc:
                errors.append(exc)
        fake.override_next_id_token({"aud": "other"})
        url2, pending2 = _begin(config, clock)
        try:
            complete_microsoft_signin(
                config,
                fake.authorize_in_browser(url2),
                pending2,
                session_id=SESSION,
                jwks=jwks,
                client=client,
                now=clock(),
            )
        except TeamsEhrError as exc:
            errors.append(exc)
    assert len(errors) == 4
    tokens = [r.json() for r in responses if r.request.url.path.endswith("/token")]
    canaries = [
        params["code"],
        params["state"],
        pending.nonce.get_secret_value(),
        pending.code_verifier.get_secret_value(),
        CLIENT_SECRET,
        "launch-handle",
        "NAME-CANARY",
        "UPN-CANARY",
        *(t["id_token"] for t in tokens if "id_token" in t),
        *(t["access_token"] for t in tokens if "access_token" in t),
    ]
    assert tokens[0]["id_token"]
    assert_no_leak(canaries, caplog.text, identity, pending, config, *errors)
    assert_no_leak([CLIENT_SECRET], config.model_dump())
