"""The FastAPI example app passes the host contract and starts from a settings file (SPEC E2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from hosts.contract import check_host_contract
from hosts.drivers import starlette_host
from teams_ehr.demo.example import EXAMPLE_PATH, load_fastapi_example
from teams_ehr.errors import ConfigurationError
from teams_ehr.testing.sandbox import Sandbox


def test_fastapi_example_passes_the_host_contract() -> None:
    sandbox = Sandbox()
    with starlette_host(sandbox.app(), load_fastapi_example()) as driver:
        check_host_contract(driver, sandbox)


def test_fastapi_example_runs_from_a_settings_file(settings_from_file: Path) -> None:
    module = _example_module()
    with TestClient(module.app_from_environment(), base_url="https://visits.example.org") as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/.well-known/jwks.json").json() == {"keys": []}
        assert c.get("/docs").status_code == 404  # no API docs for launch endpoints
    assert settings_from_file.exists()


def test_example_settings_file_is_complete_but_needs_real_secrets(tmp_path: Path) -> None:
    from teams_ehr.config import load_settings

    example = EXAMPLE_PATH.with_name("settings.example.toml")
    with pytest.raises(ConfigurationError):  # placeholders are not keys: fail loudly
        load_settings(example, environ={}).encryption_key_bytes()


def test_missing_example_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_fastapi_example(tmp_path / "nope.py")
    assert caught.value.reason == "example_missing"


def _example_module():  # type: ignore[no-untyped-def]
    import importlib.util

    spec = importlib.util.spec_from_file_location("fastapi_example_under_test", EXAMPLE_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
