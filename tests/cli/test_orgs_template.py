"""`teams-ehr orgs template`, and `orgs create` errors that name the field and the fix (issue 9)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from teams_ehr.cli import main
from teams_ehr.cli.org_template import FIELDS
from teams_ehr.orgs.models import Organization

if TYPE_CHECKING:
    from cli_helpers import CliEnv


def _template(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[dict[str, Any], str]:
    assert main(["orgs", "template", *argv]) == 0
    out, err = capsys.readouterr()
    return json.loads(out), err


def test_template_is_a_valid_document_with_its_fields_explained(
    capsys: pytest.CaptureFixture[str],
) -> None:
    document, err = _template(capsys)
    org = Organization.model_validate(document)
    assert org.test is not None
    assert org.test.config.redirect_uri == "https://visits.example.org/callback"
    for name in FIELDS:
        assert f"  {name}: " in err
    for name in ("org_id", "tenant_id", "approver_oid"):
        assert name in document


def test_template_from_settings_and_a_loopback_ehr(
    cli_env: CliEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    base = "http://127.0.0.1:8123/fhir"
    document, _ = _template(capsys, "--config", str(cli_env.config), "--fhir-base", base)
    config = document["test"]["config"]
    assert config["redirect_uri"] == "https://app.example/callback"
    assert config["fhir_base"] == base
    assert config["allow_http"] is True


def test_template_refuses_a_fhir_base_no_launch_accepts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["orgs", "template", "--fhir-base", "http://10.0.0.8/fhir"]) == 2
    err = capsys.readouterr().err
    assert "test.config.fhir_base: FHIR base URL refused: IP literal host" in err


def _create_error(
    cli_env: CliEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str], document: object
) -> str:
    path = tmp_path / "org.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    assert main(cli_env.args("orgs", "create", "--file", str(path))) == 2
    return capsys.readouterr().err


def test_http_fhir_base_without_allow_http_names_the_setting(
    cli_env: CliEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document, _ = _template(capsys, "--fhir-base", "http://127.0.0.1:8123/fhir")
    document["test"]["config"]["allow_http"] = False
    err = _create_error(cli_env, tmp_path, capsys, document)
    assert "test.config.fhir_base: FHIR base URL refused: scheme not allowed" in err
    assert 'needs "allow_http": true in test.config' in err
    assert "teams-ehr orgs template" in err


def test_guessed_shape_names_unknown_and_missing_fields(
    cli_env: CliEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    guessed = {"org_id": "north", "name": "North", "tenant": "x", "environments": {}}
    err = _create_error(cli_env, tmp_path, capsys, guessed)
    assert "name: unknown field: remove it or fix its spelling" in err
    assert "environments: unknown field" in err
    assert "display_name: required: add it — the name shown in the admin console" in err
    assert "tenant_id: required: add it — the organization's Microsoft Entra tenant id" in err
    assert "Extra inputs are not permitted" not in err
