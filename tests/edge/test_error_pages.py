"""Honest error pages through both hosts (issue 13 §2): the right status, words that say what
happened, a way back, the shared layout under a CSP without ``'unsafe-inline'``, and a 404 that
is HTML for a browser and JSON for an API client (RFC 9110 §12.5.1 content negotiation).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from teams_ehr import theme
from teams_ehr.app import TeamsEhr
from teams_ehr.errors import JoinLinkInvalidError, JoinLinkRateLimitedError
from teams_ehr.testing.sandbox import PRACTITIONER, Sandbox
from teams_ehr.web import error_response, wants_html

ORG = "sandbox-clinic"
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str


class Host:
    """One host (Starlette with the 404 handler, or Flask) with an ``Accept`` per request."""

    def __init__(self, get: Callable[..., Answer], run: Callable[..., Any], runtime: TeamsEhr):
        self.get = get
        self.run = run
        self.runtime = runtime


@contextmanager
def _starlette(runtime: TeamsEhr) -> Iterator[Host]:
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from teams_ehr.integrations.starlette import (
        teams_ehr_lifespan,
        teams_ehr_not_found,
        teams_ehr_routes,
    )

    app = Starlette(
        routes=teams_ehr_routes(runtime),
        lifespan=teams_ehr_lifespan(runtime),
        exception_handlers={404: teams_ehr_not_found},
    )
    with TestClient(app, base_url="https://app.test") as client:

        def get(path: str, params: dict[str, str] | None = None, accept: str = BROWSER) -> Answer:
            reply = client.get(path, params=params, headers={"Accept": accept})
            headers = {k.lower(): v for k, v in reply.headers.items()}
            return Answer(reply.status_code, headers, reply.text)

        yield Host(get, client.portal.call, runtime)


@contextmanager
def _flask(runtime: TeamsEhr) -> Iterator[Host]:
    from flask import Flask

    from teams_ehr.integrations.flask import FlaskTeamsEhr

    app = Flask("error-pages")
    bridge = FlaskTeamsEhr(runtime)
    bridge.init_app(app)
    try:
        with app.test_client() as client:

            def get(
                path: str, params: dict[str, str] | None = None, accept: str = BROWSER
            ) -> Answer:
                reply = client.get(path, query_string=params or {}, headers={"Accept": accept})
                headers = {k.lower(): v for k, v in reply.headers.items()}
                return Answer(reply.status_code, headers, reply.get_data(as_text=True))

            yield Host(get, bridge.call, runtime)
    finally:
        bridge.close()


HOSTS = pytest.mark.parametrize("make_host", [_starlette, _flask], ids=["starlette", "flask"])


class _Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 9, 0, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


def _themed(answer: Answer) -> None:
    """The shared layout and its CSP: stylesheet by hash, no inline style anywhere."""
    assert answer.headers["content-type"].startswith("text/html")
    csp = answer.headers["content-security-policy"]
    assert "unsafe-inline" not in csp
    assert theme.source_hash(theme.STYLESHEET) in csp
    assert "style=" not in answer.text
    assert "<main id='main'" in answer.text
    assert "Skip to main content" in answer.text


def _launch(sandbox: Sandbox, host: Host, iss: str) -> Answer:
    sandbox.seed_appointment("appt-e")
    launch = sandbox.provider_launch("appt-e")
    return host.get(f"/launch/{ORG}/test", {"iss": iss, "launch": launch})


@HOSTS
def test_launch_before_approval_says_not_approved_and_whom_to_ask(make_host: Any) -> None:
    sandbox = Sandbox()
    with make_host(sandbox.app()) as host:
        host.run(lambda: sandbox.seed_organization(host.runtime, approve=False))
        answer = _launch(sandbox, host, sandbox.ehr.base_url)
        assert answer.status == 403
        assert "isn&#x27;t approved yet" in answer.text or "isn't approved yet" in answer.text
        assert "EHR analyst or Microsoft 365 administrator" in answer.text
        assert "data-testid='error-not-approved'" in answer.text
        _themed(answer)


@HOSTS
def test_launch_from_a_stranger_issuer_stays_generic(make_host: Any) -> None:
    sandbox = Sandbox()
    with make_host(sandbox.app()) as host:
        host.run(lambda: sandbox.seed_organization(host.runtime, approve=False))
        answer = _launch(sandbox, host, "https://elsewhere.example/fhir")
        assert answer.status == 400
        assert "approved" not in answer.text  # nothing about the organization to a stranger
        assert "The request could not be accepted." in answer.text


@HOSTS
def test_malformed_tenant_is_a_400_with_a_message_on_the_field(make_host: Any) -> None:
    with make_host(Sandbox().app()) as host:
        answer = host.get("/admin/signin", {"tenant": "not-a-tenant"})
        assert answer.status == 400
        assert "Enter the tenant ID as a GUID" in answer.text
        assert "aria-invalid='true'" in answer.text
        assert "not-a-tenant" not in answer.text  # an invalid value is not echoed
        assert "You are not allowed" not in answer.text
        _themed(answer)


@HOSTS
def test_unknown_path_is_html_for_browsers_and_json_for_api_clients(make_host: Any) -> None:
    with make_host(Sandbox().app()) as host:
        page = host.get("/no/such/page")
        assert page.status == 404
        assert "Page not found" in page.text
        assert '{"detail"' not in page.text
        _themed(page)
        api = host.get("/no/such/page", accept="application/json")
        assert api.status == 404
        assert api.headers["content-type"].startswith("application/json")
        assert json.loads(api.text) == {"detail": "Not Found"}
        assert (
            host.get("/no/such/page", accept="*/*")
            .headers["content-type"]
            .startswith("application/json")
        )
        console = host.get("/admin/nowhere")
        assert console.status == 404
        assert re.search(r"href='/admin'[^>]*data-testid='error-back'", console.text)


async def _issue(sandbox: Sandbox, runtime: TeamsEhr, start: datetime, end: datetime) -> str:
    await sandbox.seed_organization(runtime)
    await sandbox.seed_clinician(runtime)
    return await runtime.visits.meetings.prepare_visit(
        ORG,
        environment="test",
        visit_key="Appointment/appt-j",
        ehr_user_id=PRACTITIONER,
        start=start,
        end=end,
    )


@HOSTS
def test_expired_and_cancelled_links_have_their_own_pages(make_host: Any, clock: _Clock) -> None:
    sandbox = Sandbox(clock=clock)
    with make_host(sandbox.app()) as host:
        start, end = sandbox.seed_appointment("appt-j", start=clock.now + timedelta(minutes=20))
        token = host.run(_issue, sandbox, host.runtime, start, end)
        unknown = host.get("/j/" + "Q" * 43)
        clock.now = end + timedelta(minutes=61)
        expired = host.get(f"/j/{token}")
        assert (expired.status, unknown.status) == (404, 404)  # the status stays uniform (T20)
        assert "This visit link has expired" in expired.text
        assert "ask your care team for a new link" in expired.text
        clock.now = start
        cancel = host.runtime.visits.meetings.cancel_visit
        assert host.run(cancel, ORG, "Appointment/appt-j")
        revoked = host.get(f"/j/{token}")
        assert revoked.status == 404
        assert "This visit link was cancelled" in revoked.text
        assert "expired" not in unknown.text
        assert "cancelled" not in unknown.text
        for answer in (unknown, expired, revoked):
            assert token not in answer.text
            _themed(answer)


def test_a_link_not_yet_open_says_when_it_opens() -> None:
    opens = datetime(2026, 12, 4, 14, 30, tzinfo=UTC)
    page = error_response(JoinLinkInvalidError(reason="not_yet_valid", opens_at=opens))
    assert page.status == 404
    text = page.body.decode()
    assert "This link opens at 14:30 UTC on 4 Dec 2026." in text
    assert "data-testid='error-link-not-yet-valid'" in text
    exc = JoinLinkInvalidError("join link is not valid", reason="not_yet_valid", opens_at=opens)
    assert "14:30" not in str(exc) + repr(exc)  # the time is a field, never the message
    blind = error_response(JoinLinkInvalidError(reason="not_yet_valid"))
    assert "opens at" not in blind.body.decode()  # no time known: the uniform page


def test_rate_limited_join_keeps_the_uniform_body() -> None:
    limited = error_response(JoinLinkRateLimitedError(retry_after=30))
    assert limited.status == 429
    assert "Too many attempts" in limited.body.decode()
    assert dict(limited.headers)["Retry-After"] == "30"


def test_declined_consent_page_is_styled_with_a_way_back() -> None:
    from teams_ehr.errors import AuthorizationDeclinedError

    back = ("/admin", "Back to the admin console")
    page = error_response(AuthorizationDeclinedError(error="access_denied"), back=back)
    assert page.status == 403
    text = page.body.decode()
    assert "<h1>You declined access</h1>" in text
    assert "data-testid='error-back'" in text
    headers = dict(page.headers)
    assert "unsafe-inline" not in headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (BROWSER, True),
        ("text/html", True),
        ("application/json", False),
        ("*/*", False),
        ("", False),
        (None, False),
        ("application/json, text/html;q=0.5", False),
        ("text/html;q=0.9, application/json;q=0.1", True),
        ("text/html;q=0", False),
        ("text/html;q=bogus", False),
    ],
)
def test_content_negotiation(accept: str | None, html: bool) -> None:
    assert wants_html(accept) is html


def test_launch_declined_at_the_ehr_through_the_console_fixture_is_403() -> None:
    """The EHR's ``access_denied`` is a 403 page in the shared layout (not 502)."""
    from hosts.drivers import starlette_app, starlette_host

    sandbox = Sandbox()
    with starlette_host(sandbox.app(), starlette_app) as driver:
        driver.run(sandbox.seed_organization, driver.runtime)
        sandbox.seed_appointment("appt-d")
        sandbox.ehr.deny_consent = True
        launch = sandbox.provider_launch("appt-d")
        started = driver.get(f"/launch/{ORG}/test", {"iss": sandbox.ehr.base_url, "launch": launch})
        params = sandbox.ehr.authorize_in_browser(
            SimpleNamespace(method="GET", url=started.location, fields=())
        )
        reply = driver.get("/callback", params)
        assert reply.status == 403
        assert b"<h1>You declined access</h1>" in reply.body
        assert b"unsafe-inline" not in reply.headers["content-security-policy"].encode()
