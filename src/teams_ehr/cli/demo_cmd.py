"""``teams-ehr demo``: a whole virtual visit against the embedded sandbox (requirement E3, the main job).

By default it serves the clickable web demo (:mod:`teams_ehr.demo`: the FastAPI example app on
the sandbox) on ``http://127.0.0.1:<port>/``, prints that one URL, opens it in the browser unless
``--no-browser``, and serves until Ctrl-C.

``--console`` walks the same visit in this process instead and prints each step in plain words,
in order: the approved clinic, the clinician's launch from the EHR (SMART App Launch 2.2) and
one-time Microsoft sign-in, the Teams meeting with its lobby, the patient's text-message link
into the lobby, admission, both connected, leaving, and the attendance written back to the EHR
as a visit note. Nothing leaves the machine: every request goes to the in-process fakes.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import sys
import threading
import time
import webbrowser
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio

from teams_ehr._types import utc_now
from teams_ehr.app import TeamsEhr
from teams_ehr.config import AttendanceSettings
from teams_ehr.smart.flows import LaunchResult
from teams_ehr.teams.meetings import external_id_for
from teams_ehr.testing.sandbox import CLINICIAN_OID, PRACTITIONER, Sandbox
from teams_ehr.web import WebResponse

if TYPE_CHECKING:
    from teams_ehr.demo.server import DemoServer

ORG = "sandbox-clinic"
DEFAULT_PORT = 8700


def register(sub: Any) -> None:
    demo = sub.add_parser("demo", help="run a whole virtual visit on the embedded sandbox")
    demo.add_argument(
        "--console", action="store_true", help="walk the visit in the terminal instead"
    )
    demo.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"port on 127.0.0.1 (default {DEFAULT_PORT}, "
        "or any free port if that one is taken; 0: any free port)",
    )
    demo.add_argument("--host", choices=["127.0.0.1"], default="127.0.0.1", help=argparse.SUPPRESS)
    demo.add_argument("--no-browser", action="store_true", help="do not open a browser")
    demo.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    if args.console:
        return anyio.run(console_walkthrough)
    return web_demo(host=args.host, port=args.port, open_browser=not args.no_browser)


def web_demo(*, host: str, port: int | None, open_browser: bool) -> int:
    """Serve the web demo until Ctrl-C; prints exactly one URL."""
    try:
        from teams_ehr.demo.server import DemoServer
    except ModuleNotFoundError as exc:
        print(
            f"teams-ehr demo needs {exc.name}: pip install 'teams-ehr[demo]' "
            "(or run 'teams-ehr demo --console')",
            file=sys.stderr,
        )
        return 2
    try:
        try:
            server = DemoServer(host=host, port=DEFAULT_PORT if port is None else port)
        except OSError:
            if port is not None:
                raise
            server = DemoServer(host=host, port=0)
    except OSError as exc:
        print(f"teams-ehr demo: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"teams-ehr demo: open {server.url}  (Ctrl-C stops it)", flush=True)
    if open_browser:
        threading.Thread(target=_open_when_ready, args=(server,), daemon=True).start()
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C after shutdown
        serve(server)
    print("teams-ehr demo: stopped.")
    return 0


def serve(server: DemoServer) -> None:
    """Block serving ``server`` (a seam for the CLI test)."""
    server.serve()


def _open_when_ready(server: DemoServer) -> None:
    deadline = time.monotonic() + 15
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    if server.started:
        webbrowser.open(server.url)


_KIND_WORDS = {
    "call_started": "the call started",
    "lobby_entered": "waited in the lobby",
    "admitted": "was let in",
    "connected": "connected",
    "disconnected": "left",
    "call_ended": "the call ended",
}
_ROLE_WORDS = {"provider": "the clinician", "patient": "the patient", "other": "someone"}
_ORDER = {kind: index for index, kind in enumerate(_KIND_WORDS)}


class _Clock:
    """The walk's own clock: each step takes a few simulated minutes, so times read in order."""

    def __init__(self) -> None:
        self.now = utc_now().replace(second=0, microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)


def _step(number: int, text: str) -> None:
    print(f"{number:>2}. {text}")


def _detail(text: str) -> None:
    print(f"      {text}" if text else "")


def _yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def _browser(response: WebResponse) -> SimpleNamespace:
    return SimpleNamespace(method="GET", url=response.location or "", fields=())


def _describe_context(result: LaunchResult) -> list[str]:
    ctx = result.context
    return [
        f"the EHR it came from (approved): {result.issuer}",
        f"the signed-in EHR user: {ctx.fhir_user}",
        f"the appointment: {ctx.appointment}",
        f"the visit (encounter): {ctx.encounter}",
    ]


def _fact_words(role: str, kind: str) -> str:
    if kind in ("call_started", "call_ended"):
        return _KIND_WORDS[kind]
    return f"{_ROLE_WORDS.get(role, 'someone')} {_KIND_WORDS.get(kind, kind)}"


async def _pipeline(sandbox: Sandbox, app: TeamsEhr) -> None:
    """What the runtime's background workers do, once: Graph's notifications in, facts out."""
    await sandbox.notifier.flush()
    if app.attendance is not None:
        await app.attendance.drain()
        await app.attendance.maintain()  # reconciles a visit whose call has ended
        await app.attendance.drain()


