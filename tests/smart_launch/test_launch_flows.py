"""The composed launch end to end against FakeEhr (sync, async, loopback) and the T01–T08 tests
that need the whole flow."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import jwt
import pytest
from pydantic import SecretStr

from leaks import assert_no_leak
from teams_ehr import install_redaction
from teams_ehr.errors import (
    DiscoveryError,
    LaunchParameterError,
    MetadataMismatchError,
    MixUpDetectedError,
    OAuthError,
    PkceUnsupportedError,
    StateInvalidError,
    TokenInvalidError,
    UntrustedIssuerError,
)
from teams_ehr.keys import LocalSigner, Signer
from teams_ehr.sansio import run_sync
from teams_ehr.smart.authorize import PendingAuthorization, SmartClientConfig, state_key
from teams_ehr.smart.client_auth import ClientSecretBasic, PrivateKeyJwt
from teams_ehr.smart.discovery import DiscoverySnapshot, SmartConfiguration
from teams_ehr.smart.flows import (
    AsyncSmartLaunchClient,
    SmartLaunchClient,
    complete_launch_flow,
    provider_launch_flow,
)
from teams_ehr.smart.jwks import JwksCache
from teams_ehr.smart.launch import StaticIssuerResolver, admit_launch, parse_launch_request
from teams_ehr.smart.pkce import code_challenge_s256
from teams_ehr.store.protocol import IssuerBinding
from teams_ehr.testing.fake_ehr import FakeEhr
from teams_ehr.testing.loopback import serve_on_loopback

install_redaction()  # as a host does at start-up (the runtime and the mount do it too)


REDIRECT = "https://app.test/callback"
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class CountingSigner:
    """Wraps a signer and counts signatures (proves no assertion was built)."""

    def __init__(self, inner: Signer) -> None:
        self.inner = inner
        self.count = 0
        self.kid, self.alg = inner.kid, inner.alg

    def sign(self, signing_input: bytes) -> bytes:
        self.count += 1
        return self.inner.sign(signing_input)

    def public_jwk(self) -> dict[str, str]:
        return self.inner.public_jwk()


@pytest.fixture(scope="module")
def key() -> LocalSigner:
    return LocalSigner.generate("RS384")


@pytest.fixture
def signer(key: LocalSigner) -> CountingSigner:
    return CountingSigner(key)


@pytest.fixture
def fake(key: LocalSigner) -> FakeEhr:
    ehr = FakeEhr(clock=lambda: NOW)
    ehr.register_client("app", redirect_uris=[REDIRECT], jwks={"keys": [key.public_jwk()]})
    return ehr


@pytest.fixture
def config() -> SmartClientConfig:
    return SmartClientConfig(client_id="app", redirect_uri=REDIRECT)


@pytest.fixture
def http(fake: FakeEhr) -> Iterator[httpx.Client]:
    with httpx.Client(transport=httpx.MockTransport(fake.handler)) as client:
        yield client


def client_for(http: httpx.Client, config: SmartClientConfig, signer: Signer) -> SmartLaunchClient:
    return SmartLaunchClient(http, config, PrivateKeyJwt("app", signer), clock=lambda: NOW)


def start(
    client: SmartLaunchClient, fake: FakeEhr, approved: DiscoverySnapshot | None = None, **kw: Any
) -> tuple[Any, PendingAuthorization, str]:
    launch = fake.issue_launch(**kw)
    request = parse_launch_request({"iss": fake.base_url, "launch": launch})
    redirect, pending = client.start_launch(
        request.iss, "org-1", launch=request.launch, session_id="sess", approved=approved
    )
    return redirect, pending, launch


@pytest.mark.parametrize("use_post", [False, True])
def test_end_to_end_ehr_launch_sync(
    fake: FakeEhr, http: httpx.Client, signer: CountingSigner, use_post: bool
) -> None:
    config = SmartClientConfig(client_id="app", redirect_uri=REDIRECT, use_post=use_post)
    client = client_for(http, config, signer)
    redirect, pending, _ = start(client, fake, appointment="appt-7", login_department="dep-1")
    assert redirect.method == ("POST" if use_post else "GET")
    params = fake.authorize_in_browser(redirect)
    result = client.complete_launch(pending, params, session_id="sess")
    context = result.context
    assert context.patient == "patient-1"
    assert context.encounter == "encounter-1"
    assert context.appointment == "appt-7"
    assert context.login_department == "dep-1"
    assert context.epic_dstu2_patient == "dstu2-patient-1"
    assert context.need_patient_banner is True
    assert context.user_id == "practitioner-1"
    assert context.fhir_user == f"{fake.base_url}/Practitioner/practitioner-1"
    assert "launch" in context.scope
    assert isinstance(result.token.access_token, SecretStr)
    assert result.org_id == "org-1"
    assert result.issuer == fake.base_url
    assert [len(fake.calls(e)) for e in ("smart-configuration", "token", "jwks")] == [1, 1, 1]
    assert signer.count == 1
    discovery = fake.calls("smart-configuration")[0]
    assert discovery.headers["Epic-Client-ID"] == "app"


@pytest.mark.anyio
async def test_end_to_end_ehr_launch_async(
    fake: FakeEhr, signer: CountingSigner, config: SmartClientConfig
) -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as http:
        client = AsyncSmartLaunchClient(
            http, config, PrivateKeyJwt("app", signer), clock=lambda: NOW
        )
        results = []
        for _ in range(2):
            launch = fake.issue_launch(patient="p-async")
            redirect, pending = await client.start_launch(
                fake.base_url, "org-1", launch=launch, session_id="s", approved=None
            )
            params = fake.authorize_in_browser(redirect)
            results.append(await client.complete_launch(pending, params, session_id="s"))
    assert [r.context.patient for r in results] == ["p-async", "p-async"]
    # discovery and JWKS are cached across launches
    assert len(fake.calls("smart-configuration")) == 1
    assert len(fake.calls("jwks")) == 1
    assert len(fake.calls("token")) == 2


def test_end_to_end_over_loopback_sockets(key: LocalSigner) -> None:
    fake = FakeEhr(base_url="http://127.0.0.1/fhir/r4", clock=lambda: NOW)
    fake.register_client("app", redirect_uris=[REDIRECT], jwks={"keys": [key.public_jwk()]})
    config = SmartClientConfig(client_id="app", redirect_uri=REDIRECT, allow_http=True)
    with serve_on_loopback(fake.asgi_app()) as url, httpx.Client() as http:
        fake.rebase(url + "/fhir/r4")
        client = client_for(http, config, key)
        launch = fake.issue_launch(patient="p-loop")
        request = parse_launch_request({"iss": fake.base_url, "launch": launch}, allow_http=True)
        redirect, pending = client.start_launch(
            request.iss, "org-1", launch=launch, session_id="s", approved=None
        )
        assert redirect.url.startswith(url + "/oauth2/authorize?")
        result = client.complete_launch(
            pending, fake.authorize_in_browser(redirect), session_id="s"
        )
    assert result.context.patient == "p-loop"
    assert len(fake.calls("token")) == 1


def test_standalone_launch(fake: FakeEhr, http: httpx.Client, signer: CountingSigner) -> None:
    config = SmartClientConfig(
        client_id="app", redirect_uri=REDIRECT, scopes=("launch", "openid", "fhirUser")
    )
    client = client_for(http, config, signer)
    fake.standalone_user = "analyst-9"
    redirect, pending = client.start_launch(
        fake.base_url, "org-1", launch=None, session_id="s", approved=None
    )
    query = dict(parse_qsl(urlsplit(redirect.url).query))
    assert "launch" not in query
    assert query["scope"] == "openid fhirUser"
    result = client.complete_launch(pending, fake.authorize_in_browser(redirect), session_id="s")
    assert result.context.user_id == "analyst-9"
    assert result.context.patient is None


def test_client_secret_basic_launch(
    fake: FakeEhr, http: httpx.Client, config: SmartClientConfig
) -> None:
    fake.register_client("app", redirect_uris=[REDIRECT], secret="pa:ss/word")
    client = SmartLaunchClient(
        http, config, ClientSecretBasic("app", SecretStr("pa:ss/word")), clock=lambda: NOW
    )
    redirect, pending = client.start_launch(
        fake.base_url, "o", launch=fake.issue_launch(), session_id="s", approved=None
    )
    result = client.complete_launch(pending, fake.authorize_in_browser(redirect), session_id="s")
    assert result.context.patient == "patient-1"


def test_sans_io_flows_driven_by_hand(
    fake: FakeEhr, http: httpx.Client, config: SmartClientConfig, key: LocalSigner
) -> None:
    request = parse_launch_request({"iss": fake.base_url, "launch": fake.issue_launch()})
    binding = IssuerBinding(canonical_base=fake.base_url, org_id="o", environment="test")
    redirect, pending = run_sync(
        provider_launch_flow(config, request, binding, session_id="s", now=NOW, approved=None),
        http,
    )
    params = fake.authorize_in_browser(redirect)
    flow = complete_launch_flow(
        config,
        pending,
        params,
        auth=PrivateKeyJwt("app", key),
        jwks=JwksCache(clock=lambda: NOW),
        session_id="s",
        clock=lambda: NOW,
    )
    result = run_sync(flow, http)
    assert result.context.patient == "patient-1"


def test_openid_configuration_used_when_smart_config_lacks_issuer(
    fake: FakeEhr, http: httpx.Client, signer: CountingSigner, config: SmartClientConfig
) -> None:
    fake.smart_configuration_overrides.update(issuer=None, jwks_uri=None)
    client = client_for(http, config, signer)
    redirect, pending, _ = start(client, fake)
    assert pending.oidc_issuer == fake.oidc_issuer
    assert len(fake.calls("openid-configuration")) == 1
    result = client.complete_launch(pending, fake.authorize_in_browser(redirect), session_id="sess")
    assert result.context.user_id == "practitioner-1"


# -- T01 ------------------------------------------------------------------------------------------


async def launch_endpoint(
    params: dict[str, str], resolver: StaticIssuerResolver, client: AsyncSmartLaunchClient
) -> Any:
    """What a host's /launch does: parse, admit, and only then talk to the EHR."""
    request, binding = await admit_launch(parse_launch_request(params), resolver)
    return await client.start_launch(
        binding.canonical_base,
        binding.org_id,
        launch=request.launch,
        session_id="s",
        approved=None,
    )


