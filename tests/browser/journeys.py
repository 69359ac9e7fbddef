"""The people's steps through the web demo, as a browser takes them (requirement E3).

Selectors follow the wire, not the look: form ``action`` paths and field ``name`` attributes (what
the server reads) and the demo's ``data-testid`` hooks, so restyled pages keep working. Each step
ends on a loaded page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from browser.chromium import DESKTOP, open_context
from browser.demo_host import DemoHost
from teams_ehr.demo.world import ORG_ID
from teams_ehr.testing.sandbox import TENANT_ID


def _path_is(prefix: str) -> Any:
    return lambda address: urlsplit(address).path.startswith(prefix)


ORG_PAGE = f"/admin/orgs/{ORG_ID}"
REVIEW_PAGE = f"{ORG_PAGE}/test/review"
_IN_LOBBY = re.compile(r"\bwaiting in the lobby", re.IGNORECASE)
_IN_MEETING = re.compile(r"\byou are in the meeting", re.IGNORECASE)
_ENTRA = _path_is("/sandbox/entra/")
_TEAMS = _path_is("/sandbox/teams/")


@dataclass(frozen=True, slots=True)
class Demo:
    """A running demo and the storage states of its signed-in browsers: the analyst's console
    session, and the clinician's simulated Microsoft 365 session (which lets a launch after the
    first join as the organizer)."""

    host: DemoHost
    analyst: dict[str, Any] | None = field(default=None, repr=False)
    clinician: dict[str, Any] | None = field(default=None, repr=False)

    def storage_state(self, person: str | None) -> dict[str, Any] | None:
        """The signed-in browser state of ``"analyst"`` or ``"clinician"`` (``None``: fresh)."""
        return {"analyst": self.analyst, "clinician": self.clinician}.get(person or "")

    @property
    def url(self) -> str:
        return self.host.url


def url(base: str, path: str) -> str:
    return base.rstrip("/") + path


def submit(page: Any, action_suffix: str) -> None:
    """Press the submit button of the form whose ``action`` ends with ``action_suffix``."""
    form = page.locator(f"form[action$='{action_suffix}']").first
    form.locator("button[type=submit], button:not([type]), input[type=submit]").first.click()
    page.wait_for_load_state()


# -- the admin console (the EHR analyst) -------------------------------------------------------


def admin_to_microsoft(page: Any, base: str) -> None:
    """``/admin`` → *Sign in* (with the tenant ID while the form asks for it): Microsoft's page."""
    page.goto(url(base, "/admin"))
    tenant = page.locator("input[name=tenant]")
    if tenant.count():
        tenant.first.fill(TENANT_ID)
    submit(page, "/admin/signin")
    page.wait_for_url(_ENTRA)
    page.wait_for_load_state()


def admin_sign_in(page: Any, base: str) -> None:
    """``/admin`` → Microsoft sign-in as the sandbox's EHR analyst → back in the console."""
    admin_to_microsoft(page, base)
    page.get_by_test_id("ms-signin-approver").click()
    page.wait_for_url(_path_is("/admin"))
    page.wait_for_load_state()


def ehr_allow(page: Any) -> None:
    """The sandbox EHR's consent page: Allow."""
    page.wait_for_url(_path_is("/sandbox/ehr/"))
    page.get_by_test_id("ehr-allow").click()


def approval_signed_in(page: Any, base: str) -> None:
    """The review page once the approver proved the FHIR base with an EHR sign-in (done here
    unless this console session already did it)."""
    page.goto(url(base, REVIEW_PAGE))
    if page.locator("form[action$='/test/approval']").count():
        submit(page, "/test/approval")
        ehr_allow(page)
        page.wait_for_url(_path_is(REVIEW_PAGE))
        page.wait_for_load_state()


def analyst_signed_in(browser: Any, base: str, *, approve: bool) -> dict[str, Any]:
    """The analyst signs in to the real console (and, with ``approve``, proves the FHIR base
    with an EHR sign-in and approves → the integration records); returns that browser's
    storage state (its console session)."""
    context = open_context(browser, DESKTOP)
    try:
        page = context.new_page()
        admin_sign_in(page, base)
        if approve:
            approval_signed_in(page, base)
            submit(page, "/test/approve")
            page.wait_for_url(_path_is(f"{ORG_PAGE}/test/records"))
        state: dict[str, Any] = context.storage_state()
        return state
    finally:
        context.close()


# -- the clinician (EHR schedule → consent → Microsoft → Teams) ---------------------------------


def clinician_in_meeting(page: Any, base: str, appointment: str) -> None:
    """*Begin virtual visit* in the EHR schedule, Allow at the EHR, Microsoft sign-in (the first
    time only: later launches go straight to Teams), *Join* as the meeting's organizer."""
    page.goto(url(base, "/ehr"))
    page.get_by_test_id(f"begin-{appointment}").click()
    ehr_allow(page)
    page.wait_for_url(lambda address: _ENTRA(address) or _TEAMS(address))
    if _ENTRA(page.url):
        page.get_by_test_id("ms-signin").click()
    page.get_by_test_id("join-organizer").click()
    page.wait_for_url(re.compile(r"/p/organizer$"))
    page.wait_for_load_state()


def bind_clinician(browser: Any, base: str) -> dict[str, Any]:
    """The clinician's first launch, which links their EHR user to their Microsoft identity;
    returns that browser's storage state (its Microsoft session) for later launches."""
    context = open_context(browser, DESKTOP)
    try:
        clinician_in_meeting(context.new_page(), base, "appt-1001")
        state: dict[str, Any] = context.storage_state()
        return state
    finally:
        context.close()


# -- the patient (portal → SMART patient launch → Teams lobby) ----------------------------------


def patient_in_lobby(page: Any, base: str, appointment: str, name: str) -> None:
    """The portal's *Begin virtual visit*, Allow, a guest name, *Join now*: the lobby."""
    from playwright.sync_api import expect

    page.goto(url(base, "/portal"))
    page.get_by_test_id(f"portal-begin-{appointment}").click()
    ehr_allow(page)
    page.get_by_test_id("guest-name").fill(name)
    page.get_by_test_id("join-guest").click()
    expect(page.get_by_test_id("me-status")).to_contain_text(_IN_LOBBY)


def admit_everyone(clinician: Any, patient: Any) -> None:
    """The organizer admits whoever waits in the lobby (earlier visitors too): ``patient`` is in."""
    from playwright.sync_api import expect

    clinician.bring_to_front()
    admit = clinician.get_by_test_id("admit")
    admit.first.wait_for()
    for _ in range(5):  # at most a few stale visitors of earlier cases wait with the patient
        if not admit.count():
            break
        admit.first.click()
        clinician.wait_for_load_state()
    patient.bring_to_front()
    expect(patient.get_by_test_id("me-status")).to_contain_text(_IN_MEETING)


def leave_meeting(context: Any) -> None:
    """Everyone in this browser leaves (the patient's tab first, then the organizer's)."""
    for page in reversed(context.pages):
        leave = page.get_by_test_id("leave")
        if leave.count():
            leave.first.click()
            page.wait_for_load_state()


def text_message_link(page: Any, base: str, appointment: str) -> None:
    """The portal's text-message link for ``appointment`` (sent first if need be), opened."""
    page.goto(url(base, "/portal"))
    sms = page.get_by_test_id(f"sms-{appointment}")
    if not sms.count():
        page.get_by_test_id(f"text-{appointment}").click()
        page.wait_for_url(_path_is("/portal"))
    sms.click()
    page.wait_for_url(_path_is("/j/"))
    page.wait_for_load_state()