async def console_walkthrough() -> int:
    """The whole visit, step by step, in plain words: launch, meeting, the patient joins and
    is admitted, both connect, leave, and the attendance is written back to the EHR (FHIR R4
    DocumentReference, docs/guides/ehr-analyst.md). 0 when every step did what it should."""
    attendance = AttendanceSettings(workers=False, reconcile_delay=timedelta(0))
    clock = _Clock()
    sandbox = Sandbox(attendance=attendance, clock=clock)
    start, end = sandbox.seed_appointment("appt-demo-1", start=clock.now + timedelta(minutes=5))
    print("teams-ehr demo: one virtual visit on this machine (no network)\n")
    async with sandbox.app() as app:
        org = await sandbox.seed_organization(app)
        _step(1, f"The clinic is set up and approved: organization {org.org_id!r}, test EHR.")

        result = await _verified_launch(sandbox, app)
        _step(2, "The clinician clicks 'Begin virtual visit' in the EHR. The EHR opens teams-ehr,")
        _detail("which checks who is signing in and which appointment it is:")
        for line in _describe_context(result):
            _detail(f"  {line}")

        launch = sandbox.provider_launch("appt-demo-1")
        params = {"iss": sandbox.ehr.base_url, "launch": launch}
        started = await app.visits.provider.begin_launch(
            ORG, "test", params, session_id="demo-browser"
        )
        callback = sandbox.ehr.authorize_in_browser(_browser(started))
        signin = await app.visits.callback.complete(callback, session_id="demo-browser")
        host = urlsplit(signin.location or "").hostname
        _step(3, f"First visit only: the clinician signs in to Microsoft ({host}) once,")
        sandbox.entra.sign_in_as(CLINICIAN_OID)
        back = sandbox.entra.authorize_in_browser(signin.location or "")
        entered = await app.visits.binding.complete_microsoft_signin(
            back, session_id="demo-browser"
        )
        _detail("and teams-ehr remembers which Microsoft account belongs to this EHR user.")
        (meeting,) = sandbox.graph.meetings.values()
        lobby = meeting["lobbyBypassSettings"]
        lobby_ok = lobby["scope"] == "organizer" and lobby["isDialInBypassEnabled"] is False
        _step(4, "teams-ehr creates the Teams meeting for this appointment, with a lobby:")
        _detail(f"only the clinician skips the lobby: {_yes(lobby_ok)}.")
        room = sandbox.graph.room(meeting["id"])
        room.join("organizer", identity="organizer")
        _step(5, "The clinician joins the meeting as its host.")
        clock.advance(2)

        token = await app.visits.meetings.prepare_visit(
            ORG,
            environment="test",
            visit_key="Appointment/appt-demo-1",
            ehr_user_id=PRACTITIONER,  # organized by the account linked at step 3
            start=start,
            end=end,
        )
        joined = await app.visits.patient.join(token, client_key="127.0.0.1")
        room.join("patient", identity="guest")
        clock.advance(3)
        waited = room.in_lobby() == ["patient"]
        _step(6, "The patient opens the link in their text message and joins as a guest.")
        _detail(f"Waiting in the lobby: {_yes(waited)}.")

        room.admit("patient", by="organizer")
        together = sorted(room.in_meeting()) == ["organizer", "patient"]
        _step(7, f"The clinician admits the patient. Both are in the call: {_yes(together)}.")
        await _pipeline(sandbox, app)
        clock.advance(12)

        room.leave("patient")
        clock.advance(1)
        room.end_for_everyone("organizer")
        _step(8, "The patient leaves; the clinician ends the meeting for everyone.")
        await _pipeline(sandbox, app)

        external_id = external_id_for(
            app.settings.external_id_key_bytes(), ORG, "Appointment/appt-demo-1"
        )
        facts = sorted(
            await app.store.list_facts(ORG, external_id),
            key=lambda f: (f.at, _ORDER.get(f.kind, 9), f.role),
        )
        _step(9, "teams-ehr recorded what happened (roles and times only, no names):")
        for fact in facts:
            _detail(f"{fact.at:%H:%M} UTC  {_fact_words(fact.role, fact.kind)}")
        notes = sandbox.fhir.resources("DocumentReference")
        _step(10, f"Written back to the EHR: {len(notes)} visit note on the appointment's record.")
        for line in _note_lines(notes):
            _detail(line)
        ok = (
            entered.status == joined.status == 303
            and lobby_ok
            and waited
            and together
            and len(notes) == 1
        )
    print("\nAll steps passed." if ok else "\nA step did not behave as expected.")
    return 0 if ok else 1


def _note_lines(notes: list[dict[str, Any]]) -> list[str]:
    """The text of the visit note the clinician sees in the EHR."""
    for note in notes:
        for content in note.get("content") or []:
            data = (content.get("attachment") or {}).get("data")
            if data:
                return base64.b64decode(data).decode("utf-8", "replace").strip().splitlines()
    return []


async def _verified_launch(sandbox: Sandbox, app: TeamsEhr) -> LaunchResult:
    """One SMART launch with the library's client, to show the verified context it returns."""
    org = await app.registry.get(ORG)
    if org is None:  # seeded just before
        raise RuntimeError("sandbox organization missing")
    client = app.services.smart_client(org, "test", "provider")
    launch = sandbox.provider_launch("appt-demo-1")
    redirect, pending = await client.start_launch(
        sandbox.ehr.base_url, ORG, launch=launch, session_id="demo-context", approved=None
    )
    callback = sandbox.ehr.authorize_in_browser(redirect)
    return await client.complete_launch(pending, callback, session_id="demo-context")
