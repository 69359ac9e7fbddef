"""Declining consent is the person's choice, not a server fault (RFC 6749 §4.1.2.1 access_denied).

At the EHR's authorization page and at Microsoft's sign-in, through both hosts: a 403 page that
says the person declined and how to start again, never 502; one info ``security_event`` and no
``error_description`` text in any log. Other authorization errors stay remote faults.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from hosts.drivers import HostDriver, Reply, flask_app, flask_host, starlette_app, starlette_host
from teams_ehr.errors import AuthorizationDeclinedError, OAuthError, RemoteError
from teams_ehr.testing.sandbox import CLINICIAN_OID, Sandbox
from teams_ehr.web import error_response

ORG = "sandbox-clinic"
HOSTS = pytest.mark.parametrize(
    "host", [(starlette_host, starlette_app), (flask_host, flask_app)], ids=["starlette", "flask"]
)
Host = tuple[Callable[..., Any], Callable[..., Any]]


@pytest.fixture
def world(host: Host) -> Iterator[tuple[Sandbox, HostDriver]]:
    sandbox = Sandbox()
    make_host, build = host
    with make_host(sandbox.app(), build) as driver:
        driver.run(sandbox.seed_organization, driver.runtime)
        sandbox.seed_appointment("appt-d")
        yield sandbox, driver


def _to_ehr(sandbox: Sandbox, driver: HostDriver) -> dict[str, str]:
    launch = sandbox.provider_launch("appt-d")
    started = driver.get(f"/launch/{ORG}/test", {"iss": sandbox.ehr.base_url, "launch": launch})
    assert started.status == 302
    return sandbox.ehr.authorize_in_browser(
        SimpleNamespace(method="GET", url=started.location, fields=())
    )


def _to_microsoft(sandbox: Sandbox, driver: HostDriver) -> str:
    first = driver.get("/callback", _to_ehr(sandbox, driver))
    assert first.status == 302
    assert first.location.startswith(sandbox.entra.authorize_endpoint)
    return first.location


def _assert_declined(reply: Reply, caplog: pytest.LogCaptureFixture, description: str) -> None:
    assert reply.status == 403
    assert b"chose not to allow access" in reply.body
    assert b"start again from your EHR" in reply.body
    assert description.encode() not in reply.body
    events = [getattr(r, "security_event", None) for r in caplog.records]
    assert "access_denied" in events
    assert not any(description in r.getMessage() for r in caplog.records)


@HOSTS
def test_declining_at_the_ehr_is_a_403_declined_page(
    world: tuple[Sandbox, HostDriver], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sandbox, driver = world
    sandbox.ehr.deny_consent = True
    params = _to_ehr(sandbox, driver)
    assert params["error"] == "access_denied"
    _assert_declined(driver.get("/callback", params), caplog, params["error_description"])


@HOSTS
def test_declining_at_microsoft_is_a_403_declined_page(
    world: tuple[Sandbox, HostDriver], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sandbox, driver = world
    location = _to_microsoft(sandbox, driver)
    sandbox.entra.sign_in_as(CLINICIAN_OID)
    sandbox.entra.deny_consent = True
    params = sandbox.entra.authorize_in_browser(location)
    assert params["error"] == "access_denied"
    _assert_declined(driver.get("/microsoft/callback", params), caplog, "AADSTS65004")
    assert sandbox.graph.meetings == {}


@HOSTS
def test_consent_required_at_microsoft_says_an_administrator_must_allow(
    world: tuple[Sandbox, HostDriver],
) -> None:
    sandbox, driver = world
    state = parse_qs(urlsplit(_to_microsoft(sandbox, driver)).query)["state"][0]
    params = {"state": state, "error": "consent_required", "error_description": "AADSTS65001"}
    reply = driver.get("/microsoft/callback", params)
    assert reply.status == 403
    assert b"administrator" in reply.body
    assert b"AADSTS65001" not in reply.body


@HOSTS
def test_other_authorization_errors_stay_remote_faults(world: tuple[Sandbox, HostDriver]) -> None:
    sandbox, driver = world
    state = parse_qs(urlsplit(_to_microsoft(sandbox, driver)).query)["state"][0]
    reply = driver.get("/microsoft/callback", {"state": state, "error": "temporarily_unavailable"})
    assert reply.status == 502
    assert b"chose not to allow" not in reply.body


def test_the_declined_error_is_an_oauth_error_with_a_4xx_hint() -> None:
    exc = AuthorizationDeclinedError(error="access_denied", description="PATIENT-42 said no")
    assert isinstance(exc, OAuthError)
    assert isinstance(exc, RemoteError)
    assert (exc.reason, exc.http_status_hint) == ("access_denied", 403)
    assert "PATIENT-42" not in str(exc) + repr(exc)
    page = error_response(exc)
    assert page.status == 403
    assert b"PATIENT-42" not in page.body
    assert error_response(OAuthError(error="server_error")).status == 502