@pytest.mark.anyio
@pytest.mark.parametrize(
    "iss",
    [
        "https://evil.test/fhir",
        "https://ehr.test/fhir/r4/../r5",
        "https://ehr.test/fhir",
        "https://ehr.test@evil.test/fhir/r4",
        "https://ehr.test/fhir/r4?x=1",
    ],
)
async def test_launch_unknown_iss_no_io(iss: str, key: LocalSigner) -> None:
    requests: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(500)

    resolver = StaticIssuerResolver.of(
        IssuerBinding(canonical_base="https://ehr.test/fhir/r4", org_id="o", environment="test")
    )
    config = SmartClientConfig(client_id="app", redirect_uri=REDIRECT)
    async with httpx.AsyncClient(transport=httpx.MockTransport(record)) as http:
        client = AsyncSmartLaunchClient(http, config, PrivateKeyJwt("app", key))
        params = {"iss": iss, "launch": "L"}
        with pytest.raises((UntrustedIssuerError, LaunchParameterError)) as info:
            await launch_endpoint(params, resolver, client)
    assert info.value.http_status_hint == 400
    assert requests == []


@pytest.mark.anyio
async def test_launch_iss_of_pending_org_rejected() -> None:
    # A pending (not approved) organization is simply absent from the resolver.
    with pytest.raises(UntrustedIssuerError):
        await admit_launch(
            parse_launch_request({"iss": "https://ehr.test/fhir/r4", "launch": "L"}),
            StaticIssuerResolver({}),
        )


