"""The demo's own pages: start, EHR schedule, patient portal, attendance, admin (requirements E3, C2, D4).

The EHR schedule and the patient portal stand in for Epic Hyperspace and MyChart: their
*Begin virtual visit* buttons open exactly what an EHR opens (the provider launch URL with ``iss``
and a fresh ``launch``; the SMART patient launch; or the text-message join link). The attendance
page lists what the runtime wrote into the sandbox FHIR store and the visit reports computed from
the stored facts (requirement D7). The admin page shows each organization's state, approves as the
sandbox approver and shows the integration records (requirement C2) as a table and JSON.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from teams_ehr import theme
from teams_ehr.attendance.reports import report_visit
from teams_ehr.demo import pages
from teams_ehr.demo.pages import button_form, details, e, layout, pretty_json, table
from teams_ehr.demo.sandbox_web import PORTAL_COOKIE, html_response
from teams_ehr.demo.world import (
    APPROVER_NAME,
    CLINICIAN_NAME,
    ORG_ID,
    DemoAppointment,
    DemoWorld,
    VisitState,
)
from teams_ehr.errors import ApprovalRequiredError, IdentityBindingError
from teams_ehr.orgs.models import EnvironmentName
from teams_ehr.orgs.records import integration_records
from teams_ehr.store.protocol import AttendanceFactRow
from teams_ehr.testing.sandbox import TENANT_ID
from teams_ehr.web import SECURITY_HEADERS

__all__ = ["FHIR_TYPES", "demo_routes"]

FHIR_TYPES = ("DocumentReference", "AuditEvent", "Encounter")
_ENVIRONMENTS: tuple[EnvironmentName, ...] = ("test", "production")


def _see_other(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303, headers=dict(SECURITY_HEADERS))


def _test_id(path: str) -> str:
    return path.strip("/").replace("/", "-")


def _time(value: object) -> str:
    return e(getattr(value, "strftime", lambda _f: str(value))("%H:%M UTC"))


_SCHEDULE_LABELS: dict[VisitState, tuple[str, str]] = {
    "not_started": ("Not started", "note"),
    "ready": ("Meeting ready", "ok"),
    "in_progress": ("In progress", "ok"),
    "ended": ("Ended", "note"),
}
_ROLE_NAMES = {"provider": "Clinician", "patient": "Patient", "other": "Others"}
# What each write-back strategy (teams_ehr.attendance.writers.WriterStrategy) writes.
_WRITER_TYPES = {
    "epic_clinical_note": "DocumentReference",
    "audit_event": "AuditEvent",
    "encounter_participant": "Encounter",
    "epic_telehealth_status": "Encounter",
}
_TYPE_NAMES = {
    "DocumentReference": "Clinical note (DocumentReference)",
    "AuditEvent": "Audit record (AuditEvent)",
    "Encounter": "Encounter participants (Encounter)",
}


def _status(text: str, css: str, test_id: str, state: str = "") -> str:
    data = f" data-state='{e(state)}'" if state else ""
    return f"<span class='status {e(css)}' data-testid='{e(test_id)}'{data}>{e(text)}</span>"


def _duration(seconds: float | None) -> str:
    """``75.4`` → ``1 min 15 s`` (what a person reads; the JSON keeps the number)."""
    if seconds is None:
        return "—"
    whole = round(seconds)
    minutes, rest = divmod(whole, 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


async def _start(world: DemoWorld) -> str:
    active = await world.is_active()
    state = (
        _status("Approved", "ok", "org-state")
        if active
        else _status("Pending approval", "warn", "org-state")
        + " — approve it in the admin view first"
    )
    steps = [
        (
            "/demo/admin",
            "Sandbox admin view",
            "Organizations and their state; approve in one "
            "click as the sandbox's EHR analyst; the integration records to enter in the EHR.",
        ),
        (
            "/ehr",
            "EHR schedule (clinician)",
            f"Click Begin virtual visit as {CLINICIAN_NAME}: "
            "the EHR opens the visit, you sign in to Microsoft once, and join the Teams meeting "
            "as its organizer.",
        ),
        (
            "/portal",
            "Patient portal (open in another tab)",
            "Begin virtual visit as the patient, from the portal or the text-message link, "
            "then wait in the lobby until the clinician lets you in.",
        ),
        (
            "/attendance",
            "Attendance",
            "After the visit: what was written back to the sandbox EHR and the visit report.",
        ),
    ]
    if world.console:  # the library's admin console is mounted: the real approval flow
        steps.insert(
            0,
            (
                "/admin",
                "Admin console (teams-ehr)",
                f"Sign in with tenant ID {TENANT_ID} as "
                f"{APPROVER_NAME}, review the organization, sign in to the EHR to prove its FHIR "
                "base URL, approve; then the integration records.",
            ),
        )
    items = "".join(
        f"<li><a href='{e(href)}' data-testid='start-{e(_test_id(href))}'>{e(title)}</a> — "
        f"{e(text)}</li>"
        for href, title, text in steps
    )
    return layout(
        "teams-ehr demo",
        "<section><h2>A virtual visit, end to end, on this machine</h2>"
        f"<p>Organization <code>{e(ORG_ID)}</code>: {state}</p><ol>{items}</ol>"
        "<p class='note'>Everything runs in this process: the EHR, Microsoft sign-in, Graph and "
        "Teams are sandbox fakes. Names shown are made up.</p></section>",
        current="/",
    )


async def _schedule(world: DemoWorld) -> str:
    active = await world.is_active()
    rows = []
    for appt in world.appointments.values():
        state = await world.visit_state(appt)
        text, css = _SCHEDULE_LABELS[state]
        rows.append(
            (
                _time(appt.start),
                e(appt.patient_name),
                e(appt.reason),
                _status(text, css, f"visit-state-{appt.appointment_id}", state),
                button_form(
                    f"/ehr/begin/{appt.appointment_id}",
                    "Begin virtual visit",
                    test_id=f"begin-{appt.appointment_id}",
                    method="get",
                ),
            )
        )
    warning = (
        ""
        if active
        else "<p class='warn'>The organization is pending approval: launches are refused "
        "until the admin approves it.</p>"
    )
    body = (
        f"<section><h2>Today · {e(CLINICIAN_NAME)}</h2>{warning}"
        + table(("Time", "Patient", "Reason", "Teams meeting", "Action"), rows)
        + "</section>"
    )
    return layout("Sandbox EHR · schedule", body, theme="ehr", current="/ehr")


async def _portal_status(world: DemoWorld, appt: DemoAppointment) -> str:
    """What the patient is told, from what happened (never "ready" unless the clinician is in
    the meeting now)."""
    state = await world.visit_state(appt)
    tid = f"portal-status-{appt.appointment_id}"
    if state == "ended":
        return _status("This visit has ended", "note", tid, state)
    if state == "in_progress" and await world.clinician_in_meeting(appt):
        return _status("Your clinician is ready — join now", "ok", tid, "clinician_ready")
    if state == "in_progress":
        return _status("Your clinician has stepped out; you can wait in the lobby", "warn", tid)
    return _status("Your clinician has not started the visit yet", "note", tid, state)


async def _portal(world: DemoWorld, links: dict[str, str]) -> str:
    sections = []
    for appt in world.appointments.values():
        text = links.get(appt.appointment_id)
        opens = None if text is None else await world.text_link_opens_at(text.rsplit("/", 1)[-1])
        if text is None:
            sms = button_form(
                f"/portal/text/{appt.appointment_id}",
                "Send me a text link",
                css="secondary",
                test_id=f"text-{appt.appointment_id}",
            )
        else:
            when = f" <span class='note'>(opens at {_time(opens)})</span>" if opens else ""
            sms = (
                f"<p>Text message: <a href='{e(text)}' data-testid='sms-{e(appt.appointment_id)}'>"
                f"Join your video visit</a>{when}</p>"
            )
        clinician = await world.clinician_name(appt) or "your clinician"
        sections.append(
            f"<section data-testid='portal-{e(appt.appointment_id)}'>"
            f"<h2>{e(appt.patient_name)} · {_time(appt.start)}</h2>"
            f"<p>{e(appt.reason)} with <span data-testid='clinician-{e(appt.appointment_id)}'>"
            f"{e(clinician)}</span></p><p>{await _portal_status(world, appt)}</p>"
            + button_form(
                f"/portal/begin/{appt.appointment_id}",
                "Begin virtual visit",
                test_id=f"portal-begin-{appt.appointment_id}",
                method="get",
            )
            + f" {sms}</section>"
        )
    return layout("Your appointments today", "".join(sections), theme="portal", current="/portal")


def _note(resource: dict[str, Any]) -> str:
    """The text/plain attachment of a clinical note, decoded (what the clinician reads)."""
    for content in resource.get("content") or []:
        attachment = content.get("attachment") or {}
        if attachment.get("contentType", "").startswith("text/plain") and attachment.get("data"):
            try:
                text = base64.b64decode(attachment["data"]).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                return ""
            return f"<pre data-testid='note-text'>{e(text)}</pre>"
    return ""


async def _written_types(world: DemoWorld) -> list[str]:
    """The resource types to list: what the organization's writer writes, and whatever exists
    (a writer that is not configured is not listed as "none yet")."""
    org = await world.runtime.registry.get(ORG_ID)
    env = None if org is None else org.environment("test")
    configured = "" if env is None else _WRITER_TYPES.get(env.config.writer, "")
    return [t for t in FHIR_TYPES if t == configured or world.sandbox.fhir.resources(t)]


def _visit_report(facts: list[AttendanceFactRow], state: VisitState, now: datetime) -> str:
    """The visit report in words, its JSON behind a toggle. While the call is on, times run to
    ``now`` ("so far") and there is no end time (requirement D7)."""
    live = state == "in_progress" or not any(f.kind == "call_ended" for f in facts)
    counted = list(facts)
    if live:
        base = next((f for f in facts if f.kind == "call_started"), facts[-1])
        counted.append(replace(base, fact_key="demo-now", kind="call_ended", role="other", at=now))
    report = report_visit(counted)
    data = report.as_json()
    data["fact_count"] = len(facts)
    if live:
        data["ended_at"] = None
        data["in_progress"] = True
    so_far = " so far" if live else ""
    connected = ", ".join(
        f"{_ROLE_NAMES[role]} {_duration(seconds)}"
        for role, seconds in report.connected_s.items()
        if report.participants.get(role)
    )
    last: dict[str, tuple[str, str]] = {}
    for fact in sorted(facts, key=lambda f: f.at):
        if fact.kind in ("admitted", "connected", "disconnected"):
            last[fact.participant_key] = (fact.role, fact.kind)
    here = sorted({_ROLE_NAMES.get(r, r) for r, kind in last.values() if kind != "disconnected"})
    rows = [
        ("Status", "In progress" if live else "Ended"),
        ("Started", _time(report.started_at) if report.started_at else "—"),
    ]
    if not live:
        rows.append(("Ended", _time(report.ended_at) if report.ended_at else "—"))
    rows += [
        ("Length" + so_far, _duration(report.total_duration_s)),
        ("Patient waited in the lobby", _duration(report.lobby_wait_s)),
        ("Time connected" + so_far, connected or "nobody yet"),
        *((("Connected now", ", ".join(here) or "nobody"),) if live else ()),
        ("Patient attended", "No" if report.no_show else "Yes"),
    ]
    items = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in rows)
    return f"<dl class='facts'>{items}</dl>" + details(
        "Details: the report as JSON", pretty_json(data), test_id="report-json"
    )


async def _attendance(world: DemoWorld) -> str:
    parts = []
    for rtype in await _written_types(world):
        resources = world.sandbox.fhir.resources(rtype)
        listing = "".join(
            f"<div class='written'>{_note(r)}"
            + details(f"Details: {rtype} as FHIR JSON", pretty_json(r), test_id=f"json-{rtype}")
            + "</div>"
            for r in resources
        )
        listing = (
            listing or "<p class='note'>Nothing written yet: it is written after the visit.</p>"
        )
        count = f"{len(resources)} written"
        parts.append(
            f"<section data-testid='fhir-{e(rtype)}' data-count='{len(resources)}'>"
            f"<h2>{e(_TYPE_NAMES.get(rtype, rtype))} <span class='note'>· {e(count)}</span></h2>"
            f"{listing}</section>"
        )
    reports = []
    now = world.sandbox.clock()
    for appt in world.appointments.values():
        facts = await world.facts_of(appt)
        if not facts:
            continue
        state = await world.visit_state(appt)
        reports.append(
            f"<h3>{e(appt.reason)} · {_time(appt.start)}</h3>{_visit_report(facts, state, now)}"
        )
    body = (
        "<section><h2>Written to the sandbox EHR</h2><p class='note'>The FHIR resources the "
        "attendance writer created (no names, no patient identifiers).</p></section>"
        + "".join(parts)
        + "<section data-testid='visit-reports'><h2>Visit reports</h2>"
        + ("".join(reports) or "<p class='note'>No visit has started yet.</p>")
        + "</section>"
    )
    return layout("Attendance", body, current="/attendance")


async def _admin(world: DemoWorld) -> str:
    runtime = world.runtime
    sections = []
    for org in await runtime.registry.list():
        for name in _ENVIRONMENTS:
            env = org.environment(name)
            if env is None:
                continue
            state = str(env.state)
            head = (
                f"<h2>{e(org.display_name)} <code>{e(org.org_id)}</code> · {e(name)}</h2>"
                f"<p>FHIR base <code>{e(env.config.fhir_base)}</code> · state "
                f"<b data-testid='state-{e(org.org_id)}-{e(name)}' data-state='{e(state)}'>"
                f"{e(theme.label(state))}</b></p>"
            )
            if env.state == "pending_approval":
                head += button_form(
                    f"/demo/admin/approve/{org.org_id}",
                    "Approve as the EHR analyst",
                    test_id=f"approve-{org.org_id}",
                )
            try:
                records = integration_records(org, name, app_base_url=world.app_base_url)
            except ApprovalRequiredError:
                sections.append(f"<section>{head}</section>")
                continue
            data = records.model_dump(mode="json")
            rows = [(e(k.replace("_", " ").capitalize()), _record(v)) for k, v in data.items()]
            sections.append(
                f"<section>{head}<h3>Integration records</h3>{table(('Record', 'Value'), rows)}"
                f"<p><a href='/demo/admin/records/{e(org.org_id)}/{e(name)}.json'>"
                "Download as JSON</a></p>"
                + details("Details: the records as JSON", pretty_json(data))
                + "</section>"
            )
    body = "".join(sections) or "<p>No organizations.</p>"
    return layout("Admin · organizations", body, current="/demo/admin")


def _record(value: object) -> str:
    """One integration record value: lists as lines, mappings as ``key: value`` lines."""
    if isinstance(value, list):
        return "<br>".join(f"<code>{e(v)}</code>" for v in value) or "—"
    if isinstance(value, dict):
        return "<br>".join(f"{e(k)}: <code>{e(v)}</code>" for k, v in value.items()) or "—"
    return f"<code>{e(value)}</code>"


Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


class _TextLinks:
    """``/j/<token>`` for the demo's own text-message links: a link whose join window has not
    opened yet gets a page saying when it opens (instead of the library's uniform 404,
    threat T20 in docs/security.md); every other request goes to the app (``fallback``) unchanged."""

    def __init__(self, world: DemoWorld, fallback: ASGIApp) -> None:
        self._world = world
        self._fallback = fallback

    def __repr__(self) -> str:
        return "<TextLinks>"

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        token = str(scope.get("path_params", {}).get("token", ""))
        opens = await self._world.text_link_opens_at(token)
        if opens is None:
            await self._fallback(scope, receive, send)
            return
        text = (
            f"This link opens at {opens.strftime('%H:%M')} UTC, 30 minutes before your "
            "appointment. Open it again then, or begin the visit from the patient portal."
        )
        body = (
            f"<section><p data-testid='link-opens-at'>{e(text)}</p>"
            "<p><a class='button' href='/portal' data-testid='back-to-portal'>"
            "Back to the patient portal</a></p></section>"
        )
        page = layout("This link is not open yet", body, theme="portal")
        await html_response(page, 403)(scope, receive, send)


def demo_routes(world: DemoWorld, app: ASGIApp | None = None) -> list[Route]:
    """The demo's own pages; ``app`` (the example app) answers the text-message links the demo
    does not (see :class:`_TextLinks`)."""
    text_links: dict[str, str] = {}

    def portal_browser(request: Request, response: Response, appointment: str) -> Response:
        """Remember that this browser is this appointment's patient (the pre-join screen
        suggests their name, as MyChart's launch context would)."""
        browser = request.cookies.get(PORTAL_COOKIE) or secrets.token_urlsafe(16)
        world.portal_patients[browser] = appointment
        if PORTAL_COOKIE not in request.cookies:
            response.set_cookie(PORTAL_COOKIE, browser, path="/", httponly=True, samesite="lax")
        return response

    def page(render: Callable[[DemoWorld], Awaitable[str]]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            return html_response(await render(world))

        return endpoint

    async def ehr_begin(request: Request) -> Response:
        return _see_other(world.provider_launch_path(request.path_params["appointment"]))

    async def portal(request: Request) -> Response:
        return html_response(await _portal(world, text_links))

    async def portal_begin(request: Request) -> Response:
        appointment = request.path_params["appointment"]
        location = world.patient_launch_path(appointment)
        return portal_browser(request, _see_other(location), appointment)

    async def portal_text(request: Request) -> Response:
        appointment = request.path_params["appointment"]
        if await world.is_active():
            try:
                text_links[appointment] = await world.text_message_link(appointment)
            except IdentityBindingError:  # the meeting is the bound clinician's: not yet
                text = (
                    "The clinician has not linked their Microsoft account yet: begin the visit "
                    "from the EHR once, then send the text message."
                )
                return html_response(pages.message("Patient portal", text), 409)
            return portal_browser(request, _see_other("/portal"), appointment)
        return html_response(pages.message("Patient portal", "The clinic is not set up yet."), 409)

    async def approve(request: Request) -> Response:
        await world.approve(request.path_params["org_id"])
        return _see_other("/demo/admin")

    async def records(request: Request) -> Response:
        org = await world.runtime.registry.get(request.path_params["org_id"])
        env = next((n for n in _ENVIRONMENTS if n == request.path_params["environment"]), None)
        if org is None or env is None:
            return JSONResponse({"error": "not_found"}, 404, headers=dict(SECURITY_HEADERS))
        try:
            data = integration_records(org, env, app_base_url=world.app_base_url)
        except ApprovalRequiredError:
            return JSONResponse({"error": "not_approved"}, 409, headers=dict(SECURITY_HEADERS))
        return Response(
            json.dumps(data.model_dump(mode="json"), indent=2),
            media_type="application/json",
            headers=dict(SECURITY_HEADERS),
        )

    async def script(request: Request) -> Response:
        headers = {**dict(SECURITY_HEADERS), "Cache-Control": "no-cache"}
        return Response(pages.DEMO_JS, media_type="text/javascript", headers=headers)

    routes = [
        Route("/", page(_start), methods=["GET"]),
        Route("/ehr", page(_schedule), methods=["GET"]),
        Route("/ehr/begin/{appointment}", ehr_begin, methods=["GET"]),
        Route("/portal", portal, methods=["GET"]),
        Route("/portal/begin/{appointment}", portal_begin, methods=["GET"]),
        Route("/portal/text/{appointment}", portal_text, methods=["POST"]),
        Route("/attendance", page(_attendance), methods=["GET"]),
        Route("/demo/admin", page(_admin), methods=["GET"]),
        Route("/demo/admin/approve/{org_id}", approve, methods=["POST"]),
        Route("/demo/admin/records/{org_id}/{environment}.json", records, methods=["GET"]),
        Route("/static/demo.js", script, methods=["GET"]),
    ]
    if app is not None:
        routes.append(Route("/j/{token}", _TextLinks(world, app), methods=["GET"]))
    return routes
