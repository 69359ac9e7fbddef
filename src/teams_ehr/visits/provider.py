"""The clinician's visit: EHR launch → callback → (first time: Microsoft sign-in) → meeting.

A SMART App Launch EHR launch (https://hl7.org/fhir/smart-app-launch/app-launch.html) from the
clinician's *Begin virtual visit* button, for the ``provider`` role or a clinician-to-clinician
``consult``. After the code is redeemed the launch must name the EHR user (the verified
``id_token``'s ``sub``) and an appointment or encounter, whose times are read from FHIR. A clinician
already bound to a Microsoft identity goes straight into the meeting as organizer (``303``);
otherwise the validated launch waits for their one-time sign-in (:mod:`teams_ehr.visits.binding`).
See docs/guides/integrator.md, "What a launch does".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import httpx

from teams_ehr._types import Clock, utc_now
from teams_ehr.errors import IdentityBindingError
from teams_ehr.orgs.models import EnvironmentName, Organization
from teams_ehr.orgs.registry import OrganizationRegistry
from teams_ehr.sansio import run_async
from teams_ehr.smart.authorize import PendingAuthorization
from teams_ehr.smart.flows import LaunchResult
from teams_ehr.visits.appointments import appointment_slot_flow
from teams_ehr.visits.binding import ClinicianBinding
from teams_ehr.visits.launch import EhrLaunch
from teams_ehr.visits.meetings import VisitMeetings
from teams_ehr.visits.records import LaunchSession, PendingLaunch
from teams_ehr.web import WebResponse

__all__ = ["ProviderLaunch", "ProviderRole"]

ProviderRole = Literal["provider", "consult"]
"""The clinician roles: a visit with a patient, or a consult with a colleague."""


class ProviderLaunch:
    """The clinician's EHR launch into the appointment's meeting, as its organizer."""

    def __init__(
        self,
        *,
        launch: EhrLaunch,
        binding: ClinicianBinding,
        meetings: VisitMeetings,
        http: httpx.AsyncClient,
        clock: Clock = utc_now,
    ) -> None:
        self._launch = launch
        self._binding = binding
        self._meetings = meetings
        self._http = http
        self._clock = clock

    def __repr__(self) -> str:
        return "<ProviderLaunch>"

    async def begin_launch(
        self,
        org_id: str,
        environment: EnvironmentName,
        params: Mapping[str, str],
        *,
        session_id: str,
        role: ProviderRole = "provider",
    ) -> WebResponse:
        """``/launch``: admit ``iss`` (no I/O before), refuse a replayed ``launch``, redirect."""
        return await self._launch.begin(
            org_id, environment, params, session_id=session_id, role=role
        )

    async def complete_launch(
        self,
        envelope: PendingLaunch,
        pending: PendingAuthorization,
        params: Mapping[str, str],
        *,
        session_id: str,
    ) -> WebResponse:
        """At ``/callback``: redeem, read the appointment, then sign in once or enter."""
        org, result = await self._launch.redeem(envelope, pending, params, session_id=session_id)
        with OrganizationRegistry.read_for_request(org):  # one organization read per request
            return await self._after_redeem(org, result, envelope, session_id)

    async def _after_redeem(
        self, org: Organization, result: LaunchResult, envelope: PendingLaunch, session_id: str
    ) -> WebResponse:
        context = result.context
        if not context.user_id:
            raise IdentityBindingError("the EHR did not identify the user", reason="no_ehr_user")
        token = result.token.access_token.get_secret_value()
        slot = await run_async(
            appointment_slot_flow(result.issuer, context, token, now=self._clock()), self._http
        )
        session = LaunchSession(
            role=envelope.role,
            org_id=org.org_id,
            issuer=result.issuer,
            ehr_user_id=context.user_id,
            visit_key=slot.key,
            start=slot.start,
            end=slot.end,
            department=context.location or context.login_department,
        )
        if await self._binding.organizer_of(org.org_id, result.issuer, context.user_id) is None:
            return await self._binding.begin(org, session, session_id=session_id)
        # The organizer is read from the binding again there: never handed in (threat T17).
        return await self._meetings.enter_as_organizer(org, session)