@pytest.mark.parametrize(
    "iss",
    ["http://169.254.169.254/latest", "http://localhost/fhir", "file:///etc/passwd", "gopher://x/"],
)
def test_launch_internal_iss_rejected_before_dns(iss: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: object, **kwargs: object) -> None:
        raise AssertionError("DNS lookup attempted")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(LaunchParameterError):
        parse_launch_request({"iss": iss, "launch": "L"})


# -- T03 ------------------------------------------------------------------------------------------


def test_token_endpoint_changed_since_approval(
    fake: FakeEhr, http: httpx.Client, signer: CountingSigner, config: SmartClientConfig
) -> None:
    approved = DiscoverySnapshot.of(SmartConfiguration.model_validate(fake.smart_configuration()))
    fake.smart_configuration_overrides["token_endpoint"] = "https://evil.test/token"
    client = client_for(http, config, signer)
    with pytest.raises(MetadataMismatchError):
        start(client, fake, approved=approved)
    assert fake.calls("token") == []
    assert signer.count == 0


def test_callback_iss_mismatch_code_not_redeemed(
    fake: FakeEhr, http: httpx.Client, signer: CountingSigner, config: SmartClientConfig
) -> None:
    client = client_for(http, config, signer)
    redirect, pending, _ = start(client, fake)
    params = fake.authorize_in_browser(redirect)
    params["iss"] = "https://other-ehr.test/oauth2"
    with pytest.raises(MixUpDetectedError):
        client.complete_launch(pending, params, session_id="sess")
    assert fake.calls("token") == []
    assert signer.count == 0


