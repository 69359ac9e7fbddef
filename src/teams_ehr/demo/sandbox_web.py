"""Browser pages of the sandbox fakes: EHR consent, Microsoft sign-in, the Teams meeting (requirement E3).

:mod:`teams_ehr.demo.gateway` sends the browser here with the fake's own path and query. The
consent and sign-in pages ask the person to click, then hand the *unchanged* authorization request
to the fake (``FakeEhr.handler`` / ``FakeEntra.handler``) and follow its redirect back to the app.
The meeting pages render :class:`~teams_ehr.testing.meeting_room.MeetingRoom` of the meeting
whose join URL the library redirected to: a pre-join screen, the lobby with *Admit*, *Leave* and
*End meeting*; every change is handed to the attendance pipeline through
:meth:`DemoWorld.room_changed`.

Teams' rule, by identity: the sign-in page signs the browser in to the simulated Microsoft
(FakeEntra's session cookie); the pre-join screen offers *Join as <name> (organizer)* only to a
browser signed in as the meeting's organizer (name from that identity), another signed-in user
joins as a tenant user and waits per the lobby settings, everyone else joins as a guest. Each
participant belongs to the browser that joined (a sandbox cookie), and *Admit* and *End meeting*
are checked server-side against the room: a forged form post is refused with 403.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from teams_ehr.demo import pages
from teams_ehr.demo.pages import button_form, details, e, layout
from teams_ehr.demo.world import (
    APPROVER_NAME,
    CLINICIAN_NAME,
    DemoAppointment,
    DemoNotFoundError,
    DemoWorld,
    RoomPerson,
)
from teams_ehr.errors import UsageError
from teams_ehr.testing.fake_entra import SESSION_COOKIE, FakeEntra
from teams_ehr.testing.fake_entra_tokens import SignedInUser
from teams_ehr.testing.fake_graph import FakeGraph
from teams_ehr.testing.meeting_room import MeetingRoom
from teams_ehr.testing.sandbox import APPROVER_OID, CLINICIAN_OID
from teams_ehr.web import SECURITY_HEADERS

__all__ = [
    "PORTAL_COOKIE",
    "MicrosoftSide",
    "form_fields",
    "html_response",
    "microsoft_pages",
    "microsoft_routes",
    "sandbox_routes",
]

_MAX_FORM = 16_384
PORTAL_COOKIE = "demo-portal-browser"
"""The demo portal's browser cookie: which appointment's patient this browser launched as."""
Endpoint = Callable[[Request], Awaitable[Response]]


class MicrosoftSide(Protocol):
    """What the Microsoft pages act on: the demo's :class:`DemoWorld`, or the Microsoft sandbox
    of a real host (:class:`teams_ehr.microsoft_sandbox.MicrosoftSandbox`)."""

    @property
    def entra(self) -> FakeEntra: ...

    @property
    def graph(self) -> FakeGraph: ...

    @property
    def people(self) -> MutableMapping[tuple[str, str], RoomPerson]: ...

    def room(self, handle: str) -> MeetingRoom | None: ...

    def room_handle_for_join_url(self, join_url: str) -> str | None: ...

    def appointment_of_room(self, handle: str) -> DemoAppointment | None: ...

    def roster_url(self, appointment: DemoAppointment) -> str | None: ...

    @property
    def portal_url(self) -> str | None:
        """Where a patient goes back to after leaving (``None``: no portal page here)."""
        ...

    def signed_in(self, object_id: str, name: str) -> None: ...

    def display_name(self, object_id: str) -> str | None: ...

    def guest_name(self, handle: str, portal_browser: str | None) -> str: ...

    async def room_changed(self) -> None: ...


def html_response(markup: str, status: int = 200) -> HTMLResponse:
    headers = dict(SECURITY_HEADERS)
    headers["Content-Security-Policy"] = pages.CSP
    return HTMLResponse(markup, status_code=status, headers=headers)


def _see_other(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303, headers=dict(SECURITY_HEADERS))


async def form_fields(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the only kind the demo's forms send)."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    body = await request.body()
    return dict(parse_qsl(body.decode("utf-8", "replace")[:_MAX_FORM], keep_blank_values=True))


def _follow(
    response: httpx.Response, fake: str, nav: Sequence[tuple[str, str]] = pages.NAV
) -> Response:
    location = response.headers.get("location")
    if response.status_code != 302 or not location:
        text = f"The sandbox {fake} refused the request (HTTP {response.status_code})."
        return html_response(pages.message(f"Sandbox {fake}", text, nav=nav), status=400)
    return _see_other(location)


# -- the EHR's consent page and Microsoft's sign-in page ----------------------------------------

_PURPOSES = (  # (scope test, patient wording, clinician wording), SMART App Launch 2.2 §3
    (lambda s: s in ("openid", "fhirUser", "profile"), "Know who you are", "Know who you are"),
    (
        lambda s: s.startswith("launch"),
        "Open the visit you chose",
        "Open the visit you chose in the EHR",
    ),
    (
        lambda s: "Appointment" in s,
        "See your appointment (its start and end time)",
        "See the appointment (its start and end time)",
    ),
    (lambda s: "Encounter" in s, "See your visit record", "See the visit record"),
    (lambda s: "Patient" in s, "See your name in the health record", "See the patient's name"),
    (
        lambda s: s == "offline_access" or s == "online_access",
        "Stay signed in while the visit lasts",
        "Stay signed in while the visit lasts",
    ),
)


def scope_purposes(scopes: list[str], *, patient: bool) -> list[str]:
    """Plain descriptions of SMART scopes (SMART App Launch 2.2 §3, "Scopes and launch
    context"), each once, in a fixed order; an unknown scope is named as "Other access"."""
    found: list[str] = []
    for test, mine, theirs in _PURPOSES:
        if any(test(s) for s in scopes):
            found.append(mine if patient else theirs)
    known = [s for s in scopes if any(test(s) for test, _, _ in _PURPOSES)]
    if len(known) < len(scopes):
        found.append("Other access (see the details)")
    return found


def world_nav(world: object) -> tuple[tuple[str, str], ...]:
    """The demo's navigation on the demo; none on a host's Microsoft sandbox."""
    return pages.NAV if getattr(world, "portal_url", None) else ()


def _ehr_routes(world: DemoWorld) -> list[Route]:
    ehr = world.sandbox.ehr
    path = "/sandbox/ehr" + urlsplit(ehr.authorize_url).path

    async def consent(request: Request) -> Response:
        query = request.url.query
        params = dict(request.query_params)
        scopes = params.get("scope", "").split()
        patient = any(s.startswith("patient/") or s == "launch/patient" for s in scopes)
        who = "patient portal" if patient else "EHR"
        raw = "".join(f"<li><code>{e(s)}</code></li>" for s in scopes)
        body = (
            f"<section><h2>Allow the video visit app to use your {e(who)} sign-in?</h2>"
            "<p>It will be able to:</p><ul data-testid='consent-purposes'>"
            + "".join(f"<li>{e(text)}</li>" for text in scope_purposes(scopes, patient=patient))
            + "</ul><p class='note'>It reads only the appointment's start and end time.</p>"
            + details("Details: the exact access requested", f"<ul>{raw}</ul>", test_id="scopes")
            + button_form(
                path, "Allow", fields={"query": query, "decision": "allow"}, test_id="ehr-allow"
            )
            + " "
            + button_form(
                path,
                "Deny",
                fields={"query": query, "decision": "deny"},
                css="secondary",
                test_id="ehr-deny",
            )
            + "</section>"
        )
        page = layout("Sign in to your health record", body, theme="ehr", nav=world_nav(world))
        return html_response(page)

    async def decide(request: Request) -> Response:
        form = await form_fields(request)
        ehr.deny_consent = form.get("decision") != "allow"
        try:
            answer = ehr.handler(
                httpx.Request("GET", ehr.authorize_url + "?" + form.get("query", ""))
            )
        finally:
            ehr.deny_consent = False
        return _follow(answer, "EHR")

    return [Route(path, consent, methods=["GET"]), Route(path, decide, methods=["POST"])]


def _entra_routes(world: MicrosoftSide, prefix: str) -> list[Route]:
    entra = world.entra
    path = prefix + "/entra" + urlsplit(entra.authorize_endpoint).path

    accounts = {
        "clinician": (CLINICIAN_OID, CLINICIAN_NAME, "clinician@sandbox-clinic.example"),
        "approver": (APPROVER_OID, APPROVER_NAME, "ehr.analyst@sandbox-clinic.example"),
    }

    async def signin(request: Request) -> Response:
        query = request.url.query
        choices = "".join(
            f"<p><b>{e(name)}</b> · {e(upn)} "
            + button_form(
                path,
                f"Sign in as {name}",
                fields={"query": query, "account": key},
                test_id="ms-signin" if key == "clinician" else f"ms-signin-{key}",
            )
            + "</p>"
            for key, (_, name, upn) in accounts.items()
        )
        decline = button_form(
            path,
            "Cancel (do not allow)",
            fields={"query": query, "account": "clinician", "decision": "decline"},
            css="secondary",
            test_id="ms-decline",
        )
        body = (
            "<section><h2>Pick an account</h2><p>Accounts of the sandbox "
            "tenant. The clinician signs in once, to link their EHR user to their Microsoft "
            "identity; the EHR analyst signs in to approve the organization.</p>"
            f"{choices}<p>{decline}</p></section>"
        )
        page = layout("Sign in to Microsoft 365", body, theme="sandbox", nav=world_nav(world))
        return html_response(page)

    async def submit(request: Request) -> Response:
        form = await form_fields(request)
        oid, name, upn = accounts.get(form.get("account", ""), accounts["clinician"])
        # This browser is now signed in to (simulated) Microsoft: its cookie names the session,
        # which the simulated Teams asks before it offers to join as the organizer.
        session = entra.sign_in_browser(oid, name=name, preferred_username=upn)
        world.signed_in(oid, name)
        authorize = httpx.Request(
            "GET",
            entra.authorize_endpoint + "?" + form.get("query", ""),
            headers={"Cookie": f"{SESSION_COOKIE}={session}"},
        )
        entra.deny_consent = form.get("decision") == "decline"
        try:
            answer = entra.handler(authorize)
        finally:
            entra.deny_consent = False
        response = _follow(answer, "Microsoft sign-in", world_nav(world))
        response.set_cookie(SESSION_COOKIE, session, path=prefix, httponly=True, samesite="lax")
        return response

    return [Route(path, signin, methods=["GET"]), Route(path, submit, methods=["POST"])]


# -- the simulated Teams meeting ----------------------------------------------------------------

_BROWSER_COOKIE = "sandbox-teams-browser"


def _person(world: MicrosoftSide, handle: str, me: str) -> RoomPerson | None:
    return world.people.get((handle, me))


def _owns(request: Request, person: RoomPerson | None) -> bool:
    """Whether this request comes from the browser that joined as ``person``."""
    browser = request.cookies.get(_BROWSER_COOKIE, "")
    return person is not None and secrets.compare_digest(browser, person.browser)


def _refused(text: str, nav: Sequence[tuple[str, str]]) -> Response:
    return html_response(pages.message("Microsoft Teams", text, theme="teams", nav=nav), 403)


_KIND_LABELS = {"organizer": "organizer", "guest": "guest", "tenant_user": "colleague"}


def _panel(world: MicrosoftSide, teams: str, handle: str, room: MeetingRoom, me: str) -> str:
    """The live part of the meeting page (re-fetched by the page script on each change; its
    status line is copied into the page's ``aria-live`` region, WCAG 2.2 SC 4.1.3)."""

    def label(pid: str) -> str:
        person = _person(world, handle, pid)
        name, kind = (pid, "guest") if person is None else (person.name, person.kind)
        return f"{e(name)} <span class='note'>({e(_KIND_LABELS.get(kind, kind))})</span>"

    base = f"{teams}/rooms/{handle}/p/{me}"
    in_meeting, in_lobby = room.in_meeting(), room.in_lobby()
    organizer = room.organizer_present(me)
    person = _person(world, handle, me)
    if me in in_meeting:
        status = "<p class='ok' data-testid='me-status' data-state='in_meeting'>You are in the meeting.</p>"
    elif me in in_lobby:
        status = (
            "<p class='warn' data-testid='me-status' data-state='lobby'>You are waiting in the "
            "lobby. Someone in the meeting will let you in soon.</p>"
        )
    else:
        status = "<p data-testid='me-status' data-state='left'>You have left the meeting.</p>"
    lobby_items = "".join(
        f"<li>{label(pid)}"
        + (
            button_form(base + "/admit", "Admit", fields={"participant": pid}, test_id="admit")
            if organizer
            else ""
        )
        + "</li>"
        for pid in in_lobby
    )
    people = "".join(f"<li>{label(pid)}</li>" for pid in in_meeting)
    actions = ""
    if me in in_meeting or me in in_lobby:
        actions = button_form(base + "/leave", "Leave", css="danger", test_id="leave")
    else:
        actions = button_form(base + "/rejoin", "Rejoin the visit", test_id="rejoin")
        back = world.portal_url if person is not None and person.kind == "guest" else None
        if back:
            actions += (
                f" <a class='button secondary' href='{e(back)}' data-testid='back-to-portal'>"
                "Back to the patient portal</a>"
            )
    if organizer:
        actions += " " + button_form(
            base + "/end", "End meeting for everyone", css="secondary", test_id="end-meeting"
        )
    call = "The call is in progress." if room.call_active else "No call is in progress."
    return (
        f"{status}<p class='note'>{e(call)}</p>"
        f"<h2>In the meeting</h2><ul class='people' data-testid='in-meeting'>"
        f"{people or '<li>Nobody</li>'}</ul>"
        f"<h2>Lobby</h2><ul class='people' data-testid='lobby'>{lobby_items or '<li>Nobody waiting</li>'}</ul>"
        f"<p>{actions}</p>"
    )


def _account_choice(action: str, room: MeetingRoom, user: SignedInUser | None) -> str:
    """The pre-join screen's "signed in" part: the organizer option only for the organizer."""
    if user is None:
        return (
            "<p class='note' data-testid='not-signed-in'>This browser is not signed in to "
            "Microsoft 365: join as a guest.</p>"
        )
    if room.is_organizer(user.object_id, user.tenant_id):
        label, test_id = f"Join as {user.name} (organizer)", "join-organizer"
    else:
        label, test_id = f"Join as {user.name}", "join-account"
    button = button_form(action, label, fields={"identity": "account"}, test_id=test_id)
    in_meeting = room.organizer_present("organizer") and test_id == "join-organizer"
    return button + (" <span class='note'>(already in the meeting)</span>" if in_meeting else "")


def _teams_routes(world: MicrosoftSide, prefix: str) -> list[Route]:
    graph = world.graph
    entra = world.entra
    teams = prefix + "/teams"  # every Teams page lives under this path
    nav = world_nav(world)

    def room_of(request: Request) -> tuple[str, MeetingRoom]:
        handle = request.path_params["handle"]
        room = world.room(handle)
        if room is None:
            raise DemoNotFoundError("unknown room")
        return handle, room

    def signed_in(request: Request) -> SignedInUser | None:
        return entra.browser_user(request.cookies.get(SESSION_COOKIE))

    async def join_url(request: Request) -> Response:
        raw = request.scope.get("raw_path", b"").decode("latin-1")[len(teams) :]
        query = request.scope.get("query_string", b"").decode("latin-1")
        wanted = unquote("https://teams.microsoft.com" + raw + (f"?{query}" if query else ""))
        for meeting in graph.meetings.values():
            if unquote(str(meeting.get("joinWebUrl", ""))) == wanted:
                handle = world.room_handle_for_join_url(str(meeting["joinWebUrl"]))
                return _see_other(f"{teams}/rooms/{handle}")
        page = pages.message("Microsoft Teams", "Meeting not found.", theme="teams", nav=nav)
        return html_response(page, 404)

    async def prejoin(request: Request) -> Response:
        handle, room = room_of(request)
        appointment = world.appointment_of_room(handle)
        title = "Virtual visit" if appointment is None else f"Virtual visit · {appointment.reason}"
        organizer = world.display_name(room.organizer_oid)
        action = f"{teams}/rooms/{handle}/join"
        name = world.guest_name(handle, request.cookies.get(PORTAL_COOKIE))
        guest_form = (
            f"<form method='post' action='{e(action)}'><input type='hidden' name='identity' "
            "value='guest'><label for='guest-name'>Your name</label> <input type='text' "
            f"id='guest-name' name='name' value='{e(name)}' maxlength='60' autocomplete='name' "
            "data-testid='guest-name'> <button data-testid='join-guest'>Join now</button></form>"
        )
        host = f"<p data-testid='meeting-host'>Hosted by {e(organizer)}.</p>" if organizer else ""
        body = (
            f"<section><h2>{e(title)}</h2>{host}<p class='note'>Microsoft Teams (simulated) · "
            "no app, no account needed.</p></section>"
            "<section><h2>Continue on this browser as a guest</h2>"
            f"{guest_form}</section><section><h2>Signed in to Microsoft 365</h2>"
            f"{_account_choice(action, room, signed_in(request))}</section>"
        )
        return html_response(layout("Join the video visit", body, theme="teams", nav=nav))

    async def join(request: Request) -> Response:
        handle, room = room_of(request)
        form = await form_fields(request)
        browser = request.cookies.get(_BROWSER_COOKIE) or secrets.token_urlsafe(16)
        if form.get("identity", "guest") == "guest":
            me, kind = "guest-" + secrets.token_hex(4), "guest"
            name = (form.get("name") or "Guest").strip()[:60] or "Guest"
            room.join(me, identity="guest", display_name=name)
        else:  # "account" (or a forged "organizer"): who Microsoft says this browser is
            user = signed_in(request)
            if user is None:
                return _refused("Sign in to Microsoft 365 to join with an account.", nav)
            organizer = room.is_organizer(user.object_id, user.tenant_id)
            if form.get("identity") == "organizer" and not organizer:
                return _refused("Only the meeting's organizer can join as organizer.", nav)
            name, kind = user.name, "organizer" if organizer else "tenant_user"
            me = "organizer" if organizer else "user-" + secrets.token_hex(4)
            present = me in room.in_meeting() or me in room.in_lobby()
            if present and _owns(request, _person(world, handle, me)):
                return _see_other(f"{teams}/rooms/{handle}/p/{me}")
            if present:  # the organizer again, from a second browser
                me = "organizer-" + secrets.token_hex(4)
            try:
                room.join_signed_in(
                    me, object_id=user.object_id, tenant_id=user.tenant_id, display_name=name
                )
            except UsageError:  # an account of another tenant
                return _refused("This account cannot join this meeting.", nav)
        world.people[(handle, me)] = RoomPerson(name, kind, browser)
        await world.room_changed()
        response = _see_other(f"{teams}/rooms/{handle}/p/{me}")
        if _BROWSER_COOKIE not in request.cookies:
            response.set_cookie(_BROWSER_COOKIE, browser, path=teams, httponly=True, samesite="lax")
        return response

    async def room_page(request: Request) -> Response:
        handle, room = room_of(request)
        me = request.path_params["me"]
        if not _owns(request, _person(world, handle, me)):
            return _refused("This is someone else's place in the meeting.", nav)
        base = f"{teams}/rooms/{handle}"
        roster = await _live_roster(world, handle, room, me)
        body = (
            f"<section id='room-panel' tabindex='-1' data-state='{e(base)}/state.json' "
            f"data-panel='{e(base)}/p/{e(me)}/panel' data-version='{len(room.history)}'>"
            f"{_panel(world, teams, handle, room, me)}</section>{roster}"
        )
        page = layout("Video visit", body, theme="teams", script=True, nav=nav)
        return html_response(page)

    async def panel(request: Request) -> Response:
        handle, room = room_of(request)
        me = request.path_params["me"]
        if not _owns(request, _person(world, handle, me)):
            return _refused("This is someone else's place in the meeting.", nav)
        return html_response(_panel(world, teams, handle, room, me))

    async def state(request: Request) -> Response:
        _, room = room_of(request)
        body = {
            "version": len(room.history),
            "in_meeting": len(room.in_meeting()),
            "in_lobby": len(room.in_lobby()),
            "call_active": room.call_active,
        }
        return JSONResponse(body, headers=dict(SECURITY_HEADERS))

    async def act(request: Request) -> Response:
        """Admit, leave, end: checked here, not only by which buttons a page shows."""
        handle, room = room_of(request)
        me, action = request.path_params["me"], request.path_params["action"]
        if not _owns(request, _person(world, handle, me)):
            return _refused("This is someone else's place in the meeting.", nav)
        form = await form_fields(request)
        try:
            if action == "admit":
                room.admit(form.get("participant", ""), by=me)
            elif action == "leave":
                room.leave(me)
                if room.call_active and not room.in_meeting() and not room.in_lobby():
                    room.end_call()
            elif action == "end":
                room.end_for_everyone(me)
            elif action == "rejoin":
                await _rejoin(room, me, _person(world, handle, me), signed_in(request))
        except UsageError as exc:
            if exc.reason == "not_organizer":
                return _refused("Only the meeting's organizer can do this.", nav)
            # otherwise a double click: the room already changed; the page shows its state
        await world.room_changed()
        return _see_other(f"{teams}/rooms/{handle}/p/{me}")

    return [
        Route(teams + "/l/{rest:path}", join_url, methods=["GET"]),
        Route(teams + "/rooms/{handle}", prejoin, methods=["GET"]),
        Route(teams + "/rooms/{handle}/join", join, methods=["POST"]),
        Route(teams + "/rooms/{handle}/state.json", state, methods=["GET"]),
        Route(teams + "/rooms/{handle}/p/{me}", room_page, methods=["GET"]),
        Route(teams + "/rooms/{handle}/p/{me}/panel", panel, methods=["GET"]),
        Route(teams + "/rooms/{handle}/p/{me}/{action}", act, methods=["POST"]),
    ]


async def _rejoin(
    room: MeetingRoom, me: str, person: RoomPerson | None, user: SignedInUser | None
) -> None:
    """The same participant joins again (as a guest, or as the signed-in account it was)."""
    if person is None:
        return
    if person.kind == "guest":
        room.join(me, identity="guest", display_name=person.name)
    elif user is not None:
        room.join_signed_in(
            me, object_id=user.object_id, tenant_id=user.tenant_id, display_name=person.name
        )
    else:
        raise UsageError("sign in to Microsoft 365 to rejoin", reason="not_signed_in")


async def _live_roster(world: MicrosoftSide, handle: str, room: MeetingRoom, me: str) -> str:
    """The clinician's teams-ehr roster: the runtime's SSE stream when it exists (requirement D3)."""
    person = _person(world, handle, me)
    if person is None or person.kind != "organizer":
        return ""
    appointment = world.appointment_of_room(handle)
    url = None if appointment is None else world.roster_url(appointment)
    if url is None:
        return (
            "<section><h2>Who is here (teams-ehr)</h2><p class='note'>This runtime has no live "
            "roster route; the attendance page shows the stored facts.</p></section>"
        )
    return (
        f"<section id='live-roster' data-sse='{e(url)}' data-events='0'>"
        "<h2>Who is here (teams-ehr)</h2><p class='note'>What your app is told, live: roles "
        "and times, never names.</p><p class='call' data-testid='roster-call'></p>"
        "<ul data-testid='live-roster'></ul></section>"
    )


def microsoft_routes(world: MicrosoftSide, prefix: str) -> list[Route]:
    """Microsoft's browser pages (sign-in, the Teams meeting) under ``prefix``: ``/entra/...``
    with FakeEntra's own authorize path, ``/teams/...`` with the join URL's path and the rooms."""
    return [*_entra_routes(world, prefix), *_teams_routes(world, prefix)]


def sandbox_routes(world: DemoWorld) -> list[Route]:
    """Every browser-facing sandbox page."""

    async def missing(request: Request) -> Response:
        return html_response(pages.message("Sandbox", "Unknown sandbox page."), 404)

    routes = [*_ehr_routes(world), *microsoft_routes(world, "/sandbox")]
    routes.append(Route("/sandbox/{rest:path}", missing, methods=["GET", "POST"]))
    return routes


def microsoft_pages(side: MicrosoftSide, prefix: str) -> Starlette:
    """Microsoft's browser pages (:func:`microsoft_routes`) as one ASGI app, for a host's
    Microsoft sandbox (:mod:`teams_ehr.microsoft_sandbox`) to hand its requests to."""

    async def not_found(request: Request, exc: Exception) -> Response:
        page = pages.message("Not found", "This page does not exist.", nav=world_nav(side))
        return html_response(page, 404)

    return Starlette(
        routes=microsoft_routes(side, prefix),
        exception_handlers={DemoNotFoundError: not_found},
    )
