"""The composed SMART launch at its edges, from ``nox -s mutants -- smart/flows.py``.

SMART App Launch 2.2 app-launch.md end to end, with every caller option shown to reach the wire:
the ``Epic-Client-ID`` header on both discovery documents, ``allow_http`` and the legacy
``/metadata`` opt-in, explicit scopes, the approval snapshot (threat T03), the retry budget of the
token request, the id_token algorithms and the caches' clock (threats T01, T04, T12). Refusals are
pinned by reason *and* text (an integrator reads both), and OpenID Connect Core 1.0 §3.1.3.7's
nonce and issuer rules by what the sync client, the async client and the bare flows each do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import anyio
import httpx
import pytest

from teams_ehr.errors import (
    ConfigurationError,
    DiscoveryError,
    MetadataMismatchError,
    OAuthError,
    PkceUnsupportedError,
    TokenInvalidError,
)
from teams_ehr.keys import LocalSigner
from teams_ehr.sansio import run_sync
from teams_ehr.smart.authorize import PendingAuthorization, SmartClientConfig
from teams_ehr.smart.client_auth import PrivateKeyJwt
from teams_ehr.smart.discovery import DiscoveryCache, DiscoverySnapshot, discovery_flow
from teams_ehr.smart.flows import (
    AsyncSmartLaunchClient,
    LaunchResult,
    LaunchStart,
    SmartLaunchClient,
    authorize_flow,
    complete_launch_flow,
    finish_launch,
    id_token_profile,
    provider_launch_flow,
    redeem_flow,
    required_id_token,
    standalone_launch_flow,
)
from teams_ehr.smart.jwks import JwksCache
from teams_ehr.smart.launch import parse_launch_request
from teams_ehr.smart.tokens import TokenResponse
from teams_ehr.store.protocol import IssuerBinding
from teams_ehr.testing.fake_ehr import FakeEhr

REDIRECT = "https://app.test/callback"
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
EXTRA_SCOPES = ("openid", "fhirUser", "patient/Patient.rs")
Entry = Literal["provider", "standalone", "sync", "async"]
ENTRIES: tuple[Entry, ...] = ("provider", "standalone", "sync", "async")


class _Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def key() -> LocalSigner:
    return LocalSigner.generate("RS384")


def _fake(key: LocalSigner, base: str = "https://ehr.test/fhir/r4", **kw: Any) -> FakeEhr:
    redirect = kw.pop("redirect", REDIRECT)
    fake = FakeEhr(base, clock=kw.pop("clock", lambda: NOW), **kw)
    fake.register_client("app", redirect_uris=[redirect], jwks={"keys": [key.public_jwk()]})
    return fake


@pytest.fixture
def fake(key: LocalSigner) -> FakeEhr:
    return _fake(key)


@pytest.fixture
def http(fake: FakeEhr) -> Iterator[httpx.Client]:
    with httpx.Client(transport=httpx.MockTransport(fake.handler)) as client:
        yield client


def _config(**kw: Any) -> SmartClientConfig:
    return SmartClientConfig(client_id="app", redirect_uri=kw.pop("redirect_uri", REDIRECT), **kw)


def _start(
    entry: Entry,
    fake: FakeEhr,
    config: SmartClientConfig,
    key: LocalSigner,
    *,
    approved: DiscoverySnapshot | None = None,
    scopes: tuple[str, ...] | None = None,
    clock: Callable[[], datetime] = lambda: NOW,
) -> LaunchStart:
    """Start one launch through ``entry``: the two sans-IO flows or the two clients."""
    auth = PrivateKeyJwt("app", key)
    launch = None if entry == "standalone" else fake.issue_launch()
    with httpx.Client(transport=httpx.MockTransport(fake.handler)) as http:
        if entry == "provider":
            params = {"iss": fake.base_url, "launch": launch or ""}
            request = parse_launch_request(params, allow_http=config.allow_http)
            binding = IssuerBinding(fake.base_url, "org-1", "test")
            flow = provider_launch_flow(
                config, request, binding, session_id="s", now=NOW, approved=approved, scopes=scopes
            )
            return run_sync(flow, http)
        if entry == "standalone":
            flow = standalone_launch_flow(
                config,
                fake.base_url,
                "org-1",
                session_id="s",
                now=NOW,
                approved=approved,
                scopes=scopes,
            )
            return run_sync(flow, http)
        if entry == "sync":
            client = SmartLaunchClient(http, config, auth, clock=clock)
            return client.start_launch(
                fake.base_url,
                "org-1",
                launch=launch,
                session_id="s",
                approved=approved,
                scopes=scopes,
            )

    async def run() -> LaunchStart:
        async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as ahttp:
            client = AsyncSmartLaunchClient(ahttp, config, auth, clock=clock)
            return await client.start_launch(
                fake.base_url,
                "org-1",
                launch=launch,
                session_id="s",
                approved=approved,
                scopes=scopes,
            )

    return anyio.run(run)


def _query(start: LaunchStart) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(start[0].url).query))


# -- discovery: the Epic-Client-ID header, allow_http, the /metadata opt-in ----------------------


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("header", [True, False])
def test_epic_client_id_is_sent_on_both_discovery_documents_only_when_configured(
    key: LocalSigner, entry: Entry, header: bool
) -> None:
    """fhir.epic.com/Documentation?docId=oauth2: ``Epic-Client-ID`` on discovery, per config."""
    fake = _fake(key)
    fake.smart_configuration_overrides.update(issuer=None)  # openid-configuration is fetched too
    _, pending = _start(entry, fake, _config(epic_client_id_header=header), key)
    documents = fake.calls("smart-configuration") + fake.calls("openid-configuration")
    assert len(documents) == 2
    expected = "app" if header else None
    assert [r.headers.get("Epic-Client-ID") for r in documents] == [expected, expected]
    assert pending.oidc_issuer == fake.oidc_issuer


@pytest.mark.parametrize("entry", ENTRIES)
def test_an_http_base_is_followed_through_every_document_only_with_allow_http(
    key: LocalSigner, entry: Entry
) -> None:
    base, callback = "http://127.0.0.1:8080/fhir/r4", "http://127.0.0.1:8081/callback"
    fake = _fake(key, base, redirect=callback)
    fake.smart_configuration_overrides.update(jwks_uri=None)
    config = _config(redirect_uri=callback, allow_http=True)
    redirect, pending = _start(entry, fake, config, key)
    assert (pending.issuer, pending.jwks_uri) == (base, fake.jwks_url)
    assert redirect.url.startswith("http://127.0.0.1:8080/")
    assert len(fake.calls("openid-configuration")) == 1


@pytest.mark.parametrize("entry", ["provider", "standalone"])
def test_a_legacy_metadata_only_server_needs_the_opt_in(key: LocalSigner, entry: Entry) -> None:
    fake = _fake(key)
    fake.serve_well_known = False
    with pytest.raises(PkceUnsupportedError):
        _start(entry, fake, _config(), key)
    redirect, pending = _start(entry, fake, _config(allow_missing_pkce_metadata=True), key)
    assert _query((redirect, pending))["code_challenge_method"] == "S256"


# -- which OIDC documents are fetched --------------------------------------------------------------


@pytest.mark.parametrize(
    ("missing", "scopes", "fetched"),
    [
        ({"issuer": None}, None, 1),
        ({"jwks_uri": None}, None, 1),
        ({"issuer": None, "jwks_uri": None}, None, 1),
        ({}, None, 0),
        ({"issuer": None, "jwks_uri": None}, ("launch", "patient/Patient.rs"), 0),
    ],
    ids=["no-issuer", "no-jwks_uri", "neither", "both", "no-openid"],
)
def test_openid_configuration_is_fetched_when_either_member_is_missing(
    key: LocalSigner, missing: dict[str, None], scopes: tuple[str, ...] | None, fetched: int
) -> None:
    fake = _fake(key)
    fake.smart_configuration_overrides.update(missing)
    _, pending = _start("provider", fake, _config(), key, scopes=scopes)
    assert len(fake.calls("openid-configuration")) == fetched
    if scopes is None:
        assert (pending.oidc_issuer, pending.jwks_uri) == (fake.oidc_issuer, fake.jwks_url)
    else:
        assert (pending.oidc_issuer, pending.jwks_uri) == (None, None)


# -- scopes and the approval snapshot reach every entry --------------------------------------------


@pytest.mark.parametrize("entry", ENTRIES)
def test_explicit_scopes_replace_the_configured_ones(key: LocalSigner, entry: Entry) -> None:
    fake = _fake(key)
    start = _start(entry, fake, _config(), key, scopes=EXTRA_SCOPES)
    granted = set(start[1].scope.split())
    assert granted - {"launch"} == set(EXTRA_SCOPES)
    assert set(_query(start)["scope"].split()) == granted


def test_authorize_flow_uses_explicit_scopes_for_the_oidc_decision(
    fake: FakeEhr, http: httpx.Client
) -> None:
    smart = run_sync(discovery_flow(fake.base_url), http)
    fake.smart_configuration_overrides.update(issuer=None)
    smart = smart.model_copy(update={"issuer": None})
    config = _config(scopes=("launch", "patient/Patient.rs"))  # no openid configured
    flow = authorize_flow(
        config,
        smart,
        issuer=fake.base_url,
        org_id="o",
        launch="l",
        session_id="s",
        now=NOW,
        scopes=EXTRA_SCOPES,
    )
    _, pending = run_sync(flow, http)
    assert "openid" in pending.scope.split()
    assert pending.oidc_issuer == fake.oidc_issuer
    assert len(fake.calls("openid-configuration")) == 1


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_changed_server_is_refused_against_the_approved_snapshot(
    key: LocalSigner, entry: Entry
) -> None:
    """Threat T03: every entry compares the fresh configuration with the approved snapshot."""
    fake = _fake(key)
    with httpx.Client(transport=httpx.MockTransport(fake.handler)) as http:
        smart = run_sync(discovery_flow(fake.base_url), http)
    approved = DiscoverySnapshot.of(smart)
    _start(entry, fake, _config(), key, approved=approved)  # unchanged: accepted
    moved = approved.model_copy(update={"token_endpoint": "https://evil.test/token"})
    with pytest.raises(MetadataMismatchError):
        _start(entry, fake, _config(), key, approved=moved)


def test_provider_flow_refuses_a_binding_of_another_issuer(fake: FakeEhr) -> None:
    request = parse_launch_request({"iss": fake.base_url, "launch": "l"})
    binding = IssuerBinding("https://other.test/fhir/r4", "org-1", "test")
    flow = provider_launch_flow(_config(), request, binding, session_id="s", now=NOW)
    with pytest.raises(ConfigurationError) as refused:
        next(flow)
    assert str(refused.value) == "the binding does not belong to this launch's issuer"


# -- the token request's retry budget --------------------------------------------------------------


def _complete(
    how: Literal["redeem", "flow", "sync", "async"],
    fake: FakeEhr,
    key: LocalSigner,
    config: SmartClientConfig | None = None,
    *,
    max_attempts: int | None = None,
    clock: Callable[[], datetime] = lambda: NOW,
    jwks: JwksCache | None = None,
    discovery: DiscoveryCache | None = None,
) -> LaunchResult | TokenResponse:
    """One whole launch; the completion runs through ``how``, with its default budget unless
    ``max_attempts`` is given."""
    config = config or _config()
    auth = PrivateKeyJwt("app", key)
    budget: dict[str, Any] = {} if max_attempts is None else {"max_attempts": max_attempts}
    caches: dict[str, Any] = {"jwks": jwks, "discovery": discovery}
    if how == "async":

        async def run() -> LaunchResult:
            async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as ahttp:
                client = AsyncSmartLaunchClient(
                    ahttp, config, auth, clock=clock, **caches, **budget
                )
                redirect, pending = await client.start_launch(
                    fake.base_url, "o", launch=fake.issue_launch(), session_id="s"
                )
                params = fake.authorize_in_browser(redirect)
                return await client.complete_launch(pending, params, session_id="s")

        return anyio.run(run)
    with httpx.Client(transport=httpx.MockTransport(fake.handler)) as http:
        client = SmartLaunchClient(http, config, auth, clock=clock, **caches, **budget)
        redirect, pending = client.start_launch(
            fake.base_url, "o", launch=fake.issue_launch(), session_id="s"
        )
        params = fake.authorize_in_browser(redirect)
        if how == "sync":
            return client.complete_launch(pending, params, session_id="s")
        if how == "redeem":
            return run_sync(
                redeem_flow(pending, params, auth, session_id="s", clock=clock, **budget), http
            )
        flow = complete_launch_flow(
            config,
            pending,
            params,
            auth=auth,
            jwks=JwksCache(clock=clock),
            session_id="s",
            clock=clock,
            **budget,
        )
        return run_sync(flow, http)


HOWS = ("redeem", "flow", "sync", "async")


@pytest.mark.parametrize("how", HOWS)
def test_the_default_budget_is_three_token_requests(
    key: LocalSigner, how: Literal["redeem", "flow", "sync", "async"]
) -> None:
    fake = _fake(key)
    fake.fail_next("token", 503, retry_after=0, times=2)
    assert _complete(how, fake, key) is not None
    assert len(fake.calls("token")) == 3
    fake = _fake(key)
    fake.fail_next("token", 503, retry_after=0, times=3)
    with pytest.raises(OAuthError):
        _complete(how, fake, key)
    assert len(fake.calls("token")) == 3


@pytest.mark.parametrize("how", HOWS)
def test_a_given_budget_reaches_the_token_request(
    key: LocalSigner, how: Literal["redeem", "flow", "sync", "async"]
) -> None:
    fake = _fake(key)
    fake.fail_next("token", 503, retry_after=0)
    with pytest.raises(OAuthError):
        _complete(how, fake, key, max_attempts=1)
    assert len(fake.calls("token")) == 1


# -- id_token rules --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["flow", "sync", "async"])
def test_the_configured_id_token_algorithms_are_enforced(
    key: LocalSigner, how: Literal["flow", "sync", "async"]
) -> None:
    """FakeEhr signs RS256: a client that accepts only ES256 refuses its id_token."""
    with pytest.raises(TokenInvalidError) as refused:
        _complete(how, _fake(key), key, _config(id_token_algorithms=("ES256",)))
    assert refused.value.reason == "alg_not_allowed"


@pytest.mark.parametrize("how", ["flow", "sync", "async"])
def test_the_verified_id_token_fills_the_user_of_the_context(
    key: LocalSigner, how: Literal["flow", "sync", "async"]
) -> None:
    result = _complete(how, _fake(key), key)
    assert isinstance(result, LaunchResult)
    assert result.context.user_id == "practitioner-1"
    assert result.context.fhir_user == "https://ehr.test/fhir/r4/Practitioner/practitioner-1"


@pytest.mark.parametrize("how", ["flow", "sync", "async"])
def test_without_openid_there_are_no_claims_and_no_user(
    key: LocalSigner, how: Literal["flow", "sync", "async"]
) -> None:
    config = _config(scopes=("launch", "patient/Patient.rs"))
    result = _complete(how, _fake(key), key, config)
    assert isinstance(result, LaunchResult)
    assert (result.context.user_id, result.context.fhir_user) == (None, None)
    assert result.context.patient == "patient-1"


def _pending(fake: FakeEhr, key: LocalSigner) -> PendingAuthorization:
    return _start("provider", fake, _config(), key)[1]


@pytest.mark.parametrize("missing", ["oidc_issuer", "jwks_uri"])
def test_openid_without_issuer_or_jwks_uri_cannot_be_verified(
    fake: FakeEhr, key: LocalSigner, missing: str
) -> None:
    pending = _pending(fake, key).model_copy(update={missing: None})
    with pytest.raises(TokenInvalidError) as refused:
        id_token_profile(pending)
    assert refused.value.reason == "no_oidc"
    assert str(refused.value) == "no OIDC issuer or jwks_uri to verify with"


def test_id_token_profile_names_the_issuer_audience_algorithms_and_keys(
    fake: FakeEhr, key: LocalSigner
) -> None:
    pending = _pending(fake, key)
    checked = id_token_profile(pending, ("RS256", "ES256"))
    assert checked is not None
    profile, jwks_uri = checked
    assert jwks_uri == fake.jwks_url
    assert profile.issuers == (fake.oidc_issuer,)
    assert profile.audience == "app"
    assert profile.algorithms == ("RS256", "ES256")
    assert id_token_profile(pending.model_copy(update={"scope": "launch fhirUser"})) is None


def test_a_missing_id_token_is_refused_with_reason_and_text() -> None:
    token = TokenResponse.model_validate({"access_token": "a", "token_type": "Bearer"})
    with pytest.raises(TokenInvalidError) as refused:
        required_id_token(token)
    assert refused.value.reason == "no_id"
    assert str(refused.value) == "openid was requested but no id_token came back"
    with_id = token.model_copy(update={"id_token": token.access_token})
    assert required_id_token(with_id) == "a"


def test_a_wrong_nonce_is_refused_with_reason_and_text(fake: FakeEhr, key: LocalSigner) -> None:
    pending = _pending(fake, key)
    token = TokenResponse.model_validate({"access_token": "a", "token_type": "Bearer"})
    for claims in ({"nonce": "other"}, {}, {"nonce": None}):
        with pytest.raises(TokenInvalidError) as refused:
            finish_launch(pending, token, claims)
        assert refused.value.reason == "nonce_mismatch"
        assert str(refused.value) == "id_token nonce does not match"
    nonce = pending.nonce.get_secret_value()
    result = finish_launch(pending, token, {"nonce": nonce, "sub": "u"})
    assert (result.org_id, result.issuer, result.context.user_id) == ("org-1", fake.base_url, "u")


def test_null_members_of_the_token_response_are_absent_context(
    fake: FakeEhr, key: LocalSigner
) -> None:
    """RFC 6749 §5.1 has no nulls; Epic's ``fhirContext: null`` means "none", not malformed."""
    token = TokenResponse.model_validate(
        {
            "access_token": "a",
            "token_type": "Bearer",
            "expires_in": None,
            "fhirContext": None,
            "patient": "p1",
        }
    )
    result = finish_launch(_pending(fake, key), token, None)
    assert result.context.fhir_context == ()
    assert result.context.patient == "p1"