def test_metadata_redirect_not_followed(
    fake: FakeEhr, http: httpx.Client, signer: CountingSigner, config: SmartClientConfig
) -> None:
    fake.fail_next("smart-configuration", 302, headers={"Location": "http://10.0.0.1/x"})
    with pytest.raises(DiscoveryError, match="redirect") as refused:
        start(client_for(http, config, signer), fake)
    assert refused.value.reason == "discovery_redirect"
    assert len(fake.requests) == 1


# -- T04 ------------------------------------------------------------------------------------------


class MemoryPending:
    """The store side of pending authorizations, as the visits layer uses it."""

    def __init__(self) -> None:
        self.rows: dict[str, bytes] = {}

    def put(self, pending: PendingAuthorization) -> None:
        self.rows[state_key(pending.state.get_secret_value())] = pending.to_bytes()

    def take(self, params: dict[str, str]) -> PendingAuthorization | None:
        payload = self.rows.pop(state_key(params.get("state", "")), None)
        return PendingAuthorization.from_bytes(payload) if payload else None


def test_callback_state_reused(
    fake: FakeEhr, http: httpx.Client, signer: CountingSigner, config: SmartClientConfig
) -> None:
    client = client_for(http, config, signer)
    store = MemoryPending()
    redirect, pending, _ = start(client, fake)
    store.put(pending)
    params = fake.authorize_in_browser(redirect)
    client.complete_launch(store.take(params), params, session_id="sess")
    with pytest.raises(StateInvalidError):
        client.complete_launch(store.take(params), params, session_id="sess")
    assert len(fake.calls("token")) == 1


@pytest.mark.parametrize(
    ("session", "clock_shift", "drop_state"),
    [("other", 0, False), ("sess", 11, False), ("sess", 0, True)],
)
def test_callback_state_checks_before_any_token_request(
    fake: FakeEhr,
    http: httpx.Client,
    signer: CountingSigner,
    config: SmartClientConfig,
    session: str,
    clock_shift: int,
    drop_state: bool,
) -> None:
    now = NOW
    client = SmartLaunchClient(http, config, PrivateKeyJwt("app", signer), clock=lambda: now)
    redirect, pending, _ = start(client, fake)
    params = fake.authorize_in_browser(redirect)
    if drop_state:
        del params["state"]
    now = NOW + timedelta(minutes=clock_shift)
    with pytest.raises(StateInvalidError):
        client.complete_launch(pending, params, session_id=session)
    assert fake.calls("token") == []


# -- T05 ------------------------------------------------------------------------------------------


def test_token_request_contains_matching_verifier(
    fake: FakeEhr, http: httpx.Client, signer: CountingSigner, config: SmartClientConfig
) -> None:
    client = client_for(http, config, signer)
    redirect, pending, _ = start(client, fake)
    challenge = dict(parse_qsl(urlsplit(redirect.url).query))["code_challenge"]
    client.complete_launch(pending, fake.authorize_in_browser(redirect), session_id="sess")
    form = dict(parse_qsl(fake.calls("token")[0].content.decode()))
    assert code_challenge_s256(form["code_verifier"]) == challenge
    assert form["redirect_uri"] == REDIRECT
    assert "client_id" not in form


@pytest.mark.parametrize("methods", [["plain"], [], None])
def test_server_without_s256_gets_no_authorization(
    fake: FakeEhr,
    http: httpx.Client,
    signer: CountingSigner,
    config: SmartClientConfig,
    methods: Any,
) -> None:
    fake.smart_configuration_overrides["code_challenge_methods_supported"] = methods
    if methods is None:
        fake.smart_configuration_overrides["code_challenge_methods_supported"] = None
    with pytest.raises(PkceUnsupportedError):
        start(client_for(http, config, signer), fake)
    assert fake.calls("authorize") == []


