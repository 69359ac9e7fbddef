"""`teams-ehr orgs list|show|create|records` on a SQLite file store (SPEC C1, C2, E4)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from leaks import assert_no_leak
from teams_ehr.cli import main
from teams_ehr.testing.sandbox import APPROVER_OID, TENANT_ID, Sandbox

if TYPE_CHECKING:
    from cli_helpers import CliEnv

ORG: dict[str, Any] = {
    "org_id": "north-clinic",
    "display_name": "North Clinic",
    "tenant_id": TENANT_ID,
    "approver_oid": APPROVER_OID,
    "test": {
        "config": {
            "fhir_base": "https://ehr.north.example/interconnect/api/FHIR/R4",
            "client_id": "north-test",
            "redirect_uri": "https://app.example/callback",
            "jwks_url": "https://app.example/.well-known/jwks/test.json",
        }
    },
}


def _create(cli_env: CliEnv, tmp_path: Path, document: object = ORG) -> int:
    path = tmp_path / "org.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return main(cli_env.args("orgs", "create", "--file", str(path)))


def test_create_list_show(
    cli_env: CliEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _create(cli_env, tmp_path) == 0
    out, err = capsys.readouterr()
    assert "created north-clinic (version 1); environments: test=draft, production=-" in out
    assert f"store: sqlite:///{tmp_path}/store.db" in err  # progress on stderr

    assert main(cli_env.args("orgs", "list")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ORG", "NAME", "TENANT", "TEST", "PRODUCTION", "VERSION"]
    assert lines[1].split() == ["north-clinic", "North", "Clinic", TENANT_ID, "draft", "-", "1"]

    assert main(cli_env.args("orgs", "list", "--json")) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["org_id"] == "north-clinic"
    assert listed["version"] == 1

    assert main(cli_env.args("orgs", "list", "--tenant", APPROVER_OID)) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1  # headers only: another tenant

    assert main(cli_env.args("orgs", "show", "north-clinic")) == 0
    out = capsys.readouterr().out
    assert "test: draft" in out
    assert "fhir_base     https://ehr.north.example/interconnect/api/FHIR/R4" in out
    assert "production: not configured" in out
    assert "system" in out  # the audit log
    assert "created" in out

    assert main(cli_env.args("orgs", "show", "north-clinic", "--json")) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["organization"]["test"]["state"] == "draft"
    assert [e["action"] for e in shown["audit"]] == ["created"]
    assert_no_leak([cli_env.key_canary], out, shown)


def test_create_twice_is_a_conflict(
    cli_env: CliEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _create(cli_env, tmp_path) == 0
    assert _create(cli_env, tmp_path) == 2
    assert "teams-ehr: error:" in capsys.readouterr().err


def test_bad_json_says_where(
    cli_env: CliEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "org.json"
    path.write_text('{\n  "org_id": "x",\n  "display_name" "y"\n}\n', encoding="utf-8")
    assert main(cli_env.args("orgs", "create", "--file", str(path))) == 2
    err = capsys.readouterr().err
    assert f"{path}: invalid JSON at line 3 column 18: Expecting ':' delimiter" in err
    assert "(invalid_json)" in err


def test_invalid_organization_names_the_fields(
    cli_env: CliEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = json.loads(json.dumps(ORG))
    bad["org_id"] = "North Clinic"
    bad["test"]["config"]["redirect_uri"] = "http://app.example/callback"
    assert _create(cli_env, tmp_path, bad) == 2
    err = capsys.readouterr().err
    assert "org_id: org_id must be 1–64 lower-case letters" in err
    assert "test.config: redirect_uri must be an https URL" in err
    assert "(invalid_organization)" in err


def test_missing_file_and_unknown_org(
    cli_env: CliEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.json"
    assert main(cli_env.args("orgs", "create", "--file", str(missing))) == 2
    assert f"cannot read {missing}" in capsys.readouterr().err
    assert main(cli_env.args("orgs", "show", "ghost")) == 2
    assert "no organization 'ghost' (unknown_organization)" in capsys.readouterr().err


def test_missing_settings_name_the_fields(
    no_env_settings: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["orgs", "list"]) == 2
    err = capsys.readouterr().err
    assert "invalid settings: app_base_url, encryption_key, external_id_key, microsoft" in err
    assert "pass --config PATH or set TEAMS_EHR__* variables" in err
    partial = tmp_path / "partial.toml"
    partial.write_text('app_base_url = "https://app.example"\n', encoding="utf-8")
    assert main(["orgs", "list", "--config", str(partial)]) == 2
    err = capsys.readouterr().err
    assert "invalid settings: encryption_key, external_id_key, microsoft" in err
    assert "TEAMS_EHR__" not in err


def test_environment_variables_override_the_file(
    cli_env: CliEnv,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    other = tmp_path / "other.db"
    monkeypatch.setenv("TEAMS_EHR__STORE_URL", f"sqlite:///{other}")
    assert main(cli_env.args("orgs", "list")) == 0
    assert f"store: sqlite:///{other}" in capsys.readouterr().err
    assert other.exists()


def test_records_of_an_approved_environment(
    tmp_path: Path,
    no_env_settings: None,
    settings_file: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = tmp_path / "sandbox.db"
    sandbox = Sandbox(store_url=f"sqlite:///{store}")

    async def seed() -> None:
        async with sandbox.app() as app:
            await sandbox.seed_organization(app)

    anyio.run(seed)
    key = sandbox.settings.encryption_key.get_secret_value()
    config = settings_file(tmp_path / "s.toml", store, encryption_key=key)
    argv = ["orgs", "records", "sandbox-clinic", "test", "--config", str(config)]
    assert main([*argv, "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert records["provider_launch_url"] == "https://app.example/launch/sandbox-clinic/test"
    assert records["patient_launch_url"] == "https://app.example/patient/sandbox-clinic/test"
    assert records["fhir_base"] == sandbox.ehr.base_url
    assert records["context_query"] == "sessionId=%CSN%"

    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "provider_launch_url https://app.example/launch/sandbox-clinic/test" in out
    assert_no_leak([key], out, records)


def test_records_need_an_approval(
    cli_env: CliEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _create(cli_env, tmp_path) == 0
    capsys.readouterr()
    assert main(cli_env.args("orgs", "records", "north-clinic", "test")) == 2
    assert "(not_approved)" in capsys.readouterr().err
