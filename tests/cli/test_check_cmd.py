"""`teams-ehr check`: SMART discovery over real sockets and a capability report (SPEC A2, E4)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from teams_ehr.cli import main
from teams_ehr.cli.check_cmd import build_report
from teams_ehr.smart.discovery import SmartConfiguration
from teams_ehr.testing.fake_ehr import FakeEhr
from teams_ehr.testing.loopback import serve_on_loopback

EPIC_PATH = "/interconnect-fhir-oauth/api/FHIR/R4"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeEhr, str]]:
    fake = FakeEhr("http://127.0.0.1/placeholder")
    with serve_on_loopback(fake.asgi_app()) as url:
        yield fake, url


@pytest.fixture
def ehr(served: tuple[FakeEhr, str]) -> FakeEhr:
    """The served FakeEhr, reset to a well-behaved Epic-like server for each test."""
    fake, url = served
    fake.rebase(url + EPIC_PATH)
    fake.smart_configuration_overrides = {}
    fake.serve_well_known = True
    fake.requests.clear()
    return fake


def test_a_good_epic_server_is_usable(ehr: FakeEhr, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", ehr.base_url, "--allow-http", "--epic-client-id", "my-client"])
    out, err = capsys.readouterr()
    assert code == 0, out
    assert "verdict: usable" in out
    assert f"token           {ehr.token_url}" in out
    assert "PKCE S256       yes (S256)" in out
    assert "auth methods    private_key_jwt, client_secret_basic" in out
    assert "signing algs    RS384, ES384" in out
    assert "iss parameter   yes" in out
    assert "[x] launch-ehr" in out
    assert "[x] client-confidential-asymmetric" in out
    assert (
        "Epic            yes (Interconnect path; /api/FHIR/<version> layout; "
        "--epic-client-id given)" in out
    )
    assert "GET " + ehr.base_url + "/.well-known/smart-configuration" in err  # progress
    (request,) = ehr.requests
    assert request.headers["Epic-Client-ID"] == "my-client"


def test_json_report(ehr: FakeEhr, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", ehr.base_url, "--allow-http", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["usable"] is True
    assert report["source"] == "smart-configuration"
    assert report["pkce_s256"] is True
    assert report["authorization_endpoint"] == ehr.authorize_url
    assert report["capabilities"]["sso-openid-connect"] is True
    assert report["epic"] is True
    # Epic detected but no Epic-Client-ID sent: a warning, not a problem.
    assert report["problems"] == []
    assert any("--epic-client-id" in w for w in report["warnings"])


def test_a_server_without_s256_is_not_usable(
    ehr: FakeEhr, capsys: pytest.CaptureFixture[str]
) -> None:
    ehr.smart_configuration_overrides = {"code_challenge_methods_supported": ["plain"]}
    assert main(["check", ehr.base_url, "--allow-http"]) == 1
    out = capsys.readouterr().out
    assert "PKCE S256       no (plain)" in out
    assert "verdict: NOT usable" in out
    assert "PKCE S256 is not offered" in out


def test_capability_statement_fallback(ehr: FakeEhr, capsys: pytest.CaptureFixture[str]) -> None:
    ehr.serve_well_known = False
    assert main(["check", ehr.base_url, "--allow-http", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["source"] == "CapabilityStatement"
    assert report["token_endpoint"] == ehr.token_url
    assert report["pkce_s256"] is False
    assert any("code_challenge_methods_supported" in p for p in report["problems"])
    assert any("no SMART capabilities" in w for w in report["warnings"])
    assert [r.url.path for r in ehr.requests] == [
        EPIC_PATH + "/.well-known/smart-configuration",
        EPIC_PATH + "/metadata",
    ]


def test_a_failing_server_is_not_usable(ehr: FakeEhr, capsys: pytest.CaptureFixture[str]) -> None:
    ehr.fail_next("smart-configuration", 500)
    assert main(["check", ehr.base_url, "--allow-http"]) == 1
    out = capsys.readouterr().out
    assert "discovery failed: smart-configuration answered 500 (discovery_status)" in out


def test_an_unreachable_server_is_an_error_without_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["check", f"http://127.0.0.1:{port}/fhir", "--allow-http"]) == 2
    err = capsys.readouterr().err
    assert f"cannot reach http://127.0.0.1:{port}/fhir" in err
    assert "(transport)" in err
    assert "Traceback" not in err


def test_http_needs_allow_http(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "http://ehr.example/fhir"]) == 2
    assert "bad_fhir_base" in capsys.readouterr().err


def _config(**overrides: object) -> SmartConfiguration:
    data: dict[str, object] = {
        "issuer": "https://ehr.example/oauth2",
        "authorization_endpoint": "https://ehr.example/oauth2/authorize",
        "token_endpoint": "https://ehr.example/oauth2/token",
        "jwks_uri": "https://ehr.example/oauth2/jwks",
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": ["launch-ehr", "sso-openid-connect", "context-ehr-appointment"],
    }
    data.update(overrides)
    return SmartConfiguration.model_validate({k: v for k, v in data.items() if v is not None})


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({}, None),
        ({"authorization_endpoint": None}, "no authorization_endpoint"),
        ({"code_challenge_methods_supported": None}, "is not advertised (required"),
        ({"token_endpoint_auth_methods_supported": ["client_secret_basic"]}, "private_key_jwt"),
        ({"token_endpoint_auth_signing_alg_values_supported": ["RS256"]}, "RS384 nor ES384"),
        ({"capabilities": ["sso-openid-connect"]}, "launch-ehr is not advertised"),
        ({"capabilities": ["launch-ehr"]}, "sso-openid-connect is not advertised"),
    ],
)
def test_verdict_rules(overrides: dict[str, object], problem: str | None) -> None:
    report = build_report("https://ehr.example/fhir", _config(**overrides), source="x")
    if problem is None:
        assert report.usable
        assert report.epic is False
        assert report.capabilities["context-ehr-appointment"] is True
        assert report.capabilities["launch-standalone"] is False
    else:
        assert not report.usable
        assert any(problem in p for p in report.problems), report.problems


def test_epic_layout_is_recognised_from_the_real_urls() -> None:
    base = "https://fhir.epic.com/interconnect-fhir-oauth/api/FHIR/R4"
    config = _config(token_endpoint="https://fhir.epic.com/interconnect-fhir-oauth/oauth2/token")
    report = build_report(base, config, source="smart-configuration")
    assert report.epic_signals == [
        "Interconnect path",
        "/api/FHIR/<version> layout",
        "OAuth 2.0 server at <interconnect>/oauth2",
    ]
    other = build_report("https://fhir.example.org/r4", config, source="smart-configuration")
    assert other.epic is False
    assert not any("--epic-client-id" in w for w in other.warnings)
