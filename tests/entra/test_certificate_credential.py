"""A certificate-only app registration signs users in and gets app-only tokens with one credential
(learn.microsoft.com/entra/identity-platform/certificate-credentials).

Before: the runtime built the sign-in configuration from ``client_secret`` only, so a deployment
with a certificate and no secret answered every Microsoft callback with a pydantic traceback (500).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import httpx
import pytest
from entra_helpers import CLIENT_ID, CLINICIAN_OID, REDIRECT_URI, TENANT, FakeClock
from pydantic import SecretStr

from teams_ehr import ConfigurationError, TeamsEhrSettings
from teams_ehr.app import DefaultOrgServices
from teams_ehr.smart.discovery import DiscoveryCache
from teams_ehr.smart.jwks import JwksCache
from teams_ehr.teams.credentials import CertificateCredential
from teams_ehr.teams.signin import (
    EntraAppConfig,
    begin_microsoft_signin,
    complete_microsoft_signin,
)
from teams_ehr.testing.fake_entra import FakeEntra


def _sign_in(config: EntraAppConfig, fake: FakeEntra, clock: FakeClock) -> str:
    url, pending = begin_microsoft_signin(
        config, purpose="clinician_binding", bound_launch="launch-1", session_id="s", now=clock()
    )
    with httpx.Client(transport=httpx.MockTransport(fake.handler)) as client:
        identity = complete_microsoft_signin(
            config,
            fake.authorize_in_browser(url),
            pending,
            session_id="s",
            jwks=JwksCache(clock=clock),
            client=client,
            now=clock(),
        )
    return identity.object_id


def test_sign_in_with_the_certificate_credential(
    fake: FakeEntra, clock: FakeClock, certificate: tuple[bytes, bytes]
) -> None:
    fake.register_app(CLIENT_ID, redirect_uris=[REDIRECT_URI], certificate_pem=certificate[1])
    config = EntraAppConfig(
        tenant_id=TENANT,
        client_id=CLIENT_ID,
        redirect_uri=REDIRECT_URI,
        client_auth=CertificateCredential(CLIENT_ID, certificate),
    )
    assert _sign_in(config, fake, clock) == CLINICIAN_OID
    (token_request,) = [r for r in fake.requests if r.url.path.endswith("/token")]
    assert b"client_secret" not in token_request.content
    assert "authorization" not in token_request.headers


def test_each_request_gets_a_fresh_assertion(certificate: tuple[bytes, bytes]) -> None:
    from datetime import UTC, datetime

    credential = CertificateCredential(CLIENT_ID, certificate)
    now = datetime(2026, 3, 1, tzinfo=UTC)
    first, _ = credential.token_request_auth("https://login.test/t/oauth2/v2.0/token", now=now)
    second, _ = credential.token_request_auth("https://login.test/t/oauth2/v2.0/token", now=now)
    assert first["client_assertion"] != second["client_assertion"]  # a new jti each time
    assert first["client_id"] == CLIENT_ID
    assert "CertificateCredential" in repr(credential)
    assert "BEGIN" not in repr(credential)


def _settings(tmp_path: Path, **microsoft: object) -> TeamsEhrSettings:
    key = base64.b64encode(os.urandom(32)).decode()
    return TeamsEhrSettings(
        app_base_url="https://visits.example.org",
        store_url="sqlite://:memory:",
        encryption_key=SecretStr(key),
        external_id_key=SecretStr(key),
        microsoft={"client_id": CLIENT_ID, **microsoft},
    )


def _services(settings: TeamsEhrSettings) -> DefaultOrgServices:
    return DefaultOrgServices(
        settings,
        http=httpx.AsyncClient(),
        signers={},
        jwks=JwksCache(),
        discovery=DiscoveryCache(),
    )


def test_the_runtime_signs_in_with_its_certificate(
    tmp_path: Path, certificate: tuple[bytes, bytes]
) -> None:
    key_path, cert_path = tmp_path / "key.pem", tmp_path / "cert.pem"
    key_path.write_bytes(certificate[0])
    cert_path.write_bytes(certificate[1])
    config = _services(
        _settings(tmp_path, certificate_path=str(cert_path), private_key_path=str(key_path))
    ).entra_config_for(TENANT)
    assert config.client_secret is None
    assert isinstance(config.client_auth, CertificateCredential)


def test_no_credential_is_a_typed_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as caught:
        _services(_settings(tmp_path)).entra_config_for(TENANT)
    assert caught.value.reason == "microsoft_credential_missing"
    assert "TEAMS_EHR__MICROSOFT__CLIENT_SECRET" in str(caught.value)
