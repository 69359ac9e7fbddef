"""The simulated Teams follows Teams' rule, by identity, through the demo's HTTP pages; declining
consent at the EHR or at Microsoft is a 4xx "you declined" page (real uvicorn on 127.0.0.1).

Only a browser signed in to the simulated Microsoft as the meeting's organizer is offered *Join
as … (organizer)*, with the name of that identity; a guest's forged form posts (join as organizer,
end the meeting for everyone, admit) are refused server-side.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import httpx
import pytest

from demo.demo_clicks import Clicker, parse
from teams_ehr.demo.server import DemoServer
from teams_ehr.demo.world import CLINICIAN_NAME
from teams_ehr.testing.fake_entra import SESSION_COOKIE
from teams_ehr.testing.sandbox import APPROVER_OID


def _clinician_in_meeting(demo_server: DemoServer, clinician: Clicker) -> httpx.Response:
    """Approve, launch, consent, sign in with Microsoft; returns the pre-join page."""
    clinician.click(clinician.get("/demo/admin"), "approve-sandbox-clinic")
    consent = clinician.click(clinician.get("/ehr"), "begin-appt-1001")
    signin = clinician.click(consent, "ehr-allow")
    return clinician.click(signin, "ms-signin")


def test_only_the_signed_in_organizer_is_offered_the_organizer_seat(
    demo_server: DemoServer,
) -> None:
    clinician, patient = Clicker(demo_server.url), Clicker(demo_server.url)
    try:
        prejoin = _clinician_in_meeting(demo_server, clinician)
        assert f"Join as {CLINICIAN_NAME} (organizer)" in prejoin.text  # the identity's name
        room = clinician.click(prejoin, "join-organizer")
        assert "You are in the meeting." in room.text
        assert "end-meeting" in room.text

        # The patient's browser never signed in to Microsoft: guest only.
        portal = patient.click(patient.get("/portal"), "portal-begin-appt-1001")
        prejoin_p = patient.click(portal, "ehr-allow")
        assert prejoin_p.url.path == prejoin.url.path
        controls = parse(prejoin_p.text).by_test_id
        assert "join-organizer" not in controls
        assert "join-account" not in controls
        assert "join-guest" in controls
        assert "(organizer)" not in prejoin_p.text

        # A forged "join as organizer" post from that browser is refused.
        join = prejoin_p.url.path + "/join"
        for identity in ("organizer", "account"):
            forged = patient.client.post(join, data={"identity": identity})
            assert forged.status_code == 403
        handle = prejoin.url.path.rsplit("/", 1)[-1]
        meeting_room = demo_server.world.room(handle)
        assert meeting_room is not None
        assert meeting_room.in_meeting() == ["organizer"]

        waiting = patient.click(prejoin_p, "join-guest", name="Alex Rivera")
        assert "waiting in the lobby" in waiting.text
        assert "end-meeting" not in waiting.text
        guest = urlsplit(str(waiting.url)).path.rsplit("/", 1)[-1]

        # Forged posts: as the organizer's participant (not this browser's), or as itself.
        base = f"/sandbox/teams/rooms/{handle}/p"
        assert patient.client.post(f"{base}/organizer/end").status_code == 403
        assert patient.client.get(f"{base}/organizer").status_code == 403
        assert patient.client.post(f"{base}/{guest}/end").status_code == 403
        admit = patient.client.post(f"{base}/{guest}/admit", data={"participant": guest})
        assert admit.status_code == 403
        assert meeting_room.call_active
        assert meeting_room.in_lobby() == [guest]

        # The organizer's own browser may.
        ended = clinician.click(clinician.get(f"{base}/organizer"), "end-meeting")
        assert ended.status_code == 200
        assert not meeting_room.call_active
    finally:
        clinician.close()
        patient.close()


def test_another_signed_in_account_joins_as_a_user_and_waits(demo_server: DemoServer) -> None:
    clinician, analyst = Clicker(demo_server.url), Clicker(demo_server.url)
    try:
        prejoin = _clinician_in_meeting(demo_server, clinician)
        clinician.click(prejoin, "join-organizer")
        # Another browser is signed in to (simulated) Microsoft as the analyst.
        session = demo_server.world.sandbox.entra.sign_in_browser(APPROVER_OID, name="Avery")
        analyst.client.cookies.set(SESSION_COOKIE, session)
        offered = analyst.get(prejoin.url.path)
        controls = parse(offered.text).by_test_id
        assert "join-organizer" not in controls
        assert "join-account" in controls
        assert "Join as Avery" in offered.text
        assert "(organizer)" not in offered.text
        forged = analyst.client.post(prejoin.url.path + "/join", data={"identity": "organizer"})
        assert forged.status_code == 403
        joined = analyst.click(offered, "join-account")
        assert "waiting in the lobby" in joined.text  # the lobby admits only the organizer
        assert "end-meeting" not in joined.text
    finally:
        clinician.close()
        analyst.close()


def _declined_page(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text[:300]
    assert "chose not to allow access" in response.text
    assert "start again from your EHR" in response.text
    assert response.headers["cache-control"] == "no-store"


def _security_events(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.threadName == "teams-ehr-demo"]


def test_declining_at_the_ehr_is_a_declined_page_not_a_server_fault(
    demo_server: DemoServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    clinician = Clicker(demo_server.url)
    try:
        clinician.click(clinician.get("/demo/admin"), "approve-sandbox-clinic")
        consent = clinician.click(clinician.get("/ehr"), "begin-appt-1001")
        declined = clinician.click(consent, "ehr-deny")
        assert declined.url.path == "/callback"
        _declined_page(declined)
    finally:
        clinician.close()
    records = _security_events(caplog)
    assert any(getattr(r, "security_event", None) == "access_denied" for r in records)
    assert not any("denied access" in r.getMessage() for r in records)  # the description


def test_declining_at_microsoft_is_a_declined_page_not_a_server_fault(
    demo_server: DemoServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    clinician = Clicker(demo_server.url)
    try:
        clinician.click(clinician.get("/demo/admin"), "approve-sandbox-clinic")
        consent = clinician.click(clinician.get("/ehr"), "begin-appt-1001")
        signin = clinician.click(consent, "ehr-allow")
        declined = clinician.click(signin, "ms-decline")
        assert declined.url.path == "/microsoft/callback"
        _declined_page(declined)
        assert demo_server.world.sandbox.graph.meetings == {}
    finally:
        clinician.close()
    records = _security_events(caplog)
    assert any(getattr(r, "security_event", None) == "access_denied" for r in records)
    assert not any("AADSTS65004" in r.getMessage() for r in records)
