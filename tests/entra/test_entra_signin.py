"""Microsoft sign-in against FakeEntra (SPEC B6, C1; security.md T11, T14, T17)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from entra_helpers import (
    CLIENT_ID,
    CLIENT_SECRET,
    CLINICIAN_OID,
    REDIRECT_URI,
    TENANT,
    FakeClock,
    MemoryPendingStore,
)
from pydantic import SecretStr, ValidationError

from leaks import assert_no_leak
from teams_ehr.errors import (
    IdentityBindingError,
    StateInvalidError,
)
from teams_ehr.smart.jwks import JwksCache
from teams_ehr.teams.identity import IdentityBinder, MemoryIdentityMap, MicrosoftIdentity
from teams_ehr.teams.signin import (
    EntraAppConfig,
    PendingMicrosoftSignin,
    begin_microsoft_signin,
    complete_microsoft_signin,
    complete_microsoft_signin_async,
    store_pending_signin,
    take_pending_signin,
)
from teams_ehr.testing.fake_entra import FakeEntra

SESSION = "browser-session-1"
LAUNCH = "launch-session-handle-1"


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


class Recorder:
    """Wraps the fake's handler and keeps every response (to learn the issued tokens)."""

    def __init__(self, fake: FakeEntra) -> None:
        self.fake = fake
        self.responses: list[httpx.Response] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        response = self.fake.handler(request)
        self.responses.append(response)
        return response

    def token_bodies(self) -> list[dict[str, Any]]:
        return [r.json() for r in self.responses if r.request.url.path.endswith("/token")]


