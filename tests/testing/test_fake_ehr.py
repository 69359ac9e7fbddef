"""FakeEhr is strict: each server-side rule of smart-epic.md §4.5 refuses what it must."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from teams_ehr.keys import LocalSigner
from teams_ehr.smart.client_auth import PrivateKeyJwt
from teams_ehr.testing.fake_ehr import FakeEhr, FakeEhrError

REDIRECT = "https://app.test/callback"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def signer() -> LocalSigner:
    return LocalSigner.generate("RS384")


@pytest.fixture
def fake(clock: Clock, signer: LocalSigner) -> FakeEhr:
    ehr = FakeEhr(clock=clock)
    ehr.register_client("app", redirect_uris=[REDIRECT], jwks={"keys": [signer.public_jwk()]})
    ehr.register_client("secret-app", redirect_uris=[REDIRECT], secret="s3cr:et")
    ehr.register_client("public-app", redirect_uris=[REDIRECT])
    return ehr


@pytest.fixture
def http(fake: FakeEhr) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(fake.handler))


VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def authorize(fake: FakeEhr, http: httpx.Client, **override: str | None) -> httpx.Response:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": "app",
        "redirect_uri": REDIRECT,
        "scope": "launch openid fhirUser offline_access",
        "state": "st",
        "aud": fake.base_url,
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
        "launch": fake.issue_launch(appointment="appt-1"),
        "nonce": "n-1",
    }
    params.update(override)
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return http.get(f"{fake.authorize_url}?{query}")


def redirect_params(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?")
    return dict(parse_qsl(urlsplit(location).query))


def token(http: httpx.Client, fake: FakeEhr, form: dict[str, str], **kw: Any) -> httpx.Response:
    return http.post(fake.token_url, data=form, **kw)


def code_form(code: str, assertion: str, verifier: str = VERIFIER) -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
    }


def assertion(fake: FakeEhr, signer: LocalSigner, clock: Clock) -> str:
    return PrivateKeyJwt("app", signer).assertion(fake.token_url, now=clock())


def test_documents(fake: FakeEhr, http: httpx.Client) -> None:
    smart = http.get(fake.base_url + "/.well-known/smart-configuration").json()
    assert smart["code_challenge_methods_supported"] == ["S256"]
    assert smart["issuer"] == fake.oidc_issuer != fake.base_url
    metadata = http.get(fake.base_url + "/metadata")
    assert metadata.headers["content-type"] == "application/fhir+json"
    assert http.get(fake.oidc_issuer + "/.well-known/openid-configuration").json()["jwks_uri"]
    jwks = http.get(fake.jwks_url)
    assert "max-age" in jwks.headers["cache-control"]
    assert {"d", "p", "q"}.isdisjoint(jwks.json()["keys"][0])
    fake.smart_configuration_overrides["jwks_uri"] = None
    assert "jwks_uri" not in http.get(fake.base_url + "/.well-known/smart-configuration").json()
    assert http.get("https://other.test/fhir/r4/metadata").status_code == 404


def test_full_code_exchange_epic_extras(
    fake: FakeEhr, http: httpx.Client, signer: LocalSigner, clock: Clock
) -> None:
    params = redirect_params(authorize(fake, http))
    assert params["state"] == "st"
    assert params["iss"] == fake.oidc_issuer
    response = token(http, fake, code_form(params["code"], assertion(fake, signer, clock)))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["need_patient_banner"] == "true"
    assert body["appointment"] == "appt-1"
    assert body["__epic.dstu2.patient"] == "dstu2-patient-1"
    claims = jwt.decode(
        body["id_token"],
        jwt.PyJWK(http.get(fake.jwks_url).json()["keys"][0]).key,
        algorithms=["RS256"],
        audience="app",
        issuer=fake.oidc_issuer,
    )
    assert claims["nonce"] == "n-1"
    assert claims["fhirUser"] == f"{fake.base_url}/Practitioner/practitioner-1"
    info = fake.token_info(body["access_token"])
    assert info is not None
    assert info["patient"] == "patient-1"
    # the code is single use
    again = token(http, fake, code_form(params["code"], assertion(fake, signer, clock)))
    assert again.json()["error"] == "invalid_grant"
    # refresh rotates
    refreshed = token(
        http,
        fake,
        {
            "grant_type": "refresh_token",
            "refresh_token": body["refresh_token"],
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion(fake, signer, clock),
        },
    )
    assert refreshed.status_code == 200
    assert refreshed.json()["refresh_token"] != body["refresh_token"]
    reused = token(
        http,
        fake,
        {
            "grant_type": "refresh_token",
            "refresh_token": body["refresh_token"],
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion(fake, signer, clock),
        },
    )
    assert reused.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ({"aud": "https://ehr.test/fhir"}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": None}, "invalid_request"),
        ({"launch": "not-issued"}, "invalid_request"),
        ({"scope": "openid fhirUser"}, "invalid_scope"),
        ({"response_type": "token"}, "unsupported_response_type"),
    ],
)
def test_authorize_refusals_redirect_with_error(
    fake: FakeEhr, http: httpx.Client, override: dict[str, str | None], error: str
) -> None:
    params = redirect_params(authorize(fake, http, **override))
    assert params["error"] == error
    assert "code" not in params


@pytest.mark.parametrize(
    "override",
    [{"redirect_uri": REDIRECT + "/"}, {"redirect_uri": REDIRECT.upper()}, {"client_id": "x"}],
)
def test_authorize_never_redirects_to_unregistered_uri(
    fake: FakeEhr, http: httpx.Client, override: dict[str, str]
) -> None:
    assert authorize(fake, http, **override).status_code == 400


def test_launch_is_single_use_and_expires(fake: FakeEhr, http: httpx.Client, clock: Clock) -> None:
    launch = fake.issue_launch()
    assert "code" in redirect_params(authorize(fake, http, launch=launch))
    assert redirect_params(authorize(fake, http, launch=launch))["error"] == "invalid_request"
    late = fake.issue_launch()
    clock.now += timedelta(minutes=6)
    assert redirect_params(authorize(fake, http, launch=late))["error"] == "invalid_request"


def test_consent_denied(fake: FakeEhr, http: httpx.Client) -> None:
    fake.deny_consent = True
    assert redirect_params(authorize(fake, http))["error"] == "access_denied"


def test_post_authorize(fake: FakeEhr, http: httpx.Client) -> None:
    form = {
        "response_type": "code",
        "client_id": "app",
        "redirect_uri": REDIRECT,
        "scope": "openid",
        "state": "s",
        "aud": fake.base_url,
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
    }
    assert "code" in redirect_params(http.post(fake.authorize_url, data=form))


_PRIVATE: dict[str, Any] = {}


def _private_key(signer: LocalSigner) -> Any:
    if signer.kid not in _PRIVATE:
        _PRIVATE[signer.kid] = serialization.load_pem_private_key(signer.private_pem(), None)
    return _PRIVATE[signer.kid]


class Later:
    """A claim time relative to the fake clock, resolved when the assertion is signed."""

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds


def _signed(
    signer: LocalSigner, fake: FakeEhr, clock: Clock, header: dict[str, Any], **claims: Any
) -> str:
    now = int(clock().timestamp())
    body = {
        "iss": "app",
        "sub": "app",
        "aud": fake.token_url,
        "exp": now + 240,
        "iat": now,
        "jti": secrets.token_urlsafe(16),
    }
    body.update({k: now + v.seconds if isinstance(v, Later) else v for k, v in claims.items()})
    body = {k: v for k, v in body.items() if v is not None}
    private = _private_key(signer)
    head = {"kid": signer.kid, "typ": "JWT", **header}
    head = {k: v for k, v in head.items() if v is not None or k == "typ"}  # typ=None: omitted
    alg = head.pop("alg", "RS384")
    return jwt.encode(body, private, algorithm=alg, headers=head)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("header", "claims"),
    [
        ({"alg": "RS256"}, {}),
        ({"typ": None}, {}),
        ({"typ": "at+jwt"}, {}),
        ({"kid": "unknown"}, {}),
        ({"kid": None}, {}),
        ({"jku": "https://evil.test/jwks"}, {}),
        ({}, {"aud": "https://ehr.test/fhir/r4"}),
        ({}, {"sub": "other"}),
        ({}, {"exp": None}),
        ({}, {"jti": None}),
        ({}, {"jti": 12345}),
        ({}, {"jti": "x" * 152}),
        ({}, {"exp": Later(400)}),
        ({}, {"exp": Later(-10)}),
        ({}, {"iat": Later(120)}),
    ],
)
def test_client_assertion_refusals(
    fake: FakeEhr,
    http: httpx.Client,
    signer: LocalSigner,
    clock: Clock,
    header: dict[str, Any],
    claims: dict[str, Any],
) -> None:
    params = redirect_params(authorize(fake, http))
    bad = _signed(signer, fake, clock, header, **claims)
    response = token(http, fake, code_form(params["code"], bad))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client"


def test_jti_replay_refused(
    fake: FakeEhr, http: httpx.Client, signer: LocalSigner, clock: Clock
) -> None:
    reused = assertion(fake, signer, clock)
    first = redirect_params(authorize(fake, http))["code"]
    second = redirect_params(authorize(fake, http))["code"]
    assert token(http, fake, code_form(first, reused)).status_code == 200
    assert token(http, fake, code_form(second, reused)).json()["error"] == "invalid_client"


def test_wrong_pkce_verifier(
    fake: FakeEhr, http: httpx.Client, signer: LocalSigner, clock: Clock
) -> None:
    code = redirect_params(authorize(fake, http))["code"]
    wrong = "A" * 43
    response = token(http, fake, code_form(code, assertion(fake, signer, clock), verifier=wrong))
    assert response.json()["error"] == "invalid_grant"


def test_expired_code(fake: FakeEhr, http: httpx.Client, signer: LocalSigner, clock: Clock) -> None:
    code = redirect_params(authorize(fake, http))["code"]
    clock.now += timedelta(seconds=61)
    assert (
        token(http, fake, code_form(code, assertion(fake, signer, clock))).json()["error"]
        == "invalid_grant"
    )


def test_token_endpoint_requires_form_post(fake: FakeEhr, http: httpx.Client) -> None:
    assert http.post(fake.token_url + "?code=x", data={"grant_type": "x"}).status_code == 400
    assert http.post(fake.token_url, json={"grant_type": "x"}).status_code == 400


def test_client_secret_basic_and_public(fake: FakeEhr, http: httpx.Client) -> None:
    code = redirect_params(authorize(fake, http, client_id="secret-app"))["code"]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": VERIFIER,
    }
    basic = base64.b64encode(b"secret-app:s3cr%3Aet").decode()
    ok = token(http, fake, form, headers={"Authorization": f"Basic {basic}"})
    assert ok.status_code == 200, ok.text
    wrong = base64.b64encode(b"secret-app:nope").decode()
    code = redirect_params(authorize(fake, http, client_id="secret-app"))["code"]
    bad = token(http, fake, {**form, "code": code}, headers={"Authorization": f"Basic {wrong}"})
    assert bad.status_code == 401
    code = redirect_params(authorize(fake, http, client_id="public-app"))["code"]
    public = token(http, fake, {**form, "code": code, "client_id": "public-app"})
    assert public.status_code == 200
    code = redirect_params(authorize(fake, http, client_id="secret-app"))["code"]
    unauthenticated = token(http, fake, {**form, "code": code, "client_id": "secret-app"})
    assert unauthenticated.status_code == 401


def test_backend_services(
    fake: FakeEhr, http: httpx.Client, signer: LocalSigner, clock: Clock
) -> None:
    form = {
        "grant_type": "client_credentials",
        "scope": "system/DocumentReference.c",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion(fake, signer, clock),
    }
    body = token(http, fake, form).json()
    assert body["expires_in"] == 300
    assert "refresh_token" not in body
    form["client_assertion"] = assertion(fake, signer, clock)
    form["scope"] = "user/Patient.rs"
    assert token(http, fake, form).json()["error"] == "invalid_scope"


def test_es384_client(fake: FakeEhr, http: httpx.Client, clock: Clock) -> None:
    signer = LocalSigner.generate("ES384")
    fake.register_client("ec-app", redirect_uris=[REDIRECT], jwks={"keys": [signer.public_jwk()]})
    form = {
        "grant_type": "client_credentials",
        "scope": "system/Encounter.r",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": PrivateKeyJwt("ec-app", signer).assertion(fake.token_url, now=clock()),
    }
    assert token(http, fake, form).status_code == 200
    assert isinstance(ec.SECP384R1(), ec.EllipticCurve)


def test_fail_next_scripts_failures(fake: FakeEhr, http: httpx.Client) -> None:
    fake.fail_next("smart-configuration", 503, retry_after=7)
    fake.fail_next("smart-configuration", 302, headers={"Location": "http://internal/"})
    first = http.get(fake.base_url + "/.well-known/smart-configuration")
    assert first.status_code == 503
    assert first.headers["retry-after"] == "7"
    assert http.get(fake.base_url + "/.well-known/smart-configuration").status_code == 302
    assert http.get(fake.base_url + "/.well-known/smart-configuration").status_code == 200
    assert len(fake.calls("smart-configuration")) == 3


def test_fhir_requests_need_a_token_and_are_delegated(
    fake: FakeEhr, http: httpx.Client, signer: LocalSigner, clock: Clock
) -> None:
    assert http.get(fake.base_url + "/Patient/1").status_code == 401
    form = {
        "grant_type": "client_credentials",
        "scope": "system/Patient.r",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion(fake, signer, clock),
    }
    access = token(http, fake, form).json()["access_token"]
    headers = {"Authorization": f"Bearer {access}"}
    missing = http.get(fake.base_url + "/Patient/1", headers=headers)
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"
    seen: list[httpx.Request] = []

    def store(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"resourceType": "Patient", "id": "1"})

    fake.fhir_handler = store
    assert http.get(fake.base_url + "/Patient/1", headers=headers).json()["id"] == "1"
    assert len(seen) == 1
    clock.now += timedelta(seconds=301)
    assert http.get(fake.base_url + "/Patient/1", headers=headers).status_code == 401


def test_authorize_in_browser_raises_on_error_page(fake: FakeEhr) -> None:
    class Redirect:
        method = "GET"
        url = fake.authorize_url + "?client_id=nobody"
        fields: tuple[tuple[str, str], ...] = ()

    with pytest.raises(FakeEhrError):
        fake.authorize_in_browser(Redirect())


def test_thumbprint_kid_matches_rfc7638(fake: FakeEhr, http: httpx.Client) -> None:
    jwk = http.get(fake.jwks_url).json()["keys"][0]
    canonical = json.dumps({k: jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"))
    digest = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=")
    assert jwk["kid"] == digest.decode()


def test_jti_registry_forgets_only_expired_entries() -> None:
    from teams_ehr.testing._fake_ehr_checks import JtiRegistry

    registry = JtiRegistry()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    expires = start + timedelta(seconds=240)
    assert registry.remember("app", "j1", expires=expires, now=start)
    assert not registry.remember("app", "j1", expires=expires, now=start + timedelta(seconds=10))
    assert registry.remember("other", "j1", expires=expires, now=start)
    assert registry.remember("app", "j1", expires=expires + timedelta(minutes=5), now=expires)
