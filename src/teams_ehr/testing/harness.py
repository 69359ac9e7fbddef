"""A host test harness: drive an integrator's own ASGI or WSGI host through the sandbox (requirement E1).

The harness builds a :class:`~teams_ehr.app.TeamsEhr` on a
:class:`~teams_ehr.testing.sandbox.Sandbox`, hands it to the host's app factory, starts the app
in-process (:mod:`teams_ehr.testing._hosting`) and then plays the people around a visit over the
host's real routes: the clinician's EHR launch (with the one-time Microsoft sign-in), the
patient's portal launch or join link, the simulated Teams room, and Graph's change
notifications. What the host wrote back is asserted on the fake EHR::

    async with HostHarness(create_app) as host:         # create_app(runtime) -> FastAPI | Flask
        await host.clinician_launch("appt-1")           # EHR launch → sign-in → Teams
        patient = await host.patient_join("appt-1")     # portal launch → the meeting's lobby
        host.admit(patient)
        host.leave(patient)
        host.end("appt-1")
        await host.run_attendance()                     # notifications → inbox → outbox → EHR
        host.assert_written("DocumentReference", count=1)
        await host.assert_no_dead_letters()

The pytest plugin's ``teams_ehr_harness`` fixture yields one, configured with
``@pytest.mark.teams_ehr(host=create_app)``. The guide is docs/testing.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import httpx

from teams_ehr._types import JsonObject
from teams_ehr.app import TeamsEhr
from teams_ehr.attendance.runtime import AttendanceRuntime
from teams_ehr.attendance.writers import WriterStrategy
from teams_ehr.config import AttendanceSettings
from teams_ehr.errors import UsageError
from teams_ehr.testing._hosting import HostedApp, Interface, hosted
from teams_ehr.testing.meeting_room import IdentityKind, MeetingRoom
from teams_ehr.testing.sandbox import CLINICIAN_OID, Sandbox

__all__ = [
    "WRITTEN_TYPES",
    "AttendanceRun",
    "HostFactory",
    "HostHarness",
    "Launch",
    "Participant",
    "harness_attendance",
]

T = TypeVar("T")
DOCS = "docs/testing.md#the-host-harness"
WRITTEN_TYPES = ("AuditEvent", "DocumentReference", "Encounter")
"""The FHIR resource types teams-ehr's attendance writers create or update."""
CLINICIAN_LEG = "clinician"
HostFactory = Callable[[TeamsEhr], Any]
"""The integrator's app factory: the runtime in, an ASGI or WSGI application out."""


def harness_attendance() -> AttendanceSettings:
    """Attendance as the harness runs it: no background workers (:meth:`HostHarness.
    run_attendance` does their work when the test says so) and each visit reconciled as soon
    as its call ends (no ``reconcile_delay`` to wait out)."""
    return AttendanceSettings(workers=False, reconcile_delay=timedelta(0))


@dataclass(frozen=True, slots=True)
class Participant:
    """Someone in a visit's simulated Teams room."""

    appointment_id: str
    role: Literal["clinician", "patient"]
    leg: str
    meeting_id: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Launch:
    """Where the clinician's browser ended up after a launch through the host."""

    status: int
    location: str | None = field(repr=False)  # a Teams join URL: never in a repr
    body: bytes = field(repr=False)
    signed_in: bool
    """Whether the launch went through the one-time Microsoft sign-in."""
    meeting_id: str | None = field(default=None, repr=False)
    clinician: Participant | None = None
    """The clinician in the room (``None`` when refused or launched with ``join=False``)."""

    @property
    def refused(self) -> bool:
        """The host answered with an error page."""
        return self.status >= 400

    @property
    def in_meeting(self) -> bool:
        """The browser was sent to the visit's Teams meeting."""
        return self.meeting_id is not None


@dataclass(frozen=True, slots=True)
class AttendanceRun:
    """What one :meth:`HostHarness.run_attendance` did."""

    notifications: tuple[int, ...]
    """The host's HTTP status for each change notification Graph posted (202 = accepted)."""
    outbox: Mapping[str, int]
    """Outbox rows per state afterwards (``pending``, ``leased``, ``delivered``, ``dead``)."""