# -- id_token (A7) --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("update", "reason"),
    [
        ({"nonce": SecretStr("another-nonce"), "require_iss_parameter": False}, "nonce_mismatch"),
        (
            {"oidc_issuer": "https://ehr.test/fhir/r4", "require_iss_parameter": False},
            "wrong_issuer",
        ),
    ],
)
def test_id_token_checks(
    fake: FakeEhr,
    http: httpx.Client,
    signer: CountingSigner,
    config: SmartClientConfig,
    update: dict[str, Any],
    reason: str,
) -> None:
    client = client_for(http, config, signer)
    redirect, pending, _ = start(client, fake)
    params = fake.authorize_in_browser(redirect)
    del params["iss"]  # a server without RFC 9207: the id_token issuer check still applies
    with pytest.raises(TokenInvalidError) as info:
        client.complete_launch(pending.model_copy(update=update), params, session_id="sess")
    assert info.value.reason == reason


def test_id_token_from_another_key_refused(
    fake: FakeEhr,
    http: httpx.Client,
    signer: CountingSigner,
    config: SmartClientConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    original = fake.id_token

    def forged(client_id: str, user: str, *, nonce: str | None, now: datetime | None = None) -> str:
        genuine = jwt.decode(
            original(client_id, user, nonce=nonce, now=now), options={"verify_signature": False}
        )
        kid = jwt.get_unverified_header(original(client_id, user, nonce=nonce, now=now))["kid"]
        return jwt.encode(genuine, other, algorithm="RS256", headers={"kid": kid})

    monkeypatch.setattr(fake, "id_token", forged)
    client = client_for(http, config, signer)
    redirect, pending, _ = start(client, fake)
    with pytest.raises(TokenInvalidError):
        client.complete_launch(pending, fake.authorize_in_browser(redirect), session_id="sess")


def test_authorization_error_is_typed(
    fake: FakeEhr, http: httpx.Client, signer: CountingSigner, config: SmartClientConfig
) -> None:
    fake.deny_consent = True
    client = client_for(http, config, signer)
    redirect, pending, _ = start(client, fake)
    with pytest.raises(OAuthError) as info:
        client.complete_launch(pending, fake.authorize_in_browser(redirect), session_id="sess")
    assert info.value.error == "access_denied"
    assert fake.calls("token") == []


# -- T08 ------------------------------------------------------------------------------------------


def test_no_canary_in_logs_errors_or_models(
    fake: FakeEhr,
    http: httpx.Client,
    signer: CountingSigner,
    config: SmartClientConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "teams_ehr"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    client = client_for(http, config, signer)
    redirect, pending, launch = start(client, fake, patient="PATIENTCANARY77")
    params = fake.authorize_in_browser(redirect)
    errors: list[BaseException] = []
    wrong_iss = {**params, "iss": "https://x.test"}
    for bad_params, session in ((wrong_iss, "sess"), (params, "other-session")):
        try:
            client.complete_launch(pending, bad_params, session_id=session)
        except (MixUpDetectedError, StateInvalidError) as exc:
            errors.append(exc)
    result = client.complete_launch(pending, params, session_id="sess")
    canaries = [
        result.token.access_token.get_secret_value(),
        result.token.id_token.get_secret_value() if result.token.id_token else "",
        params["code"],
        params["state"],
        launch,
        "PATIENTCANARY77",
        pending.code_verifier.get_secret_value(),
    ]
    assert_no_leak(
        canaries, caplog.text, result, result.context, result.token, pending, redirect, *errors
    )
    assert "HTTP Request" in caplog.text


def test_legacy_server_via_metadata_fallback_needs_opt_in(
    fake: FakeEhr, http: httpx.Client, signer: CountingSigner
) -> None:
    fake.serve_well_known = False
    strict = SmartClientConfig(client_id="app", redirect_uri=REDIRECT)
    with pytest.raises(PkceUnsupportedError):
        start(client_for(http, strict, signer), fake)
    legacy = SmartClientConfig(
        client_id="app",
        redirect_uri=REDIRECT,
        allow_missing_pkce_metadata=True,
        scopes=("launch", "user/Patient.rs"),
    )
    client = client_for(http, legacy, signer)
    redirect, pending, _ = start(client, fake)
    assert pending.jwks_uri is None
    params = fake.authorize_in_browser(redirect)
    assert "code_challenge" in dict(parse_qsl(urlsplit(redirect.url).query))
    result = client.complete_launch(pending, params, session_id="sess")
    assert result.context.patient == "patient-1"
    assert result.context.user_id is None  # no openid: no verified identity
    assert len(fake.calls("metadata")) == 2


def test_epic_string_banner_and_non_epic_server(key: LocalSigner) -> None:
    fake = FakeEhr(clock=lambda: NOW, epic=False)
    fake.register_client("app", redirect_uris=[REDIRECT], jwks={"keys": [key.public_jwk()]})
    config = SmartClientConfig(client_id="app", redirect_uri=REDIRECT)
    with httpx.Client(transport=httpx.MockTransport(fake.handler)) as http:
        client = client_for(http, config, key)
        redirect, pending, _ = start(client, fake, need_patient_banner=False)
        result = client.complete_launch(
            pending, fake.authorize_in_browser(redirect), session_id="sess"
        )
    assert result.context.need_patient_banner is False
    assert result.context.appointment is None
    assert result.context.epic_dstu2_patient is None


@pytest.mark.anyio
async def test_concurrent_launches_share_discovery_and_jwks(
    fake: FakeEhr, key: LocalSigner, config: SmartClientConfig
) -> None:
    import anyio

    results: list[str | None] = []

    async def interleaving(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0)  # let the other launches run while this request is in flight
        return fake.handler(request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(interleaving)) as http:
        client = AsyncSmartLaunchClient(http, config, PrivateKeyJwt("app", key), clock=lambda: NOW)

        async def launch(index: int) -> None:
            redirect, pending = await client.start_launch(
                fake.base_url,
                "o",
                launch=fake.issue_launch(patient=f"p{index}"),
                session_id=f"s{index}",
                approved=None,
            )
            params = fake.authorize_in_browser(redirect)
            result = await client.complete_launch(pending, params, session_id=f"s{index}")
            results.append(result.context.patient)

        async with anyio.create_task_group() as group:
            for index in range(40):
                group.start_soon(launch, index)
    assert sorted(results, key=str) == sorted((f"p{i}" for i in range(40)), key=str)
    assert len(fake.calls("smart-configuration")) == 1
    assert len(fake.calls("jwks")) == 1
    assert len(fake.calls("token")) == 40


def test_token_503_retried_with_a_fresh_assertion(
    fake: FakeEhr, http: httpx.Client, signer: CountingSigner, config: SmartClientConfig
) -> None:
    client = client_for(http, config, signer)
    redirect, pending, _ = start(client, fake)
    fake.fail_next("token", 503, retry_after=0)
    result = client.complete_launch(pending, fake.authorize_in_browser(redirect), session_id="sess")
    assert result.context.patient == "patient-1"
    posts = fake.calls("token")
    assert len(posts) == 2
    jtis = {
        jwt.decode(
            dict(parse_qsl(p.content.decode()))["client_assertion"],
            options={"verify_signature": False},
        )["jti"]
        for p in posts
    }
    assert len(jtis) == 2
    assert signer.count == 2


def test_standalone_aud_is_canonical(
    fake: FakeEhr, http: httpx.Client, signer: CountingSigner, config: SmartClientConfig
) -> None:
    client = client_for(http, config, signer)
    sloppy = fake.base_url.replace("https://ehr.test", "https://EHR.test:443") + "/"
    redirect, pending = client.start_launch(sloppy, "o", launch=None, session_id="s", approved=None)
    assert dict(parse_qsl(urlsplit(redirect.url).query))["aud"] == fake.base_url
    assert pending.issuer == fake.base_url


@pytest.mark.parametrize("nonce", [None, "", 42], ids=["absent", "empty", "not-a-string"])
def test_id_token_without_our_nonce_refused(
    fake: FakeEhr,
    http: httpx.Client,
    signer: CountingSigner,
    config: SmartClientConfig,
    monkeypatch: pytest.MonkeyPatch,
    nonce: object,
) -> None:
    """OpenID Connect Core §3.1.3.7 (11): the nonce claim must be present and equal to ours."""
    original = fake.id_token

    def without_nonce(client_id: str, user: str, *, nonce: str | None, now: Any = None) -> str:
        claims = jwt.decode(
            original(client_id, user, nonce=None, now=now), options={"verify_signature": False}
        )
        if replacement is not None:
            claims["nonce"] = replacement
        header = jwt.get_unverified_header(original(client_id, user, nonce=None, now=now))
        return jwt.encode(claims, fake._key, algorithm="RS256", headers={"kid": header["kid"]})

    replacement = nonce
    monkeypatch.setattr(fake, "id_token", without_nonce)
    client = client_for(http, config, signer)
    redirect, pending, _ = start(client, fake)
    with pytest.raises(TokenInvalidError) as info:
        client.complete_launch(pending, fake.authorize_in_browser(redirect), session_id="sess")
    assert info.value.reason == "nonce_mismatch"
