"""FakeEntra as a product (SPEC E1): endpoints, checks and token shapes."""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import load_pem_x509_certificate
from entra_helpers import CLIENT_ID, CLIENT_SECRET, OTHER_TENANT, REDIRECT_URI, TENANT, FakeClock

from teams_ehr.errors import UsageError
from teams_ehr.smart.pkce import code_challenge_s256
from teams_ehr.testing.fake_entra import GRAPH_CHANGE_TRACKING_APP_ID, FakeEntra

CERT_APP = "cccccccc-0000-4000-8000-00000000000c"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi"}


def _authorize_url(fake: FakeEntra, **overrides: str | None) -> str:
    params: dict[str, str | None] = {
        "client_id": CLIENT_ID,
        "response_type": "code",
        "redirect_uri": REDIRECT_URI,
        "scope": "openid profile",
        "state": "st-1",
        "nonce": "n-1",
        "code_challenge": code_challenge_s256("v" * 43),
        "code_challenge_method": "S256",
        **overrides,
    }
    query = {k: v for k, v in params.items() if v is not None}
    return f"{fake.authorize_endpoint}?{urlencode(query)}"


def _post(fake: FakeEntra, form: dict[str, str], **kwargs: Any) -> httpx.Response:
    with httpx.Client(transport=httpx.MockTransport(fake.handler)) as client:
        return client.post(fake.token_endpoint, data=form, **kwargs)


def _redeem(fake: FakeEntra, code: str, verifier: str = "v" * 43) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    return _post(fake, form)


def _assertion(
    key_pem: bytes, cert_pem: bytes, fake: FakeEntra, *, now: int, **changes: Any
) -> str:
    der = load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    x5t = base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode()
    header: dict[str, Any] = {"x5t": x5t, **changes.pop("header", {})}
    claims = {
        "iss": CERT_APP,
        "sub": CERT_APP,
        "aud": fake.token_endpoint,
        "jti": str(uuid.uuid4()),
        "iat": now,
        "exp": now + 300,
        **changes,
    }
    key = serialization.load_pem_private_key(key_pem, password=None)
    return jwt.encode(claims, key, algorithm="RS256", headers=header)  # type: ignore[arg-type]


def _cc_form(assertion: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": CERT_APP,
        "scope": "https://graph.microsoft.com/.default",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
    }


def test_discovery_and_jwks_shapes(fake: FakeEntra) -> None:
    with httpx.Client(transport=httpx.MockTransport(fake.handler)) as client:
        config = client.get(fake.openid_configuration_url).json()
        keys = client.get(config["jwks_uri"]).json()
        common = client.get(fake.common_jwks_uri).json()
    assert config["issuer"] == f"https://login.microsoftonline.com/{TENANT}/v2.0"
    assert config["authorization_endpoint"].endswith(f"/{TENANT}/oauth2/v2.0/authorize")
    assert config["id_token_signing_alg_values_supported"] == ["RS256"]
    assert keys == common
    (jwk,) = keys["keys"]
    assert jwk["kid"] == fake.current_kid
    assert jwk["kty"] == "RSA"
    assert jwk["use"] == "sig"
    assert not PRIVATE_MEMBERS & set(jwk)


def test_unknown_tenant_paths_are_404(fake: FakeEntra) -> None:
    for tenant in ("common", "organizations", OTHER_TENANT):
        url = f"https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize"
        assert fake.handler(httpx.Request("GET", url)).status_code == 404


def test_authorize_refuses_unknown_client_and_redirect(fake: FakeEntra) -> None:
    with pytest.raises(UsageError):
        fake.authorize_in_browser(_authorize_url(fake, client_id="nope"))
    with pytest.raises(UsageError):
        fake.authorize_in_browser(_authorize_url(fake, redirect_uri=REDIRECT_URI + "/x"))


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": None}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_mode": "form_post"}, "invalid_request"),
        ({"scope": "profile"}, "invalid_scope"),
    ],
)
def test_authorize_errors_redirect_back(
    fake: FakeEntra, overrides: dict[str, str | None], error: str
) -> None:
    params = fake.authorize_in_browser(_authorize_url(fake, **overrides))
    assert params["error"] == error
    assert params["state"] == "st-1"
    assert "code" not in params


def test_authorize_without_signed_in_user(fake: FakeEntra) -> None:
    fake.sign_out()
    assert fake.authorize_in_browser(_authorize_url(fake))["error"] == "login_required"