# -- the clients' caches ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["sync", "async"])
def test_the_clients_caches_run_on_the_clients_clock(
    key: LocalSigner, how: Literal["sync", "async"]
) -> None:
    """Discovery (1 h) and JWKS (≤ 24 h) entries expire by the injected clock, not the host's."""
    clock = _Clock()
    fake = _fake(key, clock=clock)
    auth = PrivateKeyJwt("app", key)
    config = _config()

    async def launch_async(client: AsyncSmartLaunchClient) -> LaunchResult:
        redirect, pending = await client.start_launch(
            fake.base_url, "o", launch=fake.issue_launch(), session_id="s"
        )
        params = fake.authorize_in_browser(redirect)
        return await client.complete_launch(pending, params, session_id="s")

    def launch_sync(client: SmartLaunchClient) -> LaunchResult:
        redirect, pending = client.start_launch(
            fake.base_url, "o", launch=fake.issue_launch(), session_id="s"
        )
        params = fake.authorize_in_browser(redirect)
        return client.complete_launch(pending, params, session_id="s")

    if how == "sync":
        with httpx.Client(transport=httpx.MockTransport(fake.handler)) as http:
            client = SmartLaunchClient(http, config, auth, clock=clock)
            launch_sync(client)
            launch_sync(client)
            assert (len(fake.calls("smart-configuration")), len(fake.calls("jwks"))) == (1, 1)
            clock.now += timedelta(hours=25)
            launch_sync(client)
    else:

        async def run() -> None:
            async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as ahttp:
                client = AsyncSmartLaunchClient(ahttp, config, auth, clock=clock)
                await launch_async(client)
                await launch_async(client)
                calls = (len(fake.calls("smart-configuration")), len(fake.calls("jwks")))
                assert calls == (1, 1)
                clock.now += timedelta(hours=25)
                await launch_async(client)

        anyio.run(run)
    assert (len(fake.calls("smart-configuration")), len(fake.calls("jwks"))) == (2, 2)


