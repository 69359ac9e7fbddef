"""The commented settings file: every setting documented, the examples are it (issue 9)."""

from __future__ import annotations

import base64
import re
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import BaseModel

from teams_ehr.cli.settings_template import (
    PLACEHOLDER_KEY,
    PLACEHOLDERS,
    SettingsValues,
    render,
)
from teams_ehr.config import TeamsEhrSettings, load_settings
from teams_ehr.errors import ConfigurationError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
KEY = base64.b64encode(bytes(range(32))).decode()


def _names(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str]]:
    """``(section, field)`` for every setting, sections included."""
    found: list[tuple[str, str]] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found.append(("", name))
            found.extend((name, nested) for _, nested in _names(annotation))
        else:
            found.append((prefix, name))
    return found


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^\[(\w+)\]$", text, flags=re.MULTILINE)
    return {"": parts[0], **dict(zip(parts[1::2], parts[2::2], strict=True))}


def test_every_setting_is_in_the_template() -> None:
    sections = _sections(render(PLACEHOLDERS))
    for section, name in _names(TeamsEhrSettings):
        if section == "" and name in sections:
            continue
        text = sections.get(section, "")
        assert re.search(rf"^(# )?{name} = ", text, re.MULTILINE), f"[{section}] {name}"


def test_rendered_file_is_valid_settings(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "test.pem").write_bytes(b"-")
    values = SettingsValues(
        app_base_url="https://visits.example.org",
        encryption_key=KEY,
        external_id_key=KEY,
        tenant_id="3f2e1d0c-b9a8-4765-8432-10fedcba9876",
        admin_oid="0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
    )
    path = tmp_path / "settings.toml"
    path.write_text(render(values), encoding="utf-8")
    settings = load_settings(path, environ={})
    assert not settings.allow_http  # https: http stays off
    assert settings.admin.administrators == {values.tenant_id: frozenset({values.admin_oid})}
    defaults = TeamsEhrSettings(
        app_base_url=values.app_base_url,
        encryption_key=KEY,
        external_id_key=KEY,
        microsoft={"client_id": values.microsoft_client_id},
    )
    assert settings.attendance == defaults.attendance  # the file changes no default


@pytest.mark.parametrize(("app", "port"), [("fastapi_app", 8000), ("flask_app", 5000)])
def test_examples_are_the_template(app: str, port: int) -> None:
    example = (EXAMPLES / app / "settings.example.toml").read_text(encoding="utf-8")
    expected = replace(PLACEHOLDERS, app_base_url=f"http://127.0.0.1:{port}")
    assert example == render(expected), "regenerate it with teams_ehr.cli.settings_template"


def test_placeholders_fail_loudly(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(render(PLACEHOLDERS), encoding="utf-8")
    with pytest.raises(ConfigurationError) as caught:
        load_settings(path, environ={})
    message = str(caught.value)
    assert "encryption_key: must decode to 32 bytes: generate one with python -c" in message
    assert PLACEHOLDER_KEY not in message
