"""The appointment's meeting: created-or-got with its lobby verified, prepared, entered, cancelled.

One Teams meeting per (organization, appointment), named by a keyed ``externalId`` so every
instance and every retry reaches the same one through Graph's ``createOrGet``
(https://learn.microsoft.com/graph/api/onlinemeeting-createorget); the lobby preset is patched and
read back before a join URL is used (:mod:`teams_ehr.teams.meetings`). The clinician's launch and
their first sign-in enter it as organizer; a host prepares it ahead of time to issue the patient's
join link, and cancelling it revokes those links (threat T20, docs/security.md). Patients only
ever read the stored meeting (:mod:`teams_ehr.visits.patient`).

The organizer is never taken from a caller (threat T17, docs/security.md): every meeting is
created for the Microsoft identity bound to the clinician's EHR user at their one-time sign-in
(:class:`~teams_ehr.teams.identity.IdentityBinder`), looked up by ``(organization, EHR issuer,
EHR user id)``. A clinician who has not signed in yet is refused with
:class:`~teams_ehr.errors.IdentityBindingError` (``clinician_unbound``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from datetime import datetime

from teams_ehr import metrics
from teams_ehr._redact import get_logger
from teams_ehr._types import utc_now
from teams_ehr.errors import ApprovalRequiredError, IdentityBindingError
from teams_ehr.orgs.models import EnvironmentName, Organization
from teams_ehr.orgs.registry import OrganizationRegistry
from teams_ehr.store.protocol import MeetingRow, Store
from teams_ehr.teams.identity import IdentityBinder
from teams_ehr.teams.join_urls import clinician_join_url
from teams_ehr.teams.lobby import PRESETS
from teams_ehr.teams.meetings import Meeting, MeetingRequest, external_id_for
from teams_ehr.visits.appointments import VisitSlot
from teams_ehr.visits.joinlinks import JoinLinkService
from teams_ehr.visits.policy import VisitPolicy
from teams_ehr.visits.records import LaunchSession, active_org
from teams_ehr.visits.services import OrgServices
from teams_ehr.web import WebResponse, redirect

__all__ = ["MeetingReadyHook", "VisitMeetings"]

_log = get_logger(__name__)

MeetingReadyHook = Callable[[MeetingRow], Awaitable[None]]
"""Called with the stored row each time a visit's meeting is created or confirmed."""


class VisitMeetings:
    """The visit's meeting over the store and each organization's meeting factory."""

    def __init__(
        self,
        *,
        store: Store,
        registry: OrganizationRegistry,
        services: OrgServices,
        joinlinks: JoinLinkService,
        external_id_key: bytes,
        policy: VisitPolicy | None = None,
        on_meeting_ready: MeetingReadyHook | None = None,
    ) -> None:
        self._store = store
        self._registry = registry
        self._services = services
        self._joinlinks = joinlinks
        self._key = external_id_key
        self._policy = policy or VisitPolicy()
        self._on_meeting_ready = on_meeting_ready
        self._identities = IdentityBinder(store, utc_now)  # lookups only: the clock is unused

    def __repr__(self) -> str:
        return "<VisitMeetings>"

    async def bound_organizer(self, org_id: str, issuer: str, ehr_user_id: str) -> str:
        """The Entra object id bound to the EHR user of ``issuer`` (the canonical FHIR base).

        :class:`IdentityBindingError` ``clinician_unbound`` before their first Microsoft sign-in.
        """
        link = await self._identities.lookup(org_id, issuer, ehr_user_id)
        if link is None:
            _log.info("organizer refused: clinician not bound (org %s)", org_id)
            raise IdentityBindingError(
                "the clinician has not signed in with Microsoft yet; launch the visit from the "
                "EHR once to link their account",
                reason="clinician_unbound",
            )
        return link.object_id

    async def _ensure(
        self,
        org: Organization,
        slot: VisitSlot,
        organizer_oid: str,
        *,
        preset: str | None = None,
        department: str | None = None,
    ) -> Meeting:
        """The slot's meeting, created or got with its lobby verified, then stored."""
        request = MeetingRequest(
            org_id=org.org_id,
            appointment_id=slot.key,
            organizer_oid=organizer_oid,
            start=slot.start,
            end=slot.end,
            policy=PRESETS[preset or self._policy.provider_preset],
        )
        try:
            meeting = await self._services.meeting_factory(org).ensure_meeting(request)
        except Exception as exc:
            metrics.record_meeting(metrics.outcome_of(exc))
            raise
        metrics.record_meeting("ok")
        row = MeetingRow(
            org_id=org.org_id,
            external_id=meeting.external_id,
            organizer_oid=meeting.organizer_oid,
            meeting_id=meeting.meeting_id,
            join_url=meeting.join_url.get_secret_value(),
            start=meeting.start,
            end=meeting.end,
            state="active",
            department=department,
        )
        await self._store.put_meeting(row)
        if self._on_meeting_ready is not None:
            await self._on_meeting_ready(row)
        _log.info("meeting ready (org %s)", org.org_id)
        return meeting

    async def enter_as_organizer(self, org: Organization, session: LaunchSession) -> WebResponse:
        """The launch's meeting (the consult preset for a consult), organized by the identity
        bound to the launch's verified EHR user, then ``303`` into it."""
        organizer_oid = await self.bound_organizer(org.org_id, session.issuer, session.ehr_user_id)
        slot = VisitSlot(session.visit_key, session.start, session.end)
        preset = self._policy.consult_preset if session.role == "consult" else None
        meeting = await self._ensure(
            org, slot, organizer_oid, preset=preset, department=session.department
        )
        return redirect(
            clinician_join_url(
                meeting,
                self._policy.clinician_join,
                allowed_hosts=self._policy.allowed_join_hosts,
            )
        )

    async def prepare_visit(
        self,
        org_id: str,
        *,
        environment: EnvironmentName,
        visit_key: str,
        ehr_user_id: str,
        start: datetime,
        end: datetime,
        preset: str | None = None,
        department: str | None = None,
    ) -> str:
        """Create the visit's meeting ahead of time and return a patient join-link token.

        ``ehr_user_id`` is the clinician's user id at the EHR of ``environment`` (the ``sub`` of
        the id_token their launches carry). The meeting's organizer is the Microsoft identity
        bound to that user; an unbound clinician → :class:`IdentityBindingError`.
        """
        org = await active_org(self._registry, org_id)
        env = org.environment(environment)
        if env is None or env.state != "active":
            raise ApprovalRequiredError("the organization environment is not active")
        organizer_oid = await self.bound_organizer(org_id, env.config.fhir_base, ehr_user_id)
        slot = VisitSlot(visit_key, start, end)
        meeting = await self._ensure(org, slot, organizer_oid, preset=preset, department=department)
        return await self._joinlinks.issue(org_id, meeting.external_id, meeting.start, meeting.end)

    async def cancel_visit(self, org_id: str, visit_key: str) -> bool:
        """Cancel the meeting and revoke its join links; ``False`` if there was no meeting."""
        org = await active_org(self._registry, org_id)
        row = await self._store.get_meeting(org_id, external_id_for(self._key, org_id, visit_key))
        if row is None:
            return False
        await self._services.meeting_factory(org).cancel(
            org_id=org_id,
            external_id=row.external_id,
            organizer_oid=row.organizer_oid,
            meeting_id=row.meeting_id,
        )
        await self._joinlinks.revoke(org_id, row.external_id)
        await self._store.put_meeting(dataclasses.replace(row, state="cancelled"))
        return True
