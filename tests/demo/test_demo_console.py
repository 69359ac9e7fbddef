"""With the library's admin console mounted, the demo approves through it (SPEC C1, C2, E3).

The approver signs in with Microsoft (the sandbox sign-in page, as the EHR analyst), reviews the
organization, signs in to the EHR against its FHIR base URL (the sandbox consent page) and
approves; the integration records follow and the clinician's launch is then admitted. Until the
route table carries :data:`~teams_ehr.integrations.admin_routes.ADMIN_ROUTES` itself, this test
appends them, as a host that mounts the console does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from demo.demo_clicks import Clicker, parse
from teams_ehr import theme
from teams_ehr.demo.server import DemoServer
from teams_ehr.integrations import routes, starlette
from teams_ehr.integrations.admin_routes import ADMIN_ROUTES
from teams_ehr.testing.sandbox import TENANT_ID


@pytest.fixture
def console_demo(monkeypatch: pytest.MonkeyPatch) -> Iterator[DemoServer]:
    if not any(spec.name == "admin_home" for spec in routes.ROUTES):
        mounted = (*routes.ROUTES, *ADMIN_ROUTES)
        monkeypatch.setattr(routes, "ROUTES", mounted)
        monkeypatch.setattr(starlette, "ROUTES", mounted)
        for spec in ADMIN_ROUTES:
            monkeypatch.setitem(routes._BY_NAME, spec.name, spec)
    server = DemoServer(port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _post_form(browser: Clicker, text: str, action_suffix: str, **extra: str):  # type: ignore[no-untyped-def]
    for action, inner in re.findall(r"<form method='post' action='([^']*)'>(.*?)</form>", text):
        if action.endswith(action_suffix):
            fields = dict(re.findall(r"name='([^']*)' value='([^']*)'", inner))
            return browser._keep(browser.client.post(action, data={**fields, **extra}))
    raise AssertionError(f"no form posting to …{action_suffix}")


def test_approval_through_the_admin_console(console_demo: DemoServer) -> None:
    analyst = Clicker(console_demo.url)
    try:
        start = analyst.get("/")
        assert "start-admin" in start.text
        assert TENANT_ID in start.text  # the tenant ID the console's sign-in asks for
        signin = analyst.get(f"/admin/signin?tenant={TENANT_ID}")
        assert signin.url.path.startswith("/sandbox/entra/")
        home = analyst.click(signin, "ms-signin-approver")
        assert home.url.path == "/admin"
        assert theme.label("pending_approval") in home.text  # in plain words

        review = analyst.get("/admin/orgs/sandbox-clinic/test/review")
        consent = _post_form(analyst, review.text, "/approval")
        assert consent.url.path == "/sandbox/ehr/oauth2/authorize"  # SMART standalone sign-in
        verified = analyst.click(consent, "ehr-allow")
        assert "EHR sign-in verified" in verified.text
        records = _post_form(analyst, verified.text, "/approve")
        assert records.url.path == "/admin/orgs/sandbox-clinic/test/records"
        assert console_demo.url + "launch/sandbox-clinic/test" in records.text

        schedule = analyst.get("/ehr")
        assert "pending approval" not in schedule.text
        consent = analyst.click(schedule, "begin-appt-1002")  # launches are admitted now
        assert consent.url.path == "/sandbox/ehr/oauth2/authorize"
        assert "begin-appt-1002" in parse(schedule.text).by_test_id
    finally:
        analyst.close()
