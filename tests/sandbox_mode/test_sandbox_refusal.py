"""Microsoft sandbox mode is refused off loopback, and absent unless it is turned on."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from hosts.processes import EXAMPLES
from teams_ehr.app import TeamsEhr
from teams_ehr.config import MicrosoftSettings, TeamsEhrSettings
from teams_ehr.errors import ConfigurationError
from teams_ehr.integrations.routes import SANDBOX_ROUTES, mounted_routes
from teams_ehr.web import SANDBOX_BANNER, html_page, redirect, with_banner


def _settings(app_base_url: str, **extra: object) -> TeamsEhrSettings:
    key = base64.b64encode(os.urandom(32)).decode("ascii")
    return TeamsEhrSettings.model_validate(
        {
            "app_base_url": app_base_url,
            "store_url": "sqlite://:memory:",
            "encryption_key": key,
            "external_id_key": key,
            "microsoft": MicrosoftSettings(client_id="app", client_secret=SecretStr("s")),
            **extra,
        }
    )


@pytest.mark.parametrize(
    "base", ["https://visits.example.org", "http://10.0.0.5:8000", "http://127.0.0.1.example.org"]
)
def test_the_mode_is_refused_on_a_non_loopback_app_base_url(base: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        _settings(base, microsoft_sandbox=True)
    assert caught.value.reason == "invalid_settings"
    message = str(caught.value)
    assert "microsoft_sandbox:" in message
    assert "loopback app_base_url" in message
    assert "microsoft_sandbox_off_loopback" in message


@pytest.mark.parametrize(
    "base",
    ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000", "http://127.0.0.2"],
)
def test_the_mode_is_accepted_on_loopback(base: str) -> None:
    assert _settings(base, microsoft_sandbox=True).microsoft_sandbox


def test_the_development_flag_allows_another_host() -> None:
    settings = _settings(
        "https://dev-box.example.org", microsoft_sandbox=True, microsoft_sandbox_off_loopback=True
    )
    assert settings.microsoft_sandbox


def test_a_host_with_the_mode_on_a_public_url_does_not_start(tmp_path: Path) -> None:
    """The FastAPI example, as a deployer starts it, stops at start-up with the fix."""
    key = base64.b64encode(os.urandom(32)).decode("ascii")
    settings = tmp_path / "settings.toml"
    settings.write_text(
        'app_base_url = "https://visits.example.org"\n'
        f'encryption_key = "{key}"\nexternal_id_key = "{key}"\n'
        "microsoft_sandbox = true\n"
        '[microsoft]\nclient_id = "app"\n',
        encoding="utf-8",
    )
    env = {**os.environ, "TEAMS_EHR_SETTINGS": str(settings)}
    command = [sys.executable, "-m", "uvicorn", "--factory", "app:app_from_environment"]
    done = subprocess.run(
        [*command, "--host", "127.0.0.1", "--port", "0"],
        cwd=EXAMPLES / "fastapi_app",
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    output = done.stderr.decode() + done.stdout.decode()
    assert "microsoft_sandbox: the Microsoft sandbox" in output
    assert "loopback app_base_url" in output


def test_the_sandbox_routes_are_mounted_only_in_sandbox_mode() -> None:
    off = mounted_routes(_settings("http://127.0.0.1:8000"))
    on = mounted_routes(_settings("http://127.0.0.1:8000", microsoft_sandbox=True))
    assert not set(SANDBOX_ROUTES) & set(off.routes)
    assert set(SANDBOX_ROUTES) <= set(on.routes)
    assert all(spec.path.startswith("/_sandbox/microsoft/") for spec in SANDBOX_ROUTES)
    only_visits = mounted_routes(
        _settings("http://127.0.0.1:8000", microsoft_sandbox=True), include={"visits"}
    )
    assert set(SANDBOX_ROUTES) <= set(only_visits.routes)


@pytest.mark.anyio
async def test_the_sandbox_needs_the_runtime_s_own_http_client() -> None:
    settings = _settings("http://127.0.0.1:8000", microsoft_sandbox=True)
    async with httpx.AsyncClient(timeout=5) as http:
        with pytest.raises(ConfigurationError) as caught:
            async with TeamsEhr(settings, http=http, signers={}):
                pass
    assert caught.value.reason == "invalid_settings"
    assert "do not inject http=" in str(caught.value)


@pytest.mark.anyio
async def test_the_runtime_routes_microsoft_s_hosts_to_the_fakes_and_nothing_else() -> None:
    settings = _settings("http://127.0.0.1:8000", microsoft_sandbox=True)
    async with TeamsEhr(settings, signers={}) as runtime:
        sandbox = runtime.microsoft_sandbox
        assert sandbox is not None
        answer = await runtime.http.get(
            settings.microsoft.authority_host + "/common/discovery/v2.0/keys"
        )
        assert answer.status_code == 200
        assert answer.json()["keys"]
        with pytest.raises(httpx.TransportError):  # the EHR side: the real (pinning) network
            await runtime.http.get("https://ehr.invalid/metadata")
    async with TeamsEhr(_settings("http://127.0.0.1:8000"), signers={}) as plain:
        assert plain.microsoft_sandbox is None


def test_the_banner_goes_at_the_top_of_every_page_and_nowhere_else() -> None:
    page = with_banner(html_page("<p>hello</p>"))
    body = page.body.decode()
    assert body.index(SANDBOX_BANNER) == body.index("<body>") + len("<body>")
    assert "Microsoft sandbox" in body
    moved = redirect("/elsewhere")
    assert with_banner(moved) is moved
