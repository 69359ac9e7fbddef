"""The demo's sandbox world: fakes, seeded clinic, schedule and simulated meeting rooms (requirement E3).

:class:`DemoWorld` wraps a :class:`~teams_ehr.testing.sandbox.Sandbox` whose app lives at the
demo server's own loopback origin (``http://127.0.0.1:<port>``, so the organization's environment
allows ``http`` for its redirect URI and JWKS URL only). The fakes keep their production-shaped
hosts (``ehr.test``, ``login.microsoftonline.com``, ``graph.microsoft.com``, and Teams join URLs
on ``teams.microsoft.com``): server-side every request goes through the sandbox transport, and
the browser reaches their pages through :mod:`teams_ehr.demo.gateway`.

What is seeded: one organization, *pending approval* so the admin view can approve it as the
sandbox approver (requirement C1: only approved URLs launch), and today's appointments in the fake
FHIR store. Patient names are made up and exist only in this module's schedule for the pages; they
are never logged and never reach the library (which reads only an appointment's times).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from teams_ehr._redact import get_logger
from teams_ehr.app import TeamsEhr
from teams_ehr.config import AttendanceSettings
from teams_ehr.orgs.approval import ApprovalProof
from teams_ehr.orgs.models import EnvironmentConfig, Organization, config_hash
from teams_ehr.sansio import run_async
from teams_ehr.smart.discovery import DiscoverySnapshot, discovery_flow
from teams_ehr.store.protocol import AttendanceFactRow, MeetingRow
from teams_ehr.teams.identity import MicrosoftIdentity
from teams_ehr.teams.meetings import external_id_for
from teams_ehr.testing.fake_entra import FakeEntra
from teams_ehr.testing.fake_graph import FakeGraph
from teams_ehr.testing.meeting_room import MeetingRoom
from teams_ehr.testing.sandbox import (
    APPROVER_OID,
    PRACTITIONER,
    SMART_CLIENT_ID,
    TENANT_ID,
    Sandbox,
)

__all__ = [
    "ORG_ID",
    "DemoAppointment",
    "DemoNotFoundError",
    "DemoSandbox",
    "DemoWorld",
    "RoomHandles",
    "RoomPerson",
    "VisitState",
]

ORG_ID = "sandbox-clinic"
CLINICIAN_NAME = "Dr. Demo"
APPROVER_NAME = "Avery Analyst"
_log = get_logger(__name__)
VisitState = Literal["not_started", "ready", "in_progress", "ended"]
"""What happened to a visit: no meeting yet; meeting created, no call; a call on; calls over."""
RoomChangeListener = Callable[[], Awaitable[object]]


class DemoNotFoundError(LookupError):
    """A demo page names an appointment, organization or room that does not exist."""


class DemoSandbox(Sandbox):
    """The sandbox with an app on a loopback ``http`` origin (the demo server itself), and an
    attendance pipeline that reconciles as soon as a call ends (a person is watching)."""

    def __init__(self, *, app_base_url: str) -> None:
        attendance = AttendanceSettings(
            workers=False,  # driven by teams_ehr.demo.attendance_bridge instead
            reconcile_delay=timedelta(0),
            poll_interval=timedelta(milliseconds=500),
            roster_heartbeat=timedelta(seconds=5),
        )
        super().__init__(app_base_url=app_base_url, attendance=attendance)

    def environment_config(self) -> EnvironmentConfig:
        return EnvironmentConfig(
            fhir_base=self.ehr.base_url,
            client_id=SMART_CLIENT_ID,
            epic_client_id=SMART_CLIENT_ID,
            redirect_uri=self.redirect_uri,
            jwks_url=self.app_base_url + "/.well-known/jwks.json",
            allow_http=True,  # loopback demo only: part of the approved configuration
        )


@dataclass(frozen=True, slots=True)
class DemoAppointment:
    """One row of the EHR schedule (the name is sandbox-only display text)."""

    appointment_id: str
    patient_id: str
    patient_name: str
    reason: str
    start: datetime
    end: datetime

    @property
    def visit_key(self) -> str:
        return f"Appointment/{self.appointment_id}"


@dataclass(frozen=True, slots=True)
class RoomPerson:
    """Someone in a simulated meeting room, as the demo's Teams pages show them.

    ``kind`` is what the room made of them (``organizer`` only for the meeting organizer's
    Microsoft identity); ``browser`` is the sandbox cookie of the browser that joined, the only
    browser whose clicks act for this participant."""

    name: str
    kind: str
    browser: str = field(repr=False)


class RoomHandles:
    """Opaque handles of FakeGraph's simulated meeting rooms, found by their join URL: the
    browser pages name a room by handle, never by its Graph meeting id or join link."""

    def __init__(self, graph: FakeGraph) -> None:
        self._graph = graph
        self._rooms: dict[str, str] = {}  # opaque room handle → Graph meeting id

    def __repr__(self) -> str:
        return f"<RoomHandles rooms={len(self._rooms)}>"

    def for_join_url(self, join_url: str) -> str | None:
        """The handle of the meeting whose join URL this is (``None``: unknown)."""
        for meeting_id, meeting in self._graph.meetings.items():
            if secrets.compare_digest(str(meeting.get("joinWebUrl", "")), join_url):
                for handle, known in self._rooms.items():
                    if known == meeting_id:
                        return handle
                handle = secrets.token_urlsafe(12)
                self._rooms[handle] = meeting_id
                return handle
        return None

    def meeting_id(self, handle: str) -> str | None:
        return self._rooms.get(handle)

    def room(self, handle: str) -> MeetingRoom | None:
        meeting_id = self._rooms.get(handle)
        return None if meeting_id is None else self._graph.room(meeting_id)


_SCHEDULE = (
    ("appt-1001", "patient-1001", "Alex Rivera", "Follow-up: blood pressure", 5),
    ("appt-1002", "patient-1002", "Sam Chen", "Medication review", 35),
    ("appt-1003", "patient-1003", "Jordan Lee", "New patient consult", 65),
)


class DemoWorld:
    """Everything the demo pages act on; one per demo server."""

    def __init__(self, app_base_url: str) -> None:
        self.sandbox = DemoSandbox(app_base_url=app_base_url)
        self.app_base_url = self.sandbox.app_base_url
        self.appointments: dict[str, DemoAppointment] = {}
        for appointment_id, patient_id, name, reason, minutes in _SCHEDULE:
            start, end = self.sandbox.seed_appointment(
                appointment_id, start=self.sandbox.clock() + timedelta(minutes=minutes)
            )
            self.appointments[appointment_id] = DemoAppointment(
                appointment_id, patient_id, name, reason, start, end
            )
        self._rooms = RoomHandles(self.sandbox.graph)
        self.people: dict[tuple[str, str], RoomPerson] = {}  # (room handle, participant id)
        self.notifier: RoomChangeListener | None = None
        self.console = False  # the library's admin console is mounted at /admin
        self.portal_url: str | None = "/portal"  # where a patient goes back to after a visit
        self.names: dict[str, str] = {}  # Microsoft object id → name it signed in with
        self.portal_patients: dict[str, str] = {}  # portal browser cookie → appointment id
        self.text_tokens: dict[str, str] = {}  # text-message join token → appointment id
        self._runtime: TeamsEhr | None = None

    def __repr__(self) -> str:
        return "<DemoWorld>"

    @property
    def entra(self) -> FakeEntra:
        return self.sandbox.entra

    @property
    def graph(self) -> FakeGraph:
        return self.sandbox.graph

    @property
    def runtime(self) -> TeamsEhr:
        if self._runtime is None:
            raise RuntimeError("the demo runtime is not open yet")
        return self._runtime

    # -- organizations (requirements C1, C2) -------------------------------------------------------

    async def seed(self, runtime: TeamsEhr) -> None:
        """Create the sandbox organization and submit its test environment for approval."""
        self._runtime = runtime
        if await runtime.registry.get(ORG_ID) is None:
            await self.sandbox.seed_organization(runtime, org_id=ORG_ID, approve=False)
            await runtime.registry.submit_for_approval(ORG_ID, "test", actor=APPROVER_OID)

    def install_console(self, runtime: TeamsEhr) -> bool:
        """When the host mounts the library's admin console (requirements C1, C2), give it the
        sandbox approver as administrator and loopback http bases; ``True`` if mounted."""
        from teams_ehr.integrations.routes import ROUTES

        if not any(spec.name == "admin_home" for spec in ROUTES):
            return False
        from teams_ehr.integrations.admin_routes import install_admin
        from teams_ehr.orgs.console import AdminPolicy

        policy = AdminPolicy(administrators={TENANT_ID: frozenset({APPROVER_OID})}, allow_http=True)
        install_admin(runtime, policy=policy)
        self.console = True
        return True

    async def approve(self, org_id: str) -> Organization:
        """Approve the test environment as the sandbox's designated approver.

        The proof is what the approval sign-ins yield (requirement C1): the approver's Microsoft
        identity and a discovery snapshot of the exact FHIR base, fetched now from the sandbox
        EHR."""
        runtime = self.runtime
        org = await runtime.registry.get(org_id)
        env = None if org is None else org.environment("test")
        if org is None or env is None:
            raise DemoNotFoundError("no such organization environment")
        base = env.config.fhir_base
        smart = await run_async(discovery_flow(base), runtime.http)
        proof = ApprovalProof(
            canonical_base=base,
            snapshot=DiscoverySnapshot.of(smart),
            id_token_issuer=self.sandbox.ehr.oidc_issuer,
            signed_in_at=self.sandbox.clock(),
        )
        approver = MicrosoftIdentity(tenant_id=TENANT_ID, object_id=APPROVER_OID)
        approved = await runtime.registry.approve(
            org_id, "test", approver, proof, config_hash=config_hash(org, "test")
        )
        _log.info("demo: organization approved (org %s)", org_id)
        return approved

    async def is_active(self) -> bool:
        org = await self.runtime.registry.get(ORG_ID)
        env = None if org is None else org.environment("test")
        return env is not None and env.state == "active"

    # -- launches (requirements C3, C4) ------------------------------------------------------------

    def _appointment(self, appointment_id: str) -> DemoAppointment:
        appointment = self.appointments.get(appointment_id)
        if appointment is None:
            raise DemoNotFoundError("no such appointment")
        return appointment

    def provider_launch_path(self, appointment_id: str) -> str:
        """What the EHR opens on *Begin virtual visit*: ``/launch/<org>/test?iss&launch``."""
        appointment = self._appointment(appointment_id)
        launch = self.sandbox.provider_launch(appointment.appointment_id)
        return _launch_path("launch", self.sandbox.ehr.base_url, launch)

    def patient_launch_path(self, appointment_id: str) -> str:
        """What the patient portal opens: a SMART patient launch ``/patient/<org>/test``."""
        appointment = self._appointment(appointment_id)
        launch = self.sandbox.ehr.issue_launch(
            patient=appointment.patient_id,
            encounter=None,
            appointment=appointment.appointment_id,
            user=appointment.patient_id,
        )
        return _launch_path("patient", self.sandbox.ehr.base_url, launch)

    async def text_message_link(self, appointment_id: str) -> str:
        """The patient's text/e-mail link ``/j/<token>`` (the visit prepared ahead, requirement C4),
        organized by the sandbox clinician's bound Microsoft identity: IdentityBindingError until
        they have signed in once (their first *Begin virtual visit*)."""
        appointment = self._appointment(appointment_id)
        token = await self.runtime.visits.meetings.prepare_visit(
            ORG_ID,
            environment="test",
            visit_key=appointment.visit_key,
            ehr_user_id=PRACTITIONER,
            start=appointment.start,
            end=appointment.end,
        )
        self.text_tokens[token] = appointment.appointment_id
        return f"/j/{token}"

    async def text_link_opens_at(self, token: str) -> datetime | None:
        """When a text-message link this demo issued opens, if that is still ahead (the join
        window, threat T20 in docs/security.md); ``None`` for any other token or an open window."""
        from teams_ehr.visits.joinlinks import token_hash

        if token not in self.text_tokens:
            return None
        row = await self.runtime.store.get_join_link(token_hash(token))
        if row is None or row.revoked or self.sandbox.clock() >= row.not_before:
            return None
        return row.not_before

    def external_id(self, appointment: DemoAppointment) -> str:
        key = self.runtime.settings.external_id_key_bytes()
        return external_id_for(key, ORG_ID, appointment.visit_key)

    async def meeting_of(self, appointment: DemoAppointment) -> MeetingRow | None:
        return await self.runtime.store.get_meeting(ORG_ID, self.external_id(appointment))

    def meeting_room(self, meeting: MeetingRow | None) -> MeetingRoom | None:
        if meeting is None or meeting.meeting_id not in self.sandbox.graph.meetings:
            return None
        return self.sandbox.graph.room(meeting.meeting_id)

    async def visit_state(self, appointment: DemoAppointment) -> VisitState:
        """What happened to the visit so far, from its meeting and the meeting's room."""
        meeting = await self.meeting_of(appointment)
        room = self.meeting_room(meeting)
        if meeting is None:
            return "not_started"
        if room is not None and room.call_active:
            return "in_progress"
        if room is not None and any(c.kind == "call_ended" for c in room.history):
            return "ended"
        return "ready"

    async def clinician_in_meeting(self, appointment: DemoAppointment) -> bool:
        """Whether the meeting's organizer is in the meeting now (not merely created it)."""
        room = self.meeting_room(await self.meeting_of(appointment))
        if room is None:
            return False
        last: dict[str, bool] = {}
        for change in room.history:
            if change.participant_id is not None and change.identity_kind == "organizer":
                last[change.participant_id] = not change.removed and not change.in_lobby
        return any(last.values())

    async def clinician_name(self, appointment: DemoAppointment) -> str | None:
        """The name the meeting's organizer signed in to Microsoft with (``None``: unknown)."""
        meeting = await self.meeting_of(appointment)
        return None if meeting is None else self.display_name(meeting.organizer_oid)

    def signed_in(self, object_id: str, name: str) -> None:
        """The sign-in page signed ``object_id`` in as ``name`` (for labels on the pages)."""
        self.names[object_id.lower()] = name

    def display_name(self, object_id: str) -> str | None:
        return self.names.get(object_id.lower())

    def guest_name(self, handle: str, portal_browser: str | None) -> str:
        """The name the pre-join screen suggests: the patient's, when this browser came from
        that patient's portal launch of this room's appointment; otherwise none."""
        appointment = self.appointment_of_room(handle)
        launched = self.portal_patients.get(portal_browser or "")
        if appointment is None or launched != appointment.appointment_id:
            return ""
        return appointment.patient_name

    async def facts_of(self, appointment: DemoAppointment) -> list[AttendanceFactRow]:
        return list(await self.runtime.store.list_facts(ORG_ID, self.external_id(appointment)))

    # -- simulated Teams meetings ---------------------------------------------------------------

    def room_handle_for_join_url(self, join_url: str) -> str | None:
        """The opaque handle of the meeting whose join URL this is (``None``: unknown)."""
        return self._rooms.for_join_url(join_url)

    def room(self, handle: str) -> MeetingRoom | None:
        return self._rooms.room(handle)

    def roster_url(self, appointment: DemoAppointment) -> str | None:
        """The runtime's live-roster (SSE) URL for this visit, if the runtime serves one."""
        from teams_ehr.integrations.routes import ROUTES

        values = {"org_id": ORG_ID, "external_id": self.external_id(appointment)}
        for spec in ROUTES:
            if spec.name == "roster":
                try:
                    return spec.path.format(**values)
                except KeyError:  # a route shape this demo does not know
                    return None
        return None

    async def room_changed(self) -> None:
        """After a room change: let the attendance pipeline see it (when it is wired)."""
        if self.notifier is not None:
            await self.notifier()

    def appointment_of_room(self, handle: str) -> DemoAppointment | None:
        """The schedule row of a room (by the meeting's externalId), for page headings."""
        meeting_id = self._rooms.meeting_id(handle)
        meeting = None if meeting_id is None else self.sandbox.graph.meetings.get(meeting_id)
        if meeting is None or self._runtime is None:
            return None
        for appointment in self.appointments.values():
            if meeting.get("externalId") == self.external_id(appointment):
                return appointment
        return None


def _launch_path(kind: str, iss: str, launch: str) -> str:
    from urllib.parse import urlencode

    return f"/{kind}/{ORG_ID}/test?" + urlencode({"iss": iss, "launch": launch})
