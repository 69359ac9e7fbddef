"""`teams-ehr init [DIR]` writes a deployment folder the app and the CLI read as is (issue 9)."""

from __future__ import annotations

import json
import stat
import tomllib
from pathlib import Path

import pytest

from leaks import assert_no_leak
from teams_ehr.cli import main
from teams_ehr.config import load_settings
from teams_ehr.keys import LocalSigner
from teams_ehr.orgs.models import Organization

TENANT = "3f2e1d0c-b9a8-4765-8432-10fedcba9876"
ADMIN = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_settings_keys_and_org(
    tmp_path: Path, no_env_settings: None, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site"
    argv = ["init", str(site), "--tenant-id", TENANT, "--admin-oid", ADMIN, "--client-id", "c1"]
    assert main(argv) == 0
    out = capsys.readouterr().out

    settings = load_settings(site / "settings.toml", environ={})
    assert settings.app_base_url == "http://127.0.0.1:8000"
    assert settings.allow_http  # loopback only: see test_http_only_for_loopback
    assert len(settings.encryption_key_bytes()) == 32
    assert settings.external_id_key_bytes() != settings.encryption_key_bytes()
    assert settings.smart.test_key_path == site / "keys" / "test.pem"  # against the file's folder
    assert settings.admin.administrators == {TENANT: frozenset({ADMIN})}
    assert _mode(site / "settings.toml") == 0o600
    assert _mode(site / "keys" / "test.pem") == 0o600

    signer = LocalSigner.from_pem((site / "keys" / "test.pem").read_bytes(), "RS384")
    org = Organization.model_validate(json.loads((site / "org.json").read_text()))
    assert org.tenant_id == TENANT
    assert org.approver_oid == ADMIN
    assert org.test is not None
    assert org.test.config.client_id == "c1"
    assert org.test.config.redirect_uri == "http://127.0.0.1:8000/callback"
    assert org.test.config.allow_http

    assert f"kid {signer.kid}" in out
    assert out.splitlines()[-3:] == [
        f"  cd {site}",
        "  teams-ehr orgs create --config settings.toml --file org.json",
        "  uvicorn app:app --host 127.0.0.1 --port 8000",
    ]
    secrets = tomllib.loads((site / "settings.toml").read_text())
    assert_no_leak([secrets["encryption_key"], secrets["external_id_key"]], out)


def test_init_twice_needs_force(
    tmp_path: Path, no_env_settings: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", str(tmp_path)]) == 0
    first = (tmp_path / "settings.toml").read_text()
    assert main(["init", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "already has settings.toml, keys/test.pem, org.json; pass --force" in err
    assert "(file_exists)" in err
    assert (tmp_path / "settings.toml").read_text() == first
    assert main(["init", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "settings.toml").read_text() != first  # fresh keys


@pytest.mark.parametrize(
    ("option", "url"),
    [
        ("--app-base-url", "http://visits.example.org"),
        ("--fhir-base", "http://ehr.example.org/api/FHIR/R4"),
    ],
)
def test_http_only_for_loopback(
    tmp_path: Path, no_env_settings: None, capsys: pytest.CaptureFixture[str], option: str, url: str
) -> None:
    assert main(["init", str(tmp_path), option, url]) == 2
    assert "http:// only for loopback" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_https_deployment_keeps_http_off(tmp_path: Path, no_env_settings: None) -> None:
    assert main(["init", str(tmp_path), "--app-base-url", "https://visits.example.org"]) == 0
    assert not load_settings(tmp_path / "settings.toml", environ={}).allow_http
    org = json.loads((tmp_path / "org.json").read_text())
    assert org["test"]["config"]["allow_http"] is False


def test_loopback_ehr_gets_allow_http_in_org(tmp_path: Path, no_env_settings: None) -> None:
    base = "http://127.0.0.1:9999/api/FHIR/R4"
    argv = ["init", str(tmp_path), "--app-base-url", "https://visits.example.org"]
    assert main([*argv, "--fhir-base", base]) == 0
    org = Organization.model_validate(json.loads((tmp_path / "org.json").read_text()))
    assert org.test is not None
    assert org.test.config.fhir_base == base
    assert org.test.config.allow_http


def test_init_then_orgs_create(
    tmp_path: Path, no_env_settings: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", str(tmp_path)]) == 0
    config = str(tmp_path / "settings.toml")
    assert main(["orgs", "create", "--config", config, "--file", str(tmp_path / "org.json")]) == 0
    assert "created example-clinic (version 1)" in capsys.readouterr().out
    assert (tmp_path / "teams-ehr.sqlite3").is_file()  # the store beside the settings file
