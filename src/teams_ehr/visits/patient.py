"""The patient's ways into the visit; each ends at the meeting's anonymous join URL.

Three paths name the same appointment as the clinician's launch: a SMART App Launch from the
patient portal (https://hl7.org/fhir/smart-app-launch/app-launch.html, ``/patient`` then
``/callback``), an Epic context-aware link (encrypted launch context, single use, five minutes
by default) and a join link ``/j/<token>`` sent by text or e-mail (threat T20,
docs/security.md). Each answers ``303`` to the Teams join URL of the stored meeting, where the
patient waits in the lobby until the clinician admits them. A patient never creates a meeting:
before the visit is prepared (the clinician's launch or :meth:`VisitMeetings.prepare_visit
<teams_ehr.visits.meetings.VisitMeetings.prepare_visit>`) they get
:class:`~teams_ehr.errors.VisitNotReadyError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from teams_ehr._types import Clock, utc_now
from teams_ehr.errors import UntrustedIssuerError, VisitNotReadyError
from teams_ehr.orgs.models import EnvironmentName
from teams_ehr.orgs.registry import OrganizationRegistry
from teams_ehr.smart.authorize import PendingAuthorization
from teams_ehr.smart.epic_context_link import ContextLinkKey, decrypt_context_link
from teams_ehr.store.protocol import MeetingRow, Store
from teams_ehr.teams.join_urls import patient_join_url
from teams_ehr.teams.meetings import external_id_for
from teams_ehr.visits.appointments import visit_key
from teams_ehr.visits.joinlinks import JoinLinkService
from teams_ehr.visits.launch import EhrLaunch
from teams_ehr.visits.policy import VisitPolicy
from teams_ehr.visits.records import PendingLaunch, active_org, meeting_of
from teams_ehr.web import WebResponse, redirect

__all__ = ["PatientJoin"]


class PatientJoin:
    """Portal launch, context-aware link or join link → ``303`` to the stored meeting."""

    def __init__(
        self,
        *,
        launch: EhrLaunch,
        store: Store,
        registry: OrganizationRegistry,
        joinlinks: JoinLinkService,
        external_id_key: bytes,
        policy: VisitPolicy | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._launch = launch
        self._store = store
        self._registry = registry
        self._joinlinks = joinlinks
        self._key = external_id_key
        self._policy = policy or VisitPolicy()
        self._clock = clock

    def __repr__(self) -> str:
        return "<PatientJoin>"

    async def begin_launch(
        self,
        org_id: str,
        environment: EnvironmentName,
        params: Mapping[str, str],
        *,
        session_id: str,
    ) -> WebResponse:
        """``/patient``: the portal's SMART launch, admitted like the clinician's."""
        return await self._launch.begin(
            org_id, environment, params, session_id=session_id, role="patient"
        )

    async def complete_launch(
        self,
        envelope: PendingLaunch,
        pending: PendingAuthorization,
        params: Mapping[str, str],
        *,
        session_id: str,
    ) -> WebResponse:
        """At ``/callback``: redeem, then the meeting of the appointment the launch names."""
        org, result = await self._launch.redeem(envelope, pending, params, session_id=session_id)
        return await self._redirect(org.org_id, visit_key(result.context))

    async def join(self, token: str, *, client_key: str) -> WebResponse:
        """``/j/<token>``: a valid join link → ``303`` to the meeting's anonymous join URL."""
        row = await self._joinlinks.resolve(token, client_key=client_key)
        meeting = await self._store.get_meeting(row.org_id, row.external_id)
        return self._response(meeting)

    async def join_visit(self, org_id: str, key: str | None) -> WebResponse:
        """The patient's redirect for a visit named by an already verified context."""
        await active_org(self._registry, org_id)
        return await self._redirect(org_id, key)

    async def join_from_context_link(
        self,
        org_id: str,
        environment: EnvironmentName,
        encrypted: str,
        *,
        key: ContextLinkKey,
        max_age: timedelta = timedelta(minutes=5),
    ) -> WebResponse:
        """An Epic context-aware link: decrypt, check freshness and first use, then the same
        appointment's meeting. The link must carry the appointment (or encounter) FHIR id among
        its context tokens so it names the same visit as the clinician's launch."""
        org = await active_org(self._registry, org_id)
        env = org.environment(environment)
        if env is None or env.state != "active":
            raise UntrustedIssuerError("environment is not active")
        link = await decrypt_context_link(
            encrypted,
            key,
            now=self._clock(),
            max_age=max_age,
            nonces=self._store,
            link_format=env.config.context_link,
        )
        return await self._redirect(org_id, visit_key(link.context))

    async def _redirect(self, org_id: str, key: str | None) -> WebResponse:
        if key is None:
            raise VisitNotReadyError("the launch named no appointment")
        meeting = await self._store.get_meeting(org_id, external_id_for(self._key, org_id, key))
        return self._response(meeting)

    def _response(self, row: MeetingRow | None) -> WebResponse:
        if row is None or row.state != "active":
            raise VisitNotReadyError("the visit has no meeting yet")
        meeting = meeting_of(row)
        return redirect(patient_join_url(meeting, allowed_hosts=self._policy.allowed_join_hosts))
