"""A refused sign-in logs the provider's OAuth ``error`` code and Entra's AADSTS number, nothing more.

Issue 9, finding 9: "microsoft_callback refused: OAuthError (oauth)" hid ``login_required`` and
the AADSTS code a deployer needs. RFC 6749 §4.1.2.1 ``error`` codes and the ``AADSTS`` number are
logged; the ``error_description`` (which may name the user) and tokens never are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from hosts.drivers import HostDriver, flask_app, flask_host, starlette_app, starlette_host
from teams_ehr.errors import AuthorizationDeclinedError, LaunchParameterError, OAuthError
from teams_ehr.integrations.refusals import refusal_summary
from teams_ehr.testing.sandbox import Sandbox

ORG = "sandbox-clinic"
HOSTS = pytest.mark.parametrize(
    "host", [(starlette_host, starlette_app), (flask_host, flask_app)], ids=["starlette", "flask"]
)
Host = tuple[Callable[..., Any], Callable[..., Any]]
PERSONAL = "jane.doe@example.org"
DESCRIPTION = f"AADSTS50058: A silent sign-in request was sent but {PERSONAL} is not signed in."


@pytest.fixture
def world(host: Host) -> Iterator[tuple[Sandbox, HostDriver]]:
    sandbox = Sandbox()
    make_host, build = host
    with make_host(sandbox.app(), build) as driver:
        driver.run(sandbox.seed_organization, driver.runtime)
        sandbox.seed_appointment("appt-o")
        yield sandbox, driver


def _authorize_url(sandbox: Sandbox, driver: HostDriver) -> str:
    launch = sandbox.provider_launch("appt-o")
    started = driver.get(f"/launch/{ORG}/test", {"iss": sandbox.ehr.base_url, "launch": launch})
    assert started.status == 302
    return started.location


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if " refused: " in r.getMessage()]


@HOSTS
def test_microsoft_callback_logs_the_error_code_and_aadsts_number(
    world: tuple[Sandbox, HostDriver], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sandbox, driver = world
    ehr = sandbox.ehr.authorize_in_browser(
        SimpleNamespace(method="GET", url=_authorize_url(sandbox, driver), fields=())
    )
    first = driver.get("/callback", ehr)
    assert first.status == 302
    state = parse_qs(urlsplit(first.location).query)["state"][0]
    params = {"state": state, "error": "login_required", "error_description": DESCRIPTION}
    assert driver.get("/microsoft/callback", params).status == 502
    refusals = _refusals(caplog)
    assert refusals == [
        "microsoft_callback refused: OAuthError (oauth; error=login_required, AADSTS50058)"
    ]
    assert not any(PERSONAL in r.getMessage() or "silent" in r.getMessage() for r in caplog.records)


@HOSTS
def test_ehr_callback_logs_the_authorization_servers_error_code(
    world: tuple[Sandbox, HostDriver], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sandbox, driver = world
    state = parse_qs(urlsplit(_authorize_url(sandbox, driver)).query)["state"][0]
    params = {"state": state, "iss": sandbox.ehr.oidc_issuer, "error": "invalid_scope"}
    params["error_description"] = PERSONAL
    assert driver.get("/callback", params).status == 502
    assert _refusals(caplog) == [
        "ehr_callback refused: OAuthError (authorization_refused; error=invalid_scope)"
    ]
    assert not any(PERSONAL in r.getMessage() for r in caplog.records)


def test_the_summary_keeps_only_codes() -> None:
    odd = OAuthError(error="bad code with spaces", description="AADSTS7000215 and a name")
    assert refusal_summary(odd) == "OAuthError (oauth; error=unrecognized, AADSTS7000215)"
    declined = AuthorizationDeclinedError(error="access_denied", description="AADSTS65004")
    assert refusal_summary(declined) == (
        "AuthorizationDeclinedError (access_denied; error=access_denied)"
    )
    plain = LaunchParameterError("x", reason="launch_replayed")
    assert refusal_summary(plain) == "LaunchParameterError (launch_replayed)"
