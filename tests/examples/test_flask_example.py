"""The Flask example app passes the same host contract as the FastAPI one (SPEC E2)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

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


def test_flask_example_runs_from_a_settings_file(settings_from_file: Path) -> None:
    app = _example().app_from_environment()
    try:
        with app.test_client() as client:
            assert client.get("/healthz").get_json() == {"status": "ok"}
            assert client.get("/.well-known/jwks.json").get_json() == {"keys": []}
    finally:
        app.extensions["teams_ehr"].close()
    assert settings_from_file.exists()
