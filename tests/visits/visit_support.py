"""Shared steps of the visit-flow tests: a browser following redirects, a launch to the meeting."""

from __future__ import annotations

from types import SimpleNamespace

from teams_ehr.app import TeamsEhr
from teams_ehr.testing.sandbox import Sandbox
from teams_ehr.visits.provider import ProviderRole
from teams_ehr.web import WebResponse

ORG = "sandbox-clinic"


def browser(response: WebResponse) -> SimpleNamespace:
    """The authorization redirect a browser follows (``GET`` of the ``Location``)."""
    assert response.location is not None
    return SimpleNamespace(method="GET", url=response.location, fields=())


def assert_security_headers(response: WebResponse) -> None:
    headers = dict(response.headers)
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-store"


async def launch_to_meeting(
    sandbox: Sandbox,
    app: TeamsEhr,
    appointment: str,
    session: str,
    *,
    role: ProviderRole = "provider",
) -> WebResponse:
    """The clinician's launch through ``/callback``: a sign-in redirect or the meeting."""
    launch = sandbox.provider_launch(appointment)
    started = await app.visits.provider.begin_launch(
        ORG, "test", {"iss": sandbox.ehr.base_url, "launch": launch}, session_id=session, role=role
    )
    assert started.status == 302
    params = sandbox.ehr.authorize_in_browser(browser(started))
    return await app.visits.callback.complete(params, session_id=session)


async def sign_in_and_enter(
    sandbox: Sandbox, app: TeamsEhr, signin_redirect: WebResponse, session: str, oid: str
) -> WebResponse:
    """The clinician's first Microsoft sign-in, back at ``/microsoft/callback``."""
    assert signin_redirect.location is not None
    sandbox.entra.sign_in_as(oid)
    signin = sandbox.entra.authorize_in_browser(signin_redirect.location)
    return await app.visits.binding.complete_microsoft_signin(signin, session_id=session)
