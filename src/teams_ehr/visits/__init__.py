"""The visit flows, one module per person they serve, over the SMART, Teams and store primitives.

The clinician's EHR launch into the meeting (:mod:`~teams_ehr.visits.provider`), their one-time
Microsoft sign-in (:mod:`~teams_ehr.visits.binding`), the patient's ways in
(:mod:`~teams_ehr.visits.patient`), the administrator's approval sign-in
(:mod:`~teams_ehr.visits.approval`), the ``/callback`` that dispatches between them
(:mod:`~teams_ehr.visits.callback`), the SMART legs every launch shares
(:mod:`~teams_ehr.visits.launch`), the meeting they share (:mod:`~teams_ehr.visits.meetings`), the
join links (:mod:`~teams_ehr.visits.joinlinks`) and what is kept between requests
(:mod:`~teams_ehr.visits.records`). :class:`teams_ehr.app.TeamsEhr` builds them as
``runtime.visits``; see docs/guides/integrator.md.
"""

from __future__ import annotations

from teams_ehr.visits.appointments import VisitSlot, appointment_slot_flow, visit_key
from teams_ehr.visits.approval import ApprovalLaunch, ApprovalSigninHook
from teams_ehr.visits.binding import ClinicianBinding
from teams_ehr.visits.callback import EhrCallback
from teams_ehr.visits.joinlinks import JoinLinkService, join_path
from teams_ehr.visits.launch import EhrLaunch
from teams_ehr.visits.meetings import MeetingReadyHook, VisitMeetings
from teams_ehr.visits.patient import PatientJoin
from teams_ehr.visits.policy import VisitPolicy
from teams_ehr.visits.provider import ProviderLaunch, ProviderRole
from teams_ehr.visits.records import LaunchRole
from teams_ehr.visits.services import OrgServices

__all__ = [
    "ApprovalLaunch",
    "ApprovalSigninHook",
    "ClinicianBinding",
    "EhrCallback",
    "EhrLaunch",
    "JoinLinkService",
    "LaunchRole",
    "MeetingReadyHook",
    "OrgServices",
    "PatientJoin",
    "ProviderLaunch",
    "ProviderRole",
    "VisitMeetings",
    "VisitPolicy",
    "VisitSlot",
    "appointment_slot_flow",
    "join_path",
    "visit_key",
]
