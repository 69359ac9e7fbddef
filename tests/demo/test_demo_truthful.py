"""The demo tells the truth in plain words (issue 13, findings 4 and 5), over plain HTTP.

Each test walks the real demo server the way a person clicks it and checks what a page says
against what happened: consent in plain words, each appointment's real state, the portal's
status, the patient's name carried from the portal launch, rejoin after leaving, the visit
report mid-visit, the attendance page without writers that are not configured, a text link that
says when it opens, and the meeting labelled with the clinician who signed in.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from demo.demo_clicks import Clicker, parse
from teams_ehr.demo import sandbox_web
from teams_ehr.demo.attendance_bridge import has_webhook_route
from teams_ehr.demo.server import DemoServer

CLINICIAN = "Dr. Rivka Canary"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[DemoServer]:
    """A demo whose clinician account signs in to Microsoft as :data:`CLINICIAN`."""
    monkeypatch.setattr(sandbox_web, "CLINICIAN_NAME", CLINICIAN)
    demo = DemoServer(port=0)
    demo.start()
    try:
        yield demo
    finally:
        demo.stop()


def _state(page: httpx.Response, test_id: str) -> str:
    match = re.search(rf"data-testid='{test_id}' data-state='([^']*)'", page.text)
    assert match is not None, f"no {test_id} on {page.url.path}"
    return match.group(1)


def _visible(text: str) -> str:
    """The page's text outside ``<details>`` toggles and tags (what shows without a click)."""
    main = re.search(r"<main.*?</main>", text, flags=re.S)
    shown = re.sub(r"<details.*?</details>", " ", main.group(0) if main else text, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", shown))


def _report_json(markup: str) -> dict[str, Any]:
    """The first visit report's JSON (inside its details toggle)."""
    match = re.search(r"data-testid='report-json'>.*?<pre>(.*?)</pre>", markup, flags=re.S)
    assert match is not None
    data: dict[str, Any] = json.loads(html.unescape(match.group(1)))
    return data


def _clinician_in_meeting(server: DemoServer) -> tuple[Clicker, httpx.Response]:
    clinician = Clicker(server.url)
    clinician.click(clinician.get("/demo/admin"), "approve-sandbox-clinic")
    consent = clinician.click(clinician.get("/ehr"), "begin-appt-1001")
    prejoin = clinician.click(clinician.click(consent, "ehr-allow"), "ms-signin")
    room = clinician.click(prejoin, "join-organizer")
    assert "You are in the meeting." in room.text
    return clinician, room


def test_consent_lists_purposes_in_plain_words(server: DemoServer) -> None:
    patient = Clicker(server.url)
    try:
        patient.click(patient.get("/demo/admin"), "approve-sandbox-clinic")
        consent = patient.click(patient.get("/portal"), "portal-begin-appt-1001")
        assert consent.url.path == "/sandbox/ehr/oauth2/authorize"
        shown = _visible(consent.text)
        assert "See your appointment" in shown
        assert "Know who you are" in shown
        for raw in ("patient/Appointment", "openid", "fhirUser", "launch/patient"):
            assert raw not in shown  # only behind the details toggle
        assert "patient/Appointment" in consent.text
        assert "data-testid='scopes'" in consent.text
    finally:
        patient.close()


def test_schedule_and_portal_follow_what_happened(server: DemoServer) -> None:
    patient = Clicker(server.url)
    clinician = None
    try:
        schedule = patient.get("/ehr")
        assert _state(schedule, "visit-state-appt-1001") == "not_started"
        portal = patient.get("/portal")
        assert "Your clinician is ready" not in portal.text
        assert _state(portal, "portal-status-appt-1001") == "not_started"
        assert CLINICIAN not in portal.text
        assert "Dr. Demo" not in portal.text

        clinician, room = _clinician_in_meeting(server)
        schedule = patient.get("/ehr")
        assert _state(schedule, "visit-state-appt-1001") == "in_progress"
        assert _state(schedule, "visit-state-appt-1002") == "not_started"
        portal = patient.get("/portal")
        assert _state(portal, "portal-status-appt-1001") == "clinician_ready"
        assert "Your clinician is ready" in portal.text
        # the meeting is labelled with the clinician who signed in, not a hard-coded name
        assert f"with <span data-testid='clinician-appt-1001'>{CLINICIAN}</span>" in portal.text

        clinician.click(room, "end-meeting")
        schedule = patient.get("/ehr")
        assert _state(schedule, "visit-state-appt-1001") == "ended"
        portal = patient.get("/portal")
        assert "Your clinician is ready" not in portal.text
        assert _state(portal, "portal-status-appt-1001") == "ended"
        assert "This visit has ended" in portal.text
    finally:
        patient.close()
        if clinician is not None:
            clinician.close()


def test_guest_name_from_the_portal_launch_and_rejoin_after_leaving(server: DemoServer) -> None:
    clinician, room = _clinician_in_meeting(server)
    patient, stranger = Clicker(server.url), Clicker(server.url)
    try:
        prejoin = patient.click(patient.get("/portal"), "portal-begin-appt-1001")
        prejoin = patient.click(prejoin, "ehr-allow")
        assert "Hosted by " + CLINICIAN in prejoin.text
        assert parse(prejoin.text).by_test_id["join-guest"].fields["name"] == "Alex Rivera"
        # another browser (no portal launch) is not offered the patient's name
        other = stranger.get(prejoin.url.path)
        assert parse(other.text).by_test_id["join-guest"].fields["name"] == ""
        assert "Alex Rivera" not in other.text

        waiting = patient.click(prejoin, "join-guest")
        assert "waiting in the lobby" in waiting.text
        left = patient.click(waiting, "leave")
        assert "You have left the meeting." in left.text
        assert parse(left.text).links["back-to-portal"] == "/portal"
        again = patient.click(left, "rejoin")
        assert again.url.path == waiting.url.path  # the same place, back in the lobby
        assert "waiting in the lobby" in again.text
        lobby = clinician.get(room.url.path + "/panel")
        assert lobby.text.count("Alex Rivera") == 1
    finally:
        clinician.close()
        patient.close()
        stranger.close()


def test_visit_report_mid_visit_and_written_resources(server: DemoServer) -> None:
    clinician, room = _clinician_in_meeting(server)
    patient = Clicker(server.url)
    try:
        prejoin = patient.click(
            patient.click(patient.get("/portal"), "portal-begin-appt-1001"), "ehr-allow"
        )
        waiting = patient.click(prejoin, "join-guest")
        clinician.click(clinician.get(room.url.path + "/panel"), "admit")
        attendance = clinician.get("/attendance")
        shown = _visible(attendance.text)
        for written in ("AuditEvent", "Encounter participants"):
            assert written not in shown  # the demo's writer is the clinical note only
        assert "(0)" not in shown
        assert "none yet" not in shown
        assert "{" not in shown  # JSON only behind "details" toggles
        if has_webhook_route():
            reports = attendance.text.split("data-testid='visit-reports'", 1)[1]
            assert "In progress" in _visible(reports)
            assert "Connected now Clinician, Patient" in " ".join(_visible(reports).split())
            report = _report_json(reports)
            assert report["ended_at"] is None  # no end time while the call is on
            assert report["connected_s"]["patient"] > 0  # connected, counted up to now
            assert "Ended" not in _visible(reports)
        patient.click(patient.get(waiting.url.path), "leave")
        clinician.click(clinician.get(room.url.path), "end-meeting")
        after = clinician.get("/attendance")
        if has_webhook_route():
            reports = after.text.split("data-testid='visit-reports'", 1)[1]
            assert "Ended" in _visible(reports)
            assert _report_json(reports)["ended_at"] is not None
            assert "data-testid='json-DocumentReference'" in after.text  # FHIR JSON toggled
    finally:
        clinician.close()
        patient.close()


def test_text_link_before_its_window_says_when_it_opens(server: DemoServer) -> None:
    clinician, _ = _clinician_in_meeting(server)  # binds the clinician's Microsoft account
    patient = Clicker(server.url)
    try:
        portal = patient.click(patient.get("/portal"), "text-appt-1003")  # in 65 minutes
        link = parse(portal.text).links["sms-appt-1003"]
        appointment = server.world.appointments["appt-1003"]
        opens = appointment.start - timedelta(minutes=30)
        early = patient.get(link)
        assert early.status_code == 403
        assert f"This link opens at {opens:%H:%M} UTC" in early.text
        assert parse(early.text).links["back-to-portal"] == "/portal"
        assert "not_yet_valid" not in early.text
        assert f"opens at {opens:%H:%M}" in patient.get("/portal").text

        portal = patient.click(portal, "text-appt-1001")  # its window is open: the meeting
        now = patient.get(parse(portal.text).links["sms-appt-1001"])
        assert now.status_code == 200
        assert urlsplit(str(now.url)).path.startswith("/sandbox/teams/rooms/")
        assert patient.get("/j/" + "x" * 43).status_code == 404  # not the demo's: the library's
    finally:
        clinician.close()
        patient.close()