def test_code_is_single_use_and_pkce_checked(fake: FakeEntra) -> None:
    code = fake.authorize_in_browser(_authorize_url(fake))["code"]
    assert _redeem(fake, code, verifier="w" * 43).json()["error"] == "invalid_grant"
    code = fake.authorize_in_browser(_authorize_url(fake))["code"]
    body = _redeem(fake, code).json()
    assert body["token_type"] == "Bearer"
    assert "id_token" in body
    assert _redeem(fake, code).json()["error"] == "invalid_grant"


def test_code_expires_after_ten_minutes(fake: FakeEntra, clock: FakeClock) -> None:
    code = fake.authorize_in_browser(_authorize_url(fake))["code"]
    clock.advance(601)
    assert _redeem(fake, code).status_code == 400


def test_id_token_claims(fake: FakeEntra, clock: FakeClock) -> None:
    code = fake.authorize_in_browser(_authorize_url(fake))["code"]
    id_token = _redeem(fake, code).json()["id_token"]
    header = jwt.get_unverified_header(id_token)
    claims = jwt.decode(id_token, options={"verify_signature": False})
    assert header["alg"] == "RS256"
    assert header["kid"] == fake.current_kid
    assert claims["iss"] == fake.issuer
    assert claims["aud"] == CLIENT_ID
    assert claims["tid"] == TENANT
    assert claims["nonce"] == "n-1"
    assert claims["ver"] == "2.0"
    assert claims["iat"] == int(clock().timestamp())
    assert claims["exp"] > claims["iat"]
    assert claims["sub"] != claims["oid"]  # pairwise subject


def test_foreign_tenant_user(fake: FakeEntra) -> None:
    fake.sign_in_as("0a0b0c0d-0000-4000-8000-0000000000ff", tenant_id=OTHER_TENANT)
    code = fake.authorize_in_browser(_authorize_url(fake))["code"]
    claims = jwt.decode(_redeem(fake, code).json()["id_token"], options={"verify_signature": False})
    assert claims["tid"] == OTHER_TENANT
    assert claims["iss"].endswith(f"/{OTHER_TENANT}/v2.0")