class HostHarness:
    """The integrator's host, started around a sandboxed runtime; see the module docstring.

    ``host`` builds the app from the runtime (``create_app(runtime)``); ``interface`` is
    detected (``"asgi"``/``"wsgi"``) unless given. The sandbox must leave attendance to the
    harness (:func:`harness_attendance`, the default). On entry the organization ``org_id`` is
    created and approved with the given attendance ``writer``.
    """

    def __init__(
        self,
        host: HostFactory,
        *,
        sandbox: Sandbox | None = None,
        interface: Interface | None = None,
        org_id: str = "sandbox-clinic",
        writer: str = "epic_clinical_note",
    ) -> None:
        if writer not in set(WriterStrategy):
            known = ", ".join(sorted(WriterStrategy))
            raise UsageError(
                f"unknown attendance writer {writer!r}. Known options: {known}; see {DOCS}",
                reason="harness_usage",
            )
        self.sandbox = sandbox or Sandbox(attendance=harness_attendance())
        if self.sandbox.settings.attendance.workers:
            raise UsageError(
                "the harness runs attendance itself (run_attendance()); build the Sandbox with "
                f"attendance=harness_attendance() so no background worker races it. See {DOCS}",
                reason="harness_usage",
            )
        self.org_id = org_id
        self.runtime: TeamsEhr = self.sandbox.app()
        self._host = host
        self._interface = interface
        self._writer = writer
        self._stack = AsyncExitStack()
        self._hosted: HostedApp | None = None
        self._browser: httpx.AsyncClient | None = None
        self._meetings: dict[str, str] = {}  # appointment id → Graph meeting id
        self._patients = 0

    def __repr__(self) -> str:
        return f"<HostHarness org={self.org_id!r}>"

    # -- lifecycle --------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            self._hosted = await self._stack.enter_async_context(
                hosted(self._host(self.runtime), self.runtime, self._interface)
            )
            self._browser = await self._client()
            self.sandbox.connect_webhooks(await self._client())  # Graph → the host's routes
            await self._hosted.call(_seed, self.sandbox, self.runtime, self.org_id, self._writer)
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def _client(self) -> httpx.AsyncClient:
        """A new browser (its own cookie jar) on the host's origin."""
        client = httpx.AsyncClient(
            transport=self._app.transport, base_url=self.sandbox.app_base_url
        )
        return await self._stack.enter_async_context(client)

    @property
    def _app(self) -> HostedApp:
        if self._hosted is None:
            raise UsageError(
                f"use the harness inside 'async with HostHarness(...)'; see {DOCS}",
                reason="harness_usage",
            )
        return self._hosted

    @property
    def browser(self) -> httpx.AsyncClient:
        """The clinician's browser on the host (keeps the session cookie between launches)."""
        if self._browser is None:
            raise UsageError(f"the harness is not started; see {DOCS}", reason="harness_usage")
        return self._browser

    @property
    def meetings(self) -> list[dict[str, Any]]:
        """Every meeting the host created in (fake) Teams, as Graph holds it."""
        return list(self.sandbox.graph.meetings.values())

    async def call(self, func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Await ``func(*args, **kwargs)`` on the event loop that owns the runtime (for a Flask
        host, its ``FlaskTeamsEhr`` portal), e.g. ``await host.call(host.runtime.store.
        list_dead)`` or your own code that issues join links."""
        return await self._app.call(partial(func, *args, **kwargs))

    # -- people -----------------------------------------------------------------------------------

    async def clinician_launch(
        self, appointment_id: str = "appt-1", *, iss: str | None = None, join: bool = True
    ) -> Launch:
        """The clinician clicks *Begin virtual visit* in the EHR for ``appointment_id`` (seeded
        in the fake FHIR store if it is not there yet): the host's launch URL, the EHR's
        authorization, the first-time Microsoft sign-in, then wherever the host sends the
        browser. ``iss`` replaces the EHR's FHIR base (a launch from an EHR the organization
        never approved). When the browser lands in the meeting the clinician joins the room as
        its organizer, unless ``join=False`` or already there. A refusal is returned, not
        raised: see :attr:`Launch.refused`."""
        sandbox = self.sandbox
        if not any(r.get("id") == appointment_id for r in sandbox.fhir.resources("Appointment")):
            sandbox.seed_appointment(appointment_id)
        params = {
            "iss": iss or sandbox.ehr.base_url,
            "launch": sandbox.provider_launch(appointment_id),
        }
        reply = await self.browser.get(f"/launch/{self.org_id}/test", params=params)
        signed_in = False
        if reply.status_code == 302:
            callback = sandbox.ehr.authorize_in_browser(reply.headers["location"])
            reply = await self.browser.get("/callback", params=callback)
            location = reply.headers.get("location", "")
            if reply.status_code == 302 and location.startswith(sandbox.entra.authorize_endpoint):
                sandbox.entra.sign_in_as(CLINICIAN_OID)
                signin = sandbox.entra.authorize_in_browser(location)
                reply = await self.browser.get("/microsoft/callback", params=signin)
                signed_in = True
        meeting_id = self._meeting_at(reply, appointment_id)
        clinician = None
        if meeting_id is not None and join:
            clinician = self._enter(appointment_id, meeting_id, CLINICIAN_LEG, "organizer")
        return Launch(
            status=reply.status_code,
            location=reply.headers.get("location"),
            body=reply.content,
            signed_in=signed_in,
            meeting_id=meeting_id,
            clinician=clinician,
        )

    async def patient_join(
        self, appointment_id: str = "appt-1", *, link: str | None = None, patient: str = "patient-1"
    ) -> Participant:
        """The patient opens the visit from the EHR's patient portal (the host's patient launch
        URL), or opens ``link`` (e.g. a join link the host issued; a SMART authorization on the
        way is played too) when given, in a browser of their own. The host must send them to
        the visit's meeting, where they join the room as a guest (the lobby holds them unless
        the meeting's lobby settings admit guests); if it does not, ``AssertionError``."""
        browser = await self._client()
        ehr = self.sandbox.ehr
        if link is None:
            launch = self.sandbox.patient_launch(appointment_id, patient=patient)
            params = {"iss": ehr.base_url, "launch": launch}
            reply = await browser.get(f"/patient/{self.org_id}/test", params=params)
        else:
            reply = await browser.get(link)
        location = reply.headers.get("location", "")
        if reply.status_code == 302 and location.startswith(ehr.authorize_url):
            reply = await browser.get("/callback", params=ehr.authorize_in_browser(location))
        meeting_id = self._meeting_at(reply, appointment_id)
        if meeting_id is None:
            raise AssertionError(
                f"the host did not send the patient to the meeting of {appointment_id!r} (HTTP "
                f"{reply.status_code}). Did the clinician launch the visit first "
                f"(clinician_launch)? See {DOCS}"
            )
        self._patients += 1
        return self._enter(appointment_id, meeting_id, f"patient-{self._patients}", "guest")

    def _meeting_at(self, reply: httpx.Response, appointment_id: str) -> str | None:
        """The meeting a ``303`` sends the browser to (remembered for the appointment)."""
        location = reply.headers.get("location")
        if reply.status_code != 303 or not location:
            return None
        path = httpx.URL(location).path  # the same for the web URL and its msteams: form
        for meeting_id, meeting in self.sandbox.graph.meetings.items():
            if httpx.URL(str(meeting.get("joinWebUrl", ""))).path == path:
                self._meetings[appointment_id] = meeting_id
                return meeting_id
        return None

    def _enter(
        self, appointment_id: str, meeting_id: str, leg: str, identity: IdentityKind
    ) -> Participant:
        room = self.sandbox.graph.room(meeting_id)
        if leg not in room.in_meeting() and leg not in room.in_lobby():
            room.join(leg, identity=identity)
        role: Literal["clinician", "patient"] = "clinician" if leg == CLINICIAN_LEG else "patient"
        return Participant(appointment_id, role, leg, meeting_id)

    # -- the room ---------------------------------------------------------------------------------

    def room(self, appointment_id: str = "appt-1") -> MeetingRoom:
        """The simulated Teams room of the visit's meeting (for what the helpers below skip)."""
        meeting_id = self._meetings.get(appointment_id)
        if meeting_id is None:
            known = ", ".join(sorted(self._meetings)) or "none yet"
            raise UsageError(
                f"no meeting for appointment {appointment_id!r}: launch the visit first "
                f"(clinician_launch). Known options: {known}; see {DOCS}",
                reason="harness_usage",
            )
        return self.sandbox.graph.room(meeting_id)

    def admit(self, participant: Participant) -> None:
        """Let ``participant`` in from the lobby."""
        self.room(participant.appointment_id).admit(participant.leg)

    def leave(self, participant: Participant) -> None:
        """``participant`` hangs up."""
        self.room(participant.appointment_id).leave(participant.leg)

    def end(self, appointment_id: str = "appt-1") -> None:
        """End the visit's call for everyone still in it."""
        self.room(appointment_id).end_call()

    # -- attendance -------------------------------------------------------------------------------

    async def run_attendance(self) -> AttendanceRun:
        """What Graph and the runtime's workers would do by now: post the room's changes to the
        host's webhook, process the inbox, reconcile ended visits and deliver the outbox to the
        fake EHR, until nothing is left to do."""
        attendance = self.runtime.attendance
        if attendance is None:
            raise UsageError(
                f"attendance is off in the sandbox's settings (attendance.enabled); see {DOCS}",
                reason="harness_usage",
            )
        sent = await self.sandbox.notifier.flush()
        await self._app.call(_catch_up, attendance)
        outbox = await self._app.call(self.runtime.store.outbox_counts)
        return AttendanceRun(tuple(s.status for s in sent), {str(k): n for k, n in outbox.items()})

    # -- assertions -------------------------------------------------------------------------------

    def assert_written(self, resource_type: str, *, count: int | None = None) -> list[JsonObject]:
        """Assert the host wrote ``count`` (default: at least one) resources of
        ``resource_type`` to the fake EHR, seeded ones aside; returns copies of them."""
        if resource_type not in WRITTEN_TYPES:
            raise UsageError(
                f"assert_written: teams-ehr writes no {resource_type!r}. Known options: "
                f"{', '.join(WRITTEN_TYPES)}; see {DOCS}",
                reason="harness_usage",
            )
        written = self.sandbox.fhir.written(resource_type)
        if len(written) == count or (count is None and written):
            return written
        tally = Counter(str(r["resourceType"]) for r in self.sandbox.fhir.written())
        summary = ", ".join(f"{kind} x{n}" for kind, n in sorted(tally.items())) or "nothing"
        expected = "at least one" if count is None else str(count)
        raise AssertionError(
            f"expected {expected} {resource_type} written to the fake EHR, found {len(written)} "
            f"(written: {summary}). Did the visit's call end and run_attendance() run after it, "
            f"and does the organization's writer ({self._writer}) write {resource_type}? "
            f"See {DOCS}"
        )

    async def assert_no_dead_letters(self) -> None:
        """Assert no attendance write was given up on (dead-lettered) by the host's outbox."""
        dead = await self._app.call(self.runtime.store.list_dead)
        if not dead:
            return
        tally = Counter((item.kind, item.last_reason or "no reason") for item in dead)
        listing = "\n".join(f"  - {kind} ({reason}) x{n}" for (kind, reason), n in tally.items())
        raise AssertionError(
            f"{len(dead)} attendance write(s) were dead-lettered:\n{listing}\n"
            "The fake EHR refused them or a scripted failure outlasted the retries; "
            f"see {DOCS}"
        )


async def _seed(sandbox: Sandbox, runtime: TeamsEhr, org_id: str, writer: str) -> None:
    await sandbox.seed_organization(runtime, org_id=org_id, writer=writer)


async def _catch_up(attendance: AttendanceRuntime) -> None:
    """Inbox and outbox until idle; then the maintenance pass (reconciles visits whose call
    ended, retires their subscriptions) and whatever it enqueued."""
    await attendance.drain()
    await attendance.maintain()
    await attendance.drain()
