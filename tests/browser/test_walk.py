"""Every page a person reaches, in Chromium at 1280 and 360 px: screenshot, axe-core, reflow.

Each page is its own case, reached from a fresh browser profile the way its person gets there
(issue 13, "Tested in a real browser"): the analyst's admin console journey, each error page, the
clinician's EHR schedule, consent, Microsoft sign-in and meeting, the patient's portal, lobby and
admitted meeting, and the attendance page. A case fails on any serious or critical axe-core
violation of WCAG 2.0/2.1/2.2 A or AA, and at 360 px on any sideways scrolling (WCAG 2.2
SC 1.4.10 Reflow). Artifacts: ``test-artifacts/browser/<page>-<width>.png`` and ``.axe.json``,
and ``axe-summary.json`` (page → width → counts by impact).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import pytest

from browser import journeys
from browser.accessibility import Summary, axe_check
from browser.chromium import (
    PHONE,
    VIEWPORTS,
    Viewport,
    horizontal_overflow,
    open_context,
    wide_elements,
)
from browser.chromium import screenshot as save_screenshot
from browser.journeys import Demo
from teams_ehr.demo.world import ORG_ID

pytestmark = pytest.mark.slow

Reach = Callable[[Any, Demo], Any]  # (browser context, the demo) → the page to check


@dataclass(frozen=True, slots=True)
class Stop:
    """One page of the walk: where it is served and how a person gets there."""

    name: str
    demo: Literal["pending", "approved"]
    reach: Reach
    lands: str  # the path the page is served at (its prefix)
    status: int = 200  # the HTTP status class expected: 200 (a page) or 400 (a refusal)
    person: Literal["analyst", "clinician"] | None = None  # whose signed-in browser, if any
    leave: bool = False  # everyone in this browser leaves the meeting once the page is checked


def _visit(path: str) -> Reach:
    def reach(context: Any, demo: Demo) -> Any:
        page = context.new_page()
        page.goto(journeys.url(demo.url, path))
        return page

    return reach


def _admin_edit(context: Any, demo: Demo) -> Any:
    """The organization's edit form: its own page when the console has one, else the form on
    the organization page, scrolled into view (nothing is saved)."""
    page = _visit(journeys.ORG_PAGE)(context, demo)
    own_page = page.locator("a[href$='/edit']")
    if own_page.count():
        own_page.first.click()
        page.wait_for_load_state()
    else:
        page.locator("form[action$='/edit']").first.scroll_into_view_if_needed()
    return page


def _approval_steps(context: Any, demo: Demo) -> Any:
    page = context.new_page()
    journeys.approval_signed_in(page, demo.url)
    return page


def _consent_declined(context: Any, demo: Demo) -> Any:
    page = context.new_page()
    page.goto(journeys.url(demo.url, "/ehr"))
    page.get_by_test_id("begin-appt-1001").click()
    page.wait_for_url(lambda address: "/sandbox/ehr/" in address)
    page.get_by_test_id("ehr-deny").click()
    page.wait_for_url(lambda address: "/sandbox/ehr/" not in address)
    page.wait_for_load_state()
    return page


def _not_approved(context: Any, demo: Demo) -> Any:
    page = context.new_page()
    page.goto(journeys.url(demo.url, "/ehr"))
    page.get_by_test_id("begin-appt-1001").click()
    page.wait_for_url(lambda address: "/launch/" in address)
    page.wait_for_load_state()
    return page


def _link_not_yet_valid(context: Any, demo: Demo) -> Any:
    page = context.new_page()
    journeys.text_message_link(page, demo.url, "appt-1003")  # starts in 65 min, opens 30 before
    return page


def _link_refused(kind: Literal["expired", "revoked"]) -> Reach:
    """A genuine text-message link of a visit that is over (``expired``: its window closed an
    hour ago) or was cancelled (``revoked``), issued by the runtime's join-link service."""

    def reach(context: Any, demo: Demo) -> Any:
        runtime = demo.host.world.runtime
        now = demo.host.world.sandbox.clock()
        visit = f"browser-walk-{kind}-{secrets.token_hex(4)}"
        start = now - timedelta(hours=3) if kind == "expired" else now + timedelta(hours=1)
        token = demo.host.call(
            lambda: runtime.joinlinks.issue(ORG_ID, visit, start, start + timedelta(hours=1))
        )
        if kind == "revoked":
            demo.host.call(lambda: runtime.joinlinks.revoke(ORG_ID, visit))
        return _visit(f"/j/{token}")(context, demo)

    return reach


def _ehr_consent(context: Any, demo: Demo) -> Any:
    page = context.new_page()
    page.goto(journeys.url(demo.url, "/ehr"))
    page.get_by_test_id("begin-appt-1001").click()
    page.wait_for_url(lambda address: "/sandbox/ehr/" in address)
    page.wait_for_load_state()
    return page


def _microsoft_signin(context: Any, demo: Demo) -> Any:
    """Microsoft's sign-in page (the sandbox's): the clinician sees it on their first launch
    only, the analyst at every console sign-in; this is the analyst's."""
    page = context.new_page()
    journeys.admin_to_microsoft(page, demo.url)
    return page


def _clinician_meeting(context: Any, demo: Demo) -> Any:
    page = context.new_page()
    journeys.clinician_in_meeting(page, demo.url, "appt-1001")
    return page


