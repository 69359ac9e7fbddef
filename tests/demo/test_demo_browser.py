"""The whole web demo clicked through in headless Chromium (SPEC E3: "Tested in headless Chromium").

Playwright for Python drives the system's Chromium (``/usr/bin/chromium``, Debian's package; it
is installed here when missing — ``playwright install`` is never used). Two tabs of one browser:
the clinician (EHR schedule → consent → Microsoft sign-in → the meeting as organizer) and the
patient (portal → SMART patient launch → the lobby). The pages update by themselves (the demo's
script, under its CSP): the admit button appears for the clinician, the patient sees the meeting
once admitted. Screenshots go to ``test-artifacts/demo/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from teams_ehr.demo.attendance_bridge import has_webhook_route
from teams_ehr.demo.server import DemoServer

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "demo"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000


def _install_chromium() -> str | None:
    """Install Debian's chromium; returns why it is impossible, or ``None`` on success."""
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return "installing chromium needs root (apt-get install -y chromium)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return f"{' '.join(command)} failed: {done.stderr.strip()[-300:]}"
    return None if CHROMIUM.exists() else "apt-get installed no /usr/bin/chromium"


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        problem = _install_chromium()
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
            args=ARGS,
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_the_whole_demo_in_headless_chromium(demo_server: DemoServer, browser: Any) -> None:
    problems: list[str] = []
    clinician = browser.pages[0] if browser.pages else browser.new_page()
    clinician.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    clinician.on("pageerror", lambda exc: problems.append(str(exc)))

    clinician.goto(demo_server.url)
    _shot(clinician, "01-start")
    clinician.get_by_test_id("start-demo-admin").click()
    clinician.get_by_test_id("approve-sandbox-clinic").click()
    assert clinician.get_by_test_id("state-sandbox-clinic-test").inner_text() == "active"
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
    clinician.get_by_test_id("join-organizer").click()
    clinician.wait_for_url("**/p/organizer")
    assert "You are in the meeting." in clinician.get_by_test_id("me-status").inner_text()

    patient = browser.new_page()  # the patient portal in another tab
    patient.on("pageerror", lambda exc: problems.append(str(exc)))
    patient.goto(demo_server.url + "portal")
    _shot(patient, "06-portal")
    patient.get_by_test_id("portal-begin-appt-1001").click()
    patient.get_by_test_id("ehr-allow").click()
    patient.get_by_test_id("guest-name").fill("Alex Rivera")
    patient.get_by_test_id("join-guest").click()
    assert "waiting in the lobby" in patient.get_by_test_id("me-status").inner_text()
    _shot(patient, "07-patient-in-lobby")

    # The clinician's page shows the lobby by itself (no reload) and admits the patient.
    clinician.bring_to_front()
    clinician.get_by_test_id("admit").wait_for()
    _shot(clinician, "08-clinician-sees-lobby")
    if has_webhook_route():  # the teams-ehr live roster (SSE) saw the patient arrive (D3)
        clinician.wait_for_selector("#live-roster[data-roles*='patient:lobby_entered']")
    clinician.get_by_test_id("admit").click()
    patient.get_by_text("You are in the meeting.").wait_for()  # updates by itself too
    if has_webhook_route():
        clinician.wait_for_function(  # admitted, then connected: either is "in the meeting"
            "/patient:(admitted|connected)/.test("
            "document.getElementById('live-roster').dataset.roles || '')"
        )
        _shot(clinician, "09-clinician-live-roster")
    _shot(patient, "10-patient-admitted")
    assert "Alex Rivera" in clinician.get_by_test_id("in-meeting").inner_text()

    patient.get_by_test_id("leave").click()
    clinician.get_by_test_id("leave").click()
    assert "left the meeting" in clinician.get_by_test_id("me-status").inner_text()

    clinician.goto(demo_server.url + "attendance")
    _shot(clinician, "11-attendance")
    if has_webhook_route():
        written = clinician.get_by_test_id("fhir-DocumentReference").inner_text()
        assert "(0)" not in written
    assert problems == []