def test_client_credentials_with_secret_post_and_basic(fake: FakeEntra) -> None:
    form = {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scope": "https://graph.microsoft.com/.default",
    }
    body = _post(fake, form).json()
    assert set(body) == {"token_type", "expires_in", "access_token"}
    claims = fake.validate_access_token(body["access_token"])
    assert claims is not None
    assert claims["appid"] == CLIENT_ID
    assert claims["idtyp"] == "app"
    assert claims["aud"] == "https://graph.microsoft.com"
    assert claims["tid"] == TENANT
    basic = {k: v for k, v in form.items() if k not in ("client_id", "client_secret")}
    assert _post(fake, basic, auth=(CLIENT_ID, CLIENT_SECRET)).status_code == 200
    wrong = _post(fake, {**form, "client_secret": "nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client"
    assert _post(fake, {**form, "scope": "User.Read"}).json()["error"] == "invalid_scope"


def test_client_credentials_with_certificate(
    fake: FakeEntra, clock: FakeClock, certificate: tuple[bytes, bytes]
) -> None:
    key_pem, cert_pem = certificate
    fake.register_app(CERT_APP, certificate_pem=cert_pem)
    now = int(clock().timestamp())
    good = _assertion(key_pem, cert_pem, fake, now=now, jti="jti-1")
    response = _post(fake, _cc_form(good))
    assert response.status_code == 200
    assert fake.validate_access_token(response.json()["access_token"]) is not None
    replay = _post(fake, _cc_form(good))
    assert replay.status_code == 401
    assert "replayed" in replay.json()["error_description"]


@pytest.mark.parametrize(
    "changes",
    [
        {"header": {"x5t": "AAAA"}},
        {"aud": "https://login.microsoftonline.com/common/oauth2/v2.0/token"},
        {"exp_offset": 660},
        {"exp_offset": -120},
        {"iss": "someone-else"},
    ],
)
def test_bad_certificate_assertions_refused(
    fake: FakeEntra,
    clock: FakeClock,
    certificate: tuple[bytes, bytes],
    changes: dict[str, Any],
) -> None:
    key_pem, cert_pem = certificate
    fake.register_app(CERT_APP, certificate_pem=cert_pem)
    now = int(clock().timestamp())
    if "exp_offset" in changes:
        changes = {"exp": now + changes.pop("exp_offset")}
    form = _cc_form(_assertion(key_pem, cert_pem, fake, now=now, **changes))
    response = _post(fake, form)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_assertion_signed_by_another_key_refused(
    fake: FakeEntra, clock: FakeClock, certificate: tuple[bytes, bytes]
) -> None:
    _, cert_pem = certificate
    fake.register_app(CERT_APP, certificate_pem=cert_pem)
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    forged = _assertion(other, cert_pem, fake, now=int(clock().timestamp()))
    assert _post(fake, _cc_form(forged)).status_code == 401


def test_access_tokens_expire_and_unknown_are_refused(fake: FakeEntra, clock: FakeClock) -> None:
    token = fake.issue_app_token(CLIENT_ID)
    assert fake.validate_access_token(token) is not None
    assert fake.validate_access_token(token + "x") is None
    clock.advance(3601)
    assert fake.validate_access_token(token) is None


def test_rotate_keys(fake: FakeEntra) -> None:
    old = fake.current_kid
    new = fake.rotate_keys()
    assert new != old
    assert [k["kid"] for k in fake.jwks()["keys"]] == [new, old]
    newest = fake.rotate_keys(keep_previous=False)
    assert [k["kid"] for k in fake.jwks()["keys"]] == [newest]


def test_fail_next(fake: FakeEntra) -> None:
    fake.fail_next("jwks", status=500, times=2)
    with httpx.Client(transport=httpx.MockTransport(fake.handler)) as client:
        statuses = [client.get(fake.jwks_uri).status_code for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert len(fake.requests) == 3


def test_graph_validation_token_claims(fake: FakeEntra, clock: FakeClock) -> None:
    token = fake.sign_graph_validation_token(audience=CLIENT_ID)
    key_set = jwt.PyJWKSet.from_dict(fake.jwks())
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(
        token,
        key_set[header["kid"]],
        algorithms=["RS256"],
        audience=CLIENT_ID,
        issuer=f"https://sts.windows.net/{TENANT}/",
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert claims["appid"] == GRAPH_CHANGE_TRACKING_APP_ID
    assert claims["tid"] == TENANT
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["ver"] == "1.0"
    v2 = jwt.decode(
        fake.sign_graph_validation_token({"exp": None}, audience=CLIENT_ID, version="2.0"),
        options={"verify_signature": False},
    )
    assert v2["azp"] == GRAPH_CHANGE_TRACKING_APP_ID
    assert "appid" not in v2
    assert "exp" not in v2
    assert v2["iss"] == fake.issuer
    with pytest.raises(UsageError):
        fake.sign_graph_validation_token()


def test_alg_none_override(fake: FakeEntra) -> None:
    fake.override_next_id_token({"name": None}, alg="none")
    code = fake.authorize_in_browser(_authorize_url(fake))["code"]
    id_token = _redeem(fake, code).json()["id_token"]
    assert jwt.get_unverified_header(id_token)["alg"] == "none"
    assert id_token.endswith(".")
    assert "name" not in jwt.decode(id_token, options={"verify_signature": False})


@pytest.mark.anyio
async def test_graph_credentials_provider_against_fake(
    fake: FakeEntra, clock: FakeClock, certificate: tuple[bytes, bytes]
) -> None:
    """teams.credentials (app-only Graph tokens) works against FakeEntra, certificate and secret."""
    from pydantic import SecretStr

    from teams_ehr.teams.credentials import ClientCredentialsProvider

    fake.register_app(CERT_APP, certificate_pem=certificate[1])
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as http:
        by_certificate = ClientCredentialsProvider(
            TENANT, CERT_APP, http=http, certificate=certificate, clock=clock
        )
        by_secret = ClientCredentialsProvider(
            TENANT, CLIENT_ID, http=http, client_secret=SecretStr(CLIENT_SECRET), clock=clock
        )
        for provider, app in ((by_certificate, CERT_APP), (by_secret, CLIENT_ID)):
            token = await provider.get_token("https://graph.microsoft.com/.default")
            claims = fake.validate_access_token(token.token)
            assert claims is not None
            assert claims["appid"] == app
            assert token.expires_on == int(clock().timestamp()) + 3600


def test_graph_token_tenant_for_fake_graph(fake: FakeEntra, clock: FakeClock) -> None:
    graph_token = fake.issue_app_token(CLIENT_ID)
    other_resource = fake.issue_app_token(CLIENT_ID, scope="https://vault.azure.net/.default")
    assert fake.graph_token_tenant(graph_token) == TENANT
    assert fake.graph_token_tenant(other_resource) is None
    assert fake.graph_token_tenant("forged") is None
    clock.advance(3600)
    assert fake.graph_token_tenant(graph_token) is None
