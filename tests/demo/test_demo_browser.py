"""The whole web demo clicked through in headless Chromium (SPEC E3: "Tested in headless Chromium").

Playwright for Python drives the system's Chromium (``/usr/bin/chromium``, Debian's package; it
is installed here when missing — ``playwright install`` is never used). Two tabs of one browser:
the clinician (EHR schedule → consent → Microsoft sign-in → the meeting as organizer) and the
patient (portal → SMART patient launch → the lobby). The pages update by themselves (the demo's
script, under its CSP): the admit button appears for the clinician, the patient sees the meeting
once admitted. Screenshots go to ``test-artifacts/demo/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from browser.chromium import ARGS, CHROMIUM, TIMEOUT_MS, install_chromium
from teams_ehr.demo.attendance_bridge import has_webhook_route
from teams_ehr.demo.server import DemoServer

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "demo"


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        problem = install_chromium()
        if problem is not None:
            pytest.skip(f"headless Chromium unavailable: {problem}")
    return CHROMIUM


@pytest.fixture
def browser(chromium: Path, tmp_path: Path) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh user-data-dir
            executable_path=str(chromium),
            headless=True,
            args=list(ARGS),
            viewport=DESKTOP,
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


DESKTOP = {"width": 1280, "height": 720}
PHONES = (360, 414)
# Per page: the document's width, its <h1>s, its lang, its live region and unlabelled controls.
_AUDIT = """() => ({
  width: document.documentElement.scrollWidth,
  h1: document.querySelectorAll('h1').length,
  lang: document.documentElement.lang,
  live: document.querySelectorAll('[aria-live=polite]').length,
  main: document.querySelectorAll('main').length,
  header: document.querySelectorAll('header').length,
  unlabelled: [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
    .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')).length
})"""


def _shot(page: Any, name: str) -> None:
    """Screenshots at desktop and phone widths; at each phone width the page must fit without
    sideways scrolling (WCAG 2.2 SC 1.4.10) and carry the basics of SC 1.3.1, 3.1.1, 4.1.3."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    for width in PHONES:
        page.set_viewport_size({"width": width, "height": 780})
        audit = page.evaluate(_AUDIT)
        if width == PHONES[0]:
            page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)
        assert audit["width"] <= width, f"{name} is {audit['width']} px wide at {width} px"
        assert audit == {
            **audit,
            "h1": 1,
            "lang": "en",
            "live": 1,
            "main": 1,
            "header": 1,
            "unlabelled": 0,
        }, name
    page.set_viewport_size(DESKTOP)


def test_the_whole_demo_in_headless_chromium(demo_server: DemoServer, browser: Any) -> None:
    problems: list[str] = []
    clinician = browser.pages[0] if browser.pages else browser.new_page()
    clinician.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    clinician.on("pageerror", lambda exc: problems.append(str(exc)))

    clinician.goto(demo_server.url)
    _shot(clinician, "01-start")
    clinician.get_by_test_id("start-demo-admin").click()
    clinician.get_by_test_id("approve-sandbox-clinic").click()
    assert (
        clinician.get_by_test_id("state-sandbox-clinic-test").get_attribute("data-state")
        == "active"
    )
    _shot(clinician, "02-admin-approved")

    clinician.goto(demo_server.url + "ehr")
    _shot(clinician, "03-ehr-schedule")
    clinician.get_by_test_id("begin-appt-1001").click()
    clinician.wait_for_url("**/sandbox/ehr/oauth2/authorize?**")
    _shot(clinician, "04-ehr-consent")
    clinician.get_by_test_id("ehr-allow").click()
    clinician.wait_for_url("**/sandbox/entra/**")
    _shot(clinician, "05-microsoft-signin")
    clinician.get_by_test_id("ms-signin").click()
    _shot(clinician, "05b-teams-prejoin")
    clinician.get_by_test_id("join-organizer").click()
    clinician.wait_for_url("**/p/organizer")
    assert "You are in the meeting." in clinician.get_by_test_id("me-status").inner_text()

    patient = browser.new_page()  # the patient portal in another tab
    patient.on("pageerror", lambda exc: problems.append(str(exc)))
    patient.goto(demo_server.url + "portal")
    _shot(patient, "06-portal")
    patient.get_by_test_id("portal-begin-appt-1001").click()
    patient.get_by_test_id("ehr-allow").click()
    # the name comes from the portal launch; its label is announced with the field
    assert patient.get_by_label("Your name").input_value() == "Alex Rivera"
    patient.get_by_test_id("join-guest").click()
    assert "waiting in the lobby" in patient.get_by_test_id("me-status").inner_text()
    _shot(patient, "07-patient-in-lobby")

    # The clinician's page shows the lobby by itself (no reload) and admits the patient.
    clinician.bring_to_front()
    clinician.get_by_test_id("admit").wait_for()
    _shot(clinician, "08-clinician-sees-lobby")
    if has_webhook_route():  # the teams-ehr live roster (SSE) saw the patient arrive (D3)
        clinician.wait_for_selector("#live-roster[data-roles*='patient:lobby_entered']")
        roster = clinician.get_by_test_id("live-roster").inner_text()
        assert "Patient: waiting in the lobby" in roster
        assert "lobby_entered" not in roster  # plain words, not event names
    clinician.get_by_test_id("admit").click()
    patient.get_by_text("You are in the meeting.").wait_for()  # updates by itself too
    # …and says so to a screen reader, in the page's polite live region (SC 4.1.3)
    patient.wait_for_selector("#announce:has-text('now in the meeting')")
    if has_webhook_route():
        clinician.wait_for_function(  # admitted, then connected: either is "in the meeting"
            "/patient:(admitted|connected)/.test("
            "document.getElementById('live-roster').dataset.roles || '')"
        )
        _shot(clinician, "09-clinician-live-roster")
    _shot(patient, "10-patient-admitted")
    assert "Alex Rivera" in clinician.get_by_test_id("in-meeting").inner_text()

    patient.get_by_test_id("leave").click()
    patient.get_by_test_id("rejoin").wait_for()
    assert patient.get_by_test_id("back-to-portal").get_attribute("href") == "/portal"
    _shot(patient, "10b-patient-left")
    clinician.get_by_test_id("leave").click()
    assert "left the meeting" in clinician.get_by_test_id("me-status").inner_text()

    clinician.goto(demo_server.url + "attendance")
    _shot(clinician, "11-attendance")
    if has_webhook_route():
        written = clinician.get_by_test_id("fhir-DocumentReference")
        assert written.get_attribute("data-count") == "1"
    clinician.goto(demo_server.url + "ehr")
    _shot(clinician, "12-ehr-schedule-after")
    assert clinician.get_by_test_id("visit-state-appt-1001").inner_text() == "Ended"
    patient.goto(demo_server.url + "portal")
    patient.get_by_test_id("text-appt-1003").click()
    patient.get_by_test_id("sms-appt-1003").click()
    assert "This link opens at" in patient.get_by_test_id("link-opens-at").inner_text()
    _shot(patient, "13-text-link-not-open-yet")
    patient.goto(demo_server.url + "portal")
    _shot(patient, "14-portal-after")
    assert problems == []
