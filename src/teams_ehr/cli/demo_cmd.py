"""``teams-ehr demo``: a whole virtual visit against the embedded sandbox (requirement E3, the main job).

By default it serves the clickable web demo (:mod:`teams_ehr.demo`: the FastAPI example app on
the sandbox) on ``http://127.0.0.1:<port>/``, prints that one URL, opens it in the browser unless
``--no-browser``, and serves until Ctrl-C.

``--console`` walks the visit in this process instead and prints each step: an approved organization, the clinician's SMART EHR launch (PKCE,
``private_key_jwt``) with its verified launch context, the one-time Microsoft sign-in, the
Teams meeting created with its lobby verified, and the patient's join link landing in the lobby.
Nothing leaves the machine: every request goes to the in-process fakes.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
import webbrowser
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio

from teams_ehr.app import TeamsEhr
from teams_ehr.smart.flows import LaunchResult
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


def _step(number: int, text: str) -> None:
    print(f"{number:>2}. {text}")


def _browser(response: WebResponse) -> SimpleNamespace:
    return SimpleNamespace(method="GET", url=response.location or "", fields=())


def _describe_context(result: LaunchResult) -> list[str]:
    ctx = result.context
    return [
        f"issuer (approved FHIR base): {result.issuer}",
        f"granted scope: {' '.join(sorted(ctx.scope))}",
        f"fhirUser (from the verified id_token): {ctx.fhir_user}",
        f"EHR user id: {ctx.user_id}",
        f"appointment: {ctx.appointment}   encounter: {ctx.encounter}",
        f"need_patient_banner: {ctx.need_patient_banner!r} (Epic sends a string; coerced)",
        f"Epic extras kept: loginDepartment={ctx.login_department}, "
        f"__epic.dstu2.patient={'present' if ctx.epic_dstu2_patient else 'absent'}",
    ]


async def console_walkthrough() -> int:
    """The visit, step by step; returns 0 when every step behaved as the spec requires."""
    sandbox = Sandbox()
    start, end = sandbox.seed_appointment("appt-demo-1")
    print("teams-ehr demo: a virtual visit on the embedded sandbox (no network)\n")
    async with sandbox.app() as app:
        org = await sandbox.seed_organization(app)
        _step(1, f"organization {org.org_id!r} approved for {sandbox.ehr.base_url}")

        result = await _verified_launch(sandbox, app)
        _step(2, "SMART EHR launch verified (PKCE S256, private_key_jwt ES384, id_token checked):")
        for line in _describe_context(result):
            print(f"      {line}")

        launch = sandbox.provider_launch("appt-demo-1")
        params = {"iss": sandbox.ehr.base_url, "launch": launch}
        started = await app.visits.provider.begin_launch(
            ORG, "test", params, session_id="demo-browser"
        )
        callback = sandbox.ehr.authorize_in_browser(_browser(started))
        signin = await app.visits.callback.complete(callback, session_id="demo-browser")
        _step(3, "clinician clicked 'Begin virtual visit'; first time → Microsoft sign-in at")
        print(f"      {urlsplit(signin.location or '').hostname} (tenant-specific authority)")
        sandbox.entra.sign_in_as(CLINICIAN_OID)
        back = sandbox.entra.authorize_in_browser(signin.location or "")
        entered = await app.visits.binding.complete_microsoft_signin(
            back, session_id="demo-browser"
        )
        (meeting,) = sandbox.graph.meetings.values()
        lobby = meeting["lobbyBypassSettings"]
        _step(
            4, "EHR user bound to the Microsoft identity; meeting created-or-got, lobby read back:"
        )
        print(
            f"      lobby bypass={lobby['scope']}, dial-in bypass={lobby['isDialInBypassEnabled']}"
        )
        print(f"      clinician redirected ({entered.status}) into the Teams meeting as organizer")

        token = await app.visits.meetings.prepare_visit(
            ORG,
            environment="test",
            visit_key="Appointment/appt-demo-1",
            ehr_user_id=PRACTITIONER,  # organized by the identity bound at step 4
            start=start,
            end=end,
        )
        joined = await app.visits.patient.join(token, client_key="127.0.0.1")
        room = sandbox.graph.room(meeting["id"])
        room.join("organizer", identity="organizer")
        room.join("patient", identity="guest")
        _step(5, f"patient opened the text link /j/… → {joined.status} to the anonymous join URL")
        waited = room.in_lobby() == ["patient"]
        print(f"      patient waiting in the lobby: {waited}")
        room.admit("patient")
        _step(6, f"clinician admitted the patient; in the meeting: {sorted(room.in_meeting())}")
        ok = (
            entered.status == joined.status == 303
            and lobby["scope"] == "organizer"
            and waited
            and sorted(room.in_meeting()) == ["organizer", "patient"]
        )
    print("\nAll steps passed." if ok else "\nA step did not behave as expected.")
    return 0 if ok else 1


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
