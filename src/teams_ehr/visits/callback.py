"""The one SMART redirect URI, ``/callback``, dispatching to the flow that started it.

Every authorization the app starts (clinician, consult, patient portal, approval) comes back to
the same registered ``redirect_uri``. The callback's ``state`` (SMART App Launch:
https://hl7.org/fhir/smart-app-launch/app-launch.html) names the pending authorization, which is
taken from the store once, even if the step then fails; its recorded role decides the flow that
redeems the code. An unknown, reused or expired state, or one of another organization, is
:class:`~teams_ehr.errors.StateInvalidError` before any request to the EHR.
"""

from __future__ import annotations

from collections.abc import Mapping

from teams_ehr._types import Clock, utc_now
from teams_ehr.smart.authorize import state_key
from teams_ehr.smart.callback import extract_state
from teams_ehr.store.protocol import Store
from teams_ehr.visits.approval import ApprovalLaunch
from teams_ehr.visits.patient import PatientJoin
from teams_ehr.visits.provider import ProviderLaunch
from teams_ehr.visits.records import open_pending
from teams_ehr.web import WebResponse

__all__ = ["EhrCallback"]


class EhrCallback:
    """``/callback``: take the pending authorization once, then its role's flow completes it."""

    def __init__(
        self,
        *,
        store: Store,
        provider: ProviderLaunch,
        patient: PatientJoin,
        approval: ApprovalLaunch,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._provider = provider
        self._patient = patient
        self._approval = approval
        self._clock = clock

    def __repr__(self) -> str:
        return "<EhrCallback>"

    async def complete(self, params: Mapping[str, str], *, session_id: str) -> WebResponse:
        """The SMART redirect URI: the approval, the patient's join or the clinician's visit."""
        taken = await self._store.take_pending(state_key(extract_state(params)), now=self._clock())
        envelope, pending = open_pending(taken)
        if envelope.role == "approval":
            return await self._approval.complete(envelope, pending, params, session_id=session_id)
        if envelope.role == "patient":
            return await self._patient.complete_launch(
                envelope, pending, params, session_id=session_id
            )
        return await self._provider.complete_launch(
            envelope, pending, params, session_id=session_id
        )
