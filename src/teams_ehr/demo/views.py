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
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from teams_ehr.attendance.reports import report_visit
from teams_ehr.demo import pages
from teams_ehr.demo.pages import button_form, e, layout, pretty_json, table
from teams_ehr.demo.sandbox_web import html_response
from teams_ehr.demo.world import APPROVER_NAME, CLINICIAN_NAME, ORG_ID, DemoWorld
from teams_ehr.errors import ApprovalRequiredError, IdentityBindingError
from teams_ehr.orgs.models import EnvironmentName
from teams_ehr.orgs.records import integration_records
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


async def _start(world: DemoWorld) -> str:
    active = await world.is_active()
    state = (
        "<span class='ok'>approved</span>"
        if active
        else "<span class='warn'>pending approval</span> — approve it in the admin view first"
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
            "SMART EHR launch, one-time Microsoft sign-in, into the Teams meeting as organizer.",
        ),
        (
            "/portal",
            "Patient portal (open in another tab)",
            "Begin virtual visit as the patient: "
            "SMART patient launch or the text-message link, then wait in the lobby.",
        ),
        (
            "/attendance",
            "Attendance",
            "After the visit: what was written to the sandbox EHR and the visit report.",
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
        f"<p>Organization <code>{e(ORG_ID)}</code>: {state}.</p><ol>{items}</ol>"
        "<p class='note'>Everything runs in this process: the EHR, Microsoft sign-in, Graph and "
        "Teams are sandbox fakes. Names shown are made up.</p></section>",
    )


async def _schedule(world: DemoWorld) -> str:
    active = await world.is_active()
    rows = []
    for appt in world.appointments.values():
        ready = await world.meeting_of(appt) is not None
        rows.append(
            (
                _time(appt.start),
                e(appt.patient_name),
                e(appt.reason),
                "<span class='ok'>meeting ready</span>" if ready else "—",
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
        + table(("Time", "Patient", "Reason", "Teams", ""), rows)
        + "</section>"
    )
    return layout("Sandbox EHR · schedule", body, theme="ehr")


async def _portal(world: DemoWorld, links: dict[str, str]) -> str:
    sections = []
    for appt in world.appointments.values():
        ready = await world.meeting_of(appt) is not None
        status = (
            "<span class='ok'>Your clinician is ready</span>"
            if ready
            else "<span class='note'>Your clinician has not started the visit yet</span>"
        )
        text = links.get(appt.appointment_id)
        sms = (
            f"<p>Text message: <a href='{e(text)}' data-testid='sms-{e(appt.appointment_id)}'>"
            "Join your video visit</a></p>"
            if text
            else button_form(
                f"/portal/text/{appt.appointment_id}",
                "Send me a text link",
                css="secondary",
                test_id=f"text-{appt.appointment_id}",
            )
        )
        sections.append(
            f"<section><h3>{e(appt.patient_name)} · {_time(appt.start)}</h3>"
            f"<p>{e(appt.reason)} with {e(CLINICIAN_NAME)} — {status}</p>"
            + button_form(
                f"/portal/begin/{appt.appointment_id}",
                "Begin virtual visit",
                test_id=f"portal-begin-{appt.appointment_id}",
                method="get",
            )
            + f" {sms}</section>"
        )
    return layout("Patient portal (sandbox)", "".join(sections), theme="portal")


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


async def _attendance(world: DemoWorld) -> str:
    parts = []
    for rtype in FHIR_TYPES:
        resources = world.sandbox.fhir.resources(rtype)
        listing = "".join(_note(r) + pretty_json(r) for r in resources)
        listing = listing or "<p class='note'>none yet</p>"
        parts.append(
            f"<section data-testid='fhir-{e(rtype)}'><h3>{e(rtype)} "
            f"<span class='note'>({len(resources)})</span></h3>{listing}</section>"
        )
    rows = []
    for appt in world.appointments.values():
        facts = await world.facts_of(appt)
        if not facts:
            continue
        report = report_visit(facts).as_json()
        rows.append((e(appt.reason), pretty_json(report)))
    reports = table(("Visit", "Report"), rows) if rows else "<p class='note'>no facts yet</p>"
    body = (
        "<section><h2>Written to the sandbox EHR</h2><p class='note'>The FHIR resources the "
        "attendance writer created (no names, no patient identifiers).</p></section>"
        + "".join(parts)
        + f"<section data-testid='visit-reports'><h2>Visit reports</h2>{reports}</section>"
    )
    return layout("Attendance", body)


async def _admin(world: DemoWorld) -> str:
    runtime = world.runtime
    sections = []
    for org in await runtime.registry.list():
        for name in _ENVIRONMENTS:
            env = org.environment(name)
            if env is None:
                continue
            head = (
                f"<h3>{e(org.display_name)} <code>{e(org.org_id)}</code> · {e(name)}</h3>"
                f"<p>FHIR base <code>{e(env.config.fhir_base)}</code> · state "
                f"<b data-testid='state-{e(org.org_id)}-{e(name)}'>{e(env.state)}</b></p>"
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
            rows = [(e(k), f"<code>{e(v)}</code>") for k, v in data.items()]
            sections.append(
                f"<section>{head}<h4>Integration records</h4>{table(('Record', 'Value'), rows)}"
                f"<p><a href='/demo/admin/records/{e(org.org_id)}/{e(name)}.json'>JSON</a></p>"
                f"{pretty_json(data)}</section>"
            )
    return layout("Admin · organizations", "".join(sections) or "<p>No organizations.</p>")


def demo_routes(world: DemoWorld) -> list[Route]:
    """The demo's own pages."""
    text_links: dict[str, str] = {}

    def page(render: Callable[[DemoWorld], Awaitable[str]]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            return html_response(await render(world))

        return endpoint

    async def ehr_begin(request: Request) -> Response:
        return _see_other(world.provider_launch_path(request.path_params["appointment"]))

    async def portal(request: Request) -> Response:
        return html_response(await _portal(world, text_links))

    async def portal_begin(request: Request) -> Response:
        return _see_other(world.patient_launch_path(request.path_params["appointment"]))

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
            return _see_other("/portal")
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

    return [
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
