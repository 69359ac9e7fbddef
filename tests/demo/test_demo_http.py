"""The web demo over plain HTTP against the real uvicorn server on 127.0.0.1 (SPEC E3).

Every page answers 200 with the page security headers; the whole visit is clicked through (admin
approval, clinician launch with consent and the one-time Microsoft sign-in, the meeting, the
patient's portal launch and text link into the lobby, admit, leave, attendance); the library's
own redirects are checked before the gateway maps them; nothing secret reaches a log.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from demo.demo_clicks import Clicker, parse
from leaks import assert_no_leak
from teams_ehr.demo.attendance_bridge import has_webhook_route
from teams_ehr.demo.server import DemoServer

PAGES = ("/", "/ehr", "/portal", "/attendance", "/demo/admin")


def _page_headers(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text[:300]
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp  # styles by hash only (issue 13)
    assert " style=" not in response.text  # no inline style attributes: the CSP would block them
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"


def test_every_page_answers_with_security_headers(demo_server: DemoServer) -> None:
    with httpx.Client(base_url=demo_server.url) as client:
        for path in PAGES:
            response = client.get(path)
            _page_headers(response)
            # self-contained: no asset or script from another origin
            assert not re.search(r"(src|href)=['\"]?(https?:)?//", response.text), path
        script = client.get("/static/demo.js")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/javascript")
        assert client.get("/sandbox/teams/rooms/nope/state.json").status_code == 404
        assert client.get("/ehr/begin/no-such-appointment").status_code == 404
        assert client.get("/sandbox/elsewhere").status_code == 404
        assert client.get("/.well-known/jwks.json").status_code == 200  # the example app


def test_launch_is_refused_until_the_admin_approves(demo_server: DemoServer) -> None:
    clinician = Clicker(demo_server.url)
    try:
        schedule = clinician.get("/ehr")
        assert "pending approval" in schedule.text
        refused = clinician.click(schedule, "begin-appt-1001")
        assert 400 <= refused.status_code < 500  # refused, whichever 4xx the errors page picks
        admin = clinician.get("/demo/admin")
        assert "pending_approval" in admin.text
        approved = clinician.click(admin, "approve-sandbox-clinic")
        _page_headers(approved)
        assert "Integration records" in approved.text
        records = clinician.get("/demo/admin/records/sandbox-clinic/test.json").json()
        assert records["provider_launch_url"] == demo_server.url + "launch/sandbox-clinic/test"
        assert records["fhir_base"] == demo_server.world.sandbox.ehr.base_url
        assert records["context_tokens"] == ["sessionId=%CSN%"]
        assert clinician.get("/demo/admin/records/sandbox-clinic/prod.json").status_code == 404
    finally:
        clinician.close()


def test_the_whole_visit_by_plain_http(
    demo_server: DemoServer, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    world = demo_server.world
    clinician, patient = Clicker(demo_server.url), Clicker(demo_server.url)
    try:
        clinician.click(clinician.get("/demo/admin"), "approve-sandbox-clinic")

        # The patient is early: the portal launch says the visit is not ready (SPEC C4).
        early = patient.click(patient.get("/portal"), "portal-begin-appt-1001")
        early = patient.click(early, "ehr-allow")
        assert early.status_code == 409

        # Clinician: Begin virtual visit → EHR consent → Microsoft sign-in → Teams pre-join.
        consent = clinician.click(clinician.get("/ehr"), "begin-appt-1001")
        assert consent.url.path == "/sandbox/ehr/oauth2/authorize"
        launch = next(r for r in clinician.history if r.url.path.startswith("/launch/"))
        assert launch.status_code == 302  # the library's redirect, mapped onto the EHR's page
        assert parse_qs(urlsplit(launch.headers["location"]).query)["aud"] == [
            world.sandbox.ehr.base_url
        ]
        signin = clinician.click(consent, "ehr-allow")
        assert signin.url.path.startswith("/sandbox/entra/")
        prejoin = clinician.click(signin, "ms-signin")
        entered = next(r for r in clinician.history if r.url.path == "/microsoft/callback")
        assert entered.status_code == 303
        assert entered.headers["location"].startswith("/sandbox/teams/l/meetup-join/")
        (meeting,) = world.sandbox.graph.meetings.values()
        assert meeting["lobbyBypassSettings"]["scope"] == "organizer"
        room = clinician.click(prejoin, "join-organizer")
        assert "You are in the meeting." in room.text

        # Patient: the portal's SMART patient launch lands in the lobby.
        portal = patient.click(patient.get("/portal"), "portal-begin-appt-1001")
        prejoin_p = patient.click(portal, "ehr-allow")
        assert prejoin_p.url.path == urlsplit(str(prejoin.url)).path
        waiting = patient.click(prejoin_p, "join-guest", name="Alex Rivera")
        assert "waiting in the lobby" in waiting.text

        # …and the text-message link of the same visit lands in the same meeting.
        texted = patient.click(patient.get("/portal"), "text-appt-1001")
        link = parse(texted.text).links["sms-appt-1001"]
        assert link.startswith("/j/")
        via_link = patient.get(link)
        assert via_link.url.path == urlsplit(str(prejoin.url)).path

        lobby = clinician.get(room.url.path + "/panel")
        assert "Alex Rivera" in lobby.text
        admitted = clinician.click(lobby, "admit")
        assert "Alex Rivera" in parse_section(admitted.text, "in-meeting")
        state = patient.get(str(waiting.url.path))
        assert "You are in the meeting." in state.text

        patient.click(state, "leave")
        clinician.click(clinician.get(room.url.path), "leave")
        room_state = world.room(urlsplit(str(prejoin.url)).path.rsplit("/", 1)[-1])
        assert room_state is not None
        assert not room_state.call_active

        attendance = clinician.get("/attendance")
        _page_headers(attendance)
        if has_webhook_route():  # attendance is wired into the runtime: it reached the EHR
            (note,) = world.sandbox.fhir.resources("DocumentReference")  # the Epic note (D4)
            assert note["context"]["encounter"]
            assert "note-text" in attendance.text
            assert "&quot;no_show&quot;: false" in attendance.text  # the visit report (D7)
        canaries = [
            *(a.patient_name for a in world.appointments.values()),
            *(a.patient_id for a in world.appointments.values()),
            link.removeprefix("/j/"),
            meeting["joinWebUrl"],
            *_secrets_in(clinician.history + patient.history),
        ]
        out, err = capfd.readouterr()
        # What the server logged (its thread; the test's own client logs its URLs itself).
        server_logs = [
            f"{r.name} {r.getMessage()}" for r in caplog.records if r.threadName == "teams-ehr-demo"
        ]
        assert any(r.startswith("teams_ehr") for r in server_logs)  # it did log
        assert_no_leak(canaries, server_logs, out, err)
    finally:
        clinician.close()
        patient.close()


def parse_section(text: str, test_id: str) -> str:
    match = re.search(rf"data-testid='{test_id}'>(.*?)</ul>", text, re.S)
    return "" if match is None else match.group(1)


def _secrets_in(responses: list[httpx.Response]) -> list[str]:
    """Every launch value, code and state the browser carried."""
    found = []
    for response in responses:
        for name, values in parse_qs(urlsplit(str(response.url)).query).items():
            if name in ("launch", "code", "state"):
                found.extend(values)
    return found