@pytest.mark.parametrize("how", ["sync", "async"])
def test_caches_given_to_a_client_are_the_ones_it_uses(
    key: LocalSigner, how: Literal["sync", "async"]
) -> None:
    fake = _fake(key)
    jwks = JwksCache(clock=lambda: NOW)
    discovery = DiscoveryCache(clock=lambda: NOW)
    for _ in range(2):  # two clients, one pair of caches
        _complete(how, fake, key, jwks=jwks, discovery=discovery)
    assert (len(fake.calls("smart-configuration")), len(fake.calls("jwks"))) == (1, 1)


def test_a_client_for_another_client_id_is_refused(key: LocalSigner) -> None:
    config = _config()
    with httpx.Client() as http, pytest.raises(ConfigurationError) as refused:
        SmartLaunchClient(http, config, PrivateKeyJwt("other", key))
    assert str(refused.value) == "client authentication is for another client id"


def test_redeem_refuses_authentication_for_another_client(
    fake: FakeEhr, http: httpx.Client, key: LocalSigner
) -> None:
    redirect, pending = _start("provider", fake, _config(), key)
    params = fake.authorize_in_browser(redirect)
    flow = redeem_flow(
        pending, params, PrivateKeyJwt("other", key), session_id="s", clock=lambda: NOW
    )
    with pytest.raises(ConfigurationError) as refused:
        run_sync(flow, http)
    assert str(refused.value) == "client authentication is for another client id"
    assert fake.calls("token") == []


def test_a_discovery_error_stops_a_standalone_launch_before_authorization(
    fake: FakeEhr, key: LocalSigner
) -> None:
    fake.smart_configuration_overrides.update(authorization_endpoint="http://ehr.test/authorize")
    with pytest.raises(DiscoveryError):
        _start("standalone", fake, _config(), key)


def test_a_standalone_launch_has_no_launch_parameter_and_the_canonical_aud(
    fake: FakeEhr, key: LocalSigner
) -> None:
    start = _start("standalone", fake, _config(), key)
    query = _query(start)
    assert "launch" not in query
    assert query["aud"] == fake.base_url
    assert (start[1].org_id, start[1].issuer) == ("org-1", fake.base_url)