def _patient_lobby(context: Any, demo: Demo) -> Any:
    page = context.new_page()
    journeys.patient_in_lobby(page, demo.url, "appt-1001", "Alex Rivera")
    return page


def _patient_admitted(context: Any, demo: Demo) -> Any:
    clinician = context.new_page()
    journeys.clinician_in_meeting(clinician, demo.url, "appt-1002")
    patient = context.new_page()
    journeys.patient_in_lobby(patient, demo.url, "appt-1002", "Sam Chen")
    journeys.admit_everyone(clinician, patient)
    return patient


ORG = journeys.ORG_PAGE
TEAMS = "/sandbox/teams/rooms/"
STOPS = (
    # the EHR analyst's admin console journey
    Stop("admin-signin", "pending", _visit("/admin"), "/admin"),
    Stop("admin-organizations", "pending", _visit("/admin"), "/admin", person="analyst"),
    Stop("admin-organization", "pending", _visit(ORG), ORG, person="analyst"),
    Stop("admin-edit", "pending", _admin_edit, ORG, person="analyst"),
    Stop(
        "admin-approval-steps", "pending", _approval_steps, journeys.REVIEW_PAGE, person="analyst"
    ),
    Stop("admin-records", "approved", _visit(f"{ORG}/test/records"), ORG, person="analyst"),
    Stop("admin-audit", "approved", _visit(f"{ORG}/audit"), ORG, person="analyst"),
    # error pages
    Stop("error-consent-declined", "approved", _consent_declined, "/callback", 400),
    Stop("error-not-approved", "pending", _not_approved, "/launch/", 400),
    Stop("error-link-not-yet-valid", "approved", _link_not_yet_valid, "/j/", 400),
    Stop("error-link-expired", "approved", _link_refused("expired"), "/j/", 400),
    Stop("error-link-revoked", "approved", _link_refused("revoked"), "/j/", 400),
    Stop("error-not-found", "approved", _visit("/no-such-page"), "/no-such-page", 400),
    # the clinician
    Stop("ehr-schedule", "approved", _visit("/ehr"), "/ehr"),
    Stop("ehr-consent", "approved", _ehr_consent, "/sandbox/ehr/"),
    Stop("microsoft-signin", "approved", _microsoft_signin, "/sandbox/entra/"),
    Stop(
        "clinician-meeting", "approved", _clinician_meeting, TEAMS, person="clinician", leave=True
    ),
    # the patient
    Stop("patient-portal", "approved", _visit("/portal"), "/portal"),
    Stop("patient-lobby", "approved", _patient_lobby, TEAMS, leave=True),
    Stop("patient-admitted", "approved", _patient_admitted, TEAMS, person="clinician", leave=True),
    # after the visit
    Stop("attendance", "approved", _visit("/attendance"), "/attendance"),
)


def _arrival(stop: Stop, page: Any, response: tuple[int, str] | None) -> list[str]:
    """What is wrong with where the walk ended: another page, another status class, not HTML
    (browsers get HTML pages, errors included), or the console's sign-in form instead."""
    problems = []
    path = urlsplit(page.url).path
    if not path.startswith(stop.lands):
        problems.append(f"{stop.name}: expected a page under {stop.lands}, got {path[:40]}")
    status, media_type = response or (0, "")
    if status // 100 != stop.status // 100:
        problems.append(f"{stop.name}: HTTP {status}, expected {stop.status // 100}xx")
    if not media_type.startswith("text/html"):
        problems.append(f"{stop.name}: served as {media_type or 'nothing'}, not text/html")
    if stop.person == "analyst" and page.locator("form[action$='/admin/signin']").count():
        problems.append(f"{stop.name}: the console asks the signed-in analyst to sign in")
    return problems


@pytest.mark.parametrize("viewport", VIEWPORTS, ids=lambda v: str(v.width))
@pytest.mark.parametrize("stop", STOPS, ids=lambda s: s.name)
def test_page(
    stop: Stop,
    viewport: Viewport,
    browser: Any,
    request: pytest.FixtureRequest,
    axe_summary: Summary,
) -> None:
    demo: Demo = request.getfixturevalue(f"{stop.demo}_demo")
    context = open_context(browser, viewport, demo.storage_state(stop.person))
    documents: dict[Any, tuple[int, str]] = {}  # page → its last document's status and type

    def on_response(response: Any) -> None:
        if response.request.is_navigation_request() and response.frame.parent_frame is None:
            media_type = response.headers.get("content-type", "")
            documents[response.frame.page] = (response.status, media_type)

    context.on("response", on_response)
    try:
        page = stop.reach(context, demo)
        page.wait_for_load_state()
        save_screenshot(page, stop.name, viewport)
        overflow = horizontal_overflow(page) if viewport is PHONE else 0
        problems: list[str | None] = list(_arrival(stop, page, documents.get(page)))
        problems.append(axe_check(page, stop.name, viewport, axe_summary, overflow=overflow))
        if overflow:
            problems.append(
                f"{stop.name} scrolls sideways at {viewport.width} px: the document is "
                f"{overflow} px wider than the window (WCAG 2.2 SC 1.4.10 Reflow); widest: "
                + "; ".join(wide_elements(page))
            )
        found = [problem for problem in problems if problem is not None]
        if found:
            pytest.fail("\n".join(found), pytrace=False)
        if stop.leave:  # the next visitors meet an empty lobby; the visit ends and is written
            journeys.leave_meeting(context)
    finally:
        context.close()