def _begin(
    config: EntraAppConfig, clock: FakeClock, *, purpose: str = "clinician_binding"
) -> tuple[str, PendingMicrosoftSignin]:
    bound = LAUNCH if purpose == "clinician_binding" else None
    return begin_microsoft_signin(
        config,
        purpose=purpose,  # type: ignore[arg-type]
        bound_launch=bound,
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


def _sign_in(
    config: EntraAppConfig, fake: FakeEntra, jwks: JwksCache, clock: FakeClock
) -> MicrosoftIdentity:
    url, pending = _begin(config, clock)
    return _complete(config, fake, jwks, clock, fake.authorize_in_browser(url), pending)


def _token_requests(fake: FakeEntra) -> list[httpx.Request]:
    return [r for r in fake.requests if r.url.path.endswith("/token")]


# -- the happy paths -------------------------------------------------------------------------


def test_sync_sign_in_returns_tid_and_oid_only(
    config: EntraAppConfig, fake: FakeEntra, jwks: JwksCache, clock: FakeClock
) -> None:
    identity = _sign_in(config, fake, jwks, clock)
    assert identity == MicrosoftIdentity(tenant_id=TENANT, object_id=CLINICIAN_OID)
    (token_request,) = _token_requests(fake)
    form = parse_qs(token_request.content.decode())
    assert form["grant_type"] == ["authorization_code"]
    assert form["redirect_uri"] == [REDIRECT_URI]
    assert "code_verifier" in form
    assert token_request.headers["authorization"].startswith("Basic ")


@pytest.mark.anyio
async def test_async_sign_in_store_and_bind(
    config: EntraAppConfig, fake: FakeEntra, jwks: JwksCache, clock: FakeClock
) -> None:
    pending_store, identities = MemoryPendingStore(), MemoryIdentityMap()
    url, pending = _begin(config, clock)
    await store_pending_signin(pending_store, pending, org_id="org-a")
    assert pending.state.get_secret_value() not in "".join(pending_store.rows)  # keyed by hash
    params = fake.authorize_in_browser(url)
    org_id, taken = await take_pending_signin(pending_store, params, now=clock())
    assert (org_id, taken) == ("org-a", pending)
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as client:
        identity = await complete_microsoft_signin_async(
            config, params, taken, session_id=SESSION, jwks=jwks, client=client, now=clock()
        )
    binder = IdentityBinder(identities, clock)
    await binder.bind(
        org_id,
        "https://ehr.example.org/fhir",
        "emp-1",
        identity,
        organization_tenant_id=TENANT,
        launch_session_valid=taken.bound_launch == LAUNCH,
    )
    (row,) = identities.rows
    assert (row.tenant_id, row.object_id) == (TENANT, CLINICIAN_OID)
    assert_no_leak(["NAME-CANARY", "UPN-CANARY", "clinician@"], row, identities.rows)


def test_approval_sign_in_needs_no_launch(
    config: EntraAppConfig, fake: FakeEntra, jwks: JwksCache, clock: FakeClock
) -> None:
    url, pending = _begin(config, clock, purpose="approval")
    assert pending.purpose == "approval"
    assert pending.bound_launch is None
    identity = _complete(config, fake, jwks, clock, fake.authorize_in_browser(url), pending)
    assert identity.object_id == CLINICIAN_OID


def test_sign_in_after_key_rotation(
    config: EntraAppConfig, fake: FakeEntra, jwks: JwksCache, clock: FakeClock
) -> None:
    _sign_in(config, fake, jwks, clock)
    fake.rotate_keys(keep_previous=False)
    clock.advance(61)  # the JWKS cache refetches an unknown kid at most once a minute
    assert _sign_in(config, fake, jwks, clock).object_id == CLINICIAN_OID
    assert sum(r.url.path.endswith("/keys") for r in fake.requests) == 2


def test_custom_client_authentication(
    fake: FakeEntra, jwks: JwksCache, clock: FakeClock, certificate: tuple[bytes, bytes]
) -> None:
    """Any ClientAuthentication works, e.g. a certificate assertion with x5t (Entra)."""
    import base64
    import hashlib
    import uuid
    from datetime import datetime

    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509 import load_pem_x509_certificate

    key_pem, cert_pem = certificate
    der = load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    x5t = base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode()

    class CertificateAuth:
        client_id = CLIENT_ID

        def token_request_auth(
            self, token_endpoint: str, *, now: datetime
        ) -> tuple[dict[str, str], dict[str, str]]:
            at = int(now.timestamp())
            claims = {"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": token_endpoint}
            claims |= {"jti": str(uuid.uuid4()), "iat": at, "exp": at + 300}  # type: ignore[dict-item]
            key = serialization.load_pem_private_key(key_pem, password=None)
            assertion = jwt.encode(claims, key, algorithm="RS256", headers={"x5t": x5t})  # type: ignore[arg-type]
            return {
                "client_id": CLIENT_ID,
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion,
            }, {}

    fake.register_app(CLIENT_ID, redirect_uris=[REDIRECT_URI], certificate_pem=cert_pem)
    config = EntraAppConfig(
        tenant_id=TENANT,
        client_id=CLIENT_ID,
        redirect_uri=REDIRECT_URI,
        client_auth=CertificateAuth(),
    )
    assert _sign_in(config, fake, jwks, clock).object_id == CLINICIAN_OID


# -- the authorize request -----------------------------------------------------------------------


def test_authorize_url_is_tenant_specific_and_minimal(
    config: EntraAppConfig, clock: FakeClock
) -> None:
    url, pending = _begin(config, clock)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == (
        f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/authorize"
    )
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert set(query) == {
        "client_id",
        "response_type",
        "redirect_uri",
        "response_mode",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
        "prompt",
    }
    assert query["scope"] == "openid profile"
    assert query["response_type"] == "code"
    assert query["response_mode"] == "query"
    assert query["prompt"] == "select_account"
    assert query["code_challenge_method"] == "S256"
    assert query["state"] == pending.state.get_secret_value()
    assert len(query["state"]) >= 43
    assert query["nonce"] != query["state"]
    assert (pending.expires_at - pending.created_at).total_seconds() == 600
    for alias in ("common", "organizations", "consumers"):
        assert f"/{alias}/" not in url


@pytest.mark.parametrize(
    "tenant", ["common", "organizations", "consumers", "Common", "contoso.onmicrosoft.com", ""]
)
def test_config_refuses_non_tenant_authorities(tenant: str) -> None:
    with pytest.raises(ValidationError):
        EntraAppConfig(
            tenant_id=tenant,
            client_id=CLIENT_ID,
            redirect_uri=REDIRECT_URI,
            client_secret=SecretStr(CLIENT_SECRET),
        )


@pytest.mark.parametrize(
    "changes",
    [
        {"authority_host": "https://login.evil.example"},
        {"authority_host": "http://login.microsoftonline.com"},
        {"authority_host": "https://login.microsoftonline.com/common"},
        {"redirect_uri": "http://app.example.org/cb"},
        {"redirect_uri": "https://app.example.org/cb#frag"},
        {"client_secret": None},
        {"extra": 1},
    ],
)
def test_config_validation(changes: dict[str, Any]) -> None:
    values: dict[str, Any] = {
        "tenant_id": TENANT,
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "client_secret": SecretStr(CLIENT_SECRET),
        **changes,
    }
    with pytest.raises(ValidationError) as caught:
        EntraAppConfig(**values)
    assert CLIENT_SECRET not in str(caught.value)


def test_sovereign_cloud_authority(fake: FakeEntra, clock: FakeClock) -> None:
    config = EntraAppConfig(
        tenant_id=TENANT.upper(),
        client_id=CLIENT_ID,
        redirect_uri=REDIRECT_URI,
        client_secret=SecretStr(CLIENT_SECRET),
        authority_host="https://login.microsoftonline.us",
    )
    assert config.tenant_id == TENANT
    assert config.issuer == f"https://login.microsoftonline.us/{TENANT}/v2.0"
    us = FakeEntra(TENANT, clock=clock, authority_host="https://login.microsoftonline.us")
    us.register_app(CLIENT_ID, redirect_uris=[REDIRECT_URI], secret=CLIENT_SECRET)
    us.sign_in_as(CLINICIAN_OID)
    assert _sign_in(config, us, JwksCache(clock=clock), clock).tenant_id == TENANT


def test_clinician_binding_needs_a_launch_session(config: EntraAppConfig, clock: FakeClock) -> None:
    with pytest.raises(IdentityBindingError) as caught:
        begin_microsoft_signin(
            config, purpose="clinician_binding", bound_launch=None, session_id=SESSION, now=clock()
        )
    assert caught.value.reason == "no_launch_session"
    with pytest.raises(StateInvalidError):
        begin_microsoft_signin(
            config, purpose="approval", bound_launch=None, session_id="", now=clock()
        )


def test_pending_round_trip_and_repr(config: EntraAppConfig, clock: FakeClock) -> None:
    _, pending = _begin(config, clock)
    assert PendingMicrosoftSignin.from_bytes(pending.to_bytes()) == pending
    secrets_ = [
        pending.state.get_secret_value(),
        pending.nonce.get_secret_value(),
        pending.code_verifier.get_secret_value(),
        LAUNCH,
        SESSION,
    ]
    assert_no_leak(secrets_, pending)
    with pytest.raises(StateInvalidError) as caught:
        PendingMicrosoftSignin.from_bytes(b'{"state": "CANARY-garbage"}')
    assert caught.value.reason == "state_corrupt"
    assert_no_leak(["CANARY-garbage"], caught.value)
