"""The Flask example app passes the same host contract as the FastAPI one (SPEC E2)."""

from __future__ import annotations

import base64
import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

from hosts.contract import check_host_contract
from hosts.drivers import flask_host
from teams_ehr.testing.sandbox import Sandbox

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flask_app" / "app.py"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("teams_ehr_flask_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flask_example_passes_the_host_contract() -> None:
    sandbox = Sandbox()
    with flask_host(sandbox.app(), _example().create_app) as driver:
        check_host_contract(driver, sandbox)


def test_flask_example_runs_from_a_settings_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    settings = tmp_path / "settings.toml"
    settings.write_text(
        'app_base_url = "https://visits.example.org"\n'
        f'store_url = "sqlite:///{tmp_path / "store.sqlite3"}"\n'
        f'external_id_key = "{key}"\n'
        "[microsoft]\n"
        'client_id = "00000000-0000-0000-0000-000000000000"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("TEAMS_EHR_SETTINGS", str(settings))
    monkeypatch.setenv("TEAMS_EHR__ENCRYPTION_KEY", key)
    app = _example().app_from_environment()
    try:
        with app.test_client() as client:
            assert client.get("/healthz").get_json() == {"status": "ok"}
            assert client.get("/.well-known/jwks.json").get_json() == {"keys": []}
    finally:
        app.extensions["teams_ehr"].close()
    assert (tmp_path / "store.sqlite3").exists()
