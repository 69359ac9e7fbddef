"""T17: a prepared visit's organizer is the clinician's bound Microsoft identity, never an object
id its caller passes (docs/security.md)."""

from __future__ import annotations

import inspect

import pytest
from visit_support import ORG, launch_to_meeting

from teams_ehr.errors import ApprovalRequiredError, IdentityBindingError
from teams_ehr.testing.sandbox import CLINICIAN_OID, PRACTITIONER, Sandbox
from teams_ehr.visits.meetings import VisitMeetings

pytestmark = pytest.mark.anyio

BOUND_OID = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a"  # not the sandbox's usual clinician


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_a_caller_cannot_name_the_organizer() -> None:
    for method in (VisitMeetings.prepare_visit, VisitMeetings.enter_as_organizer):
        names = set(inspect.signature(method).parameters)
        assert not any("oid" in name or "organizer" in name for name in names), method


async def test_an_unbound_clinician_is_refused_and_no_meeting_is_made() -> None:
    sandbox = Sandbox()
    start, end = sandbox.seed_appointment("appt-u")
    async with sandbox.app() as app:
        await sandbox.seed_organization(app)
        with pytest.raises(IdentityBindingError) as refused:
            await app.visits.meetings.prepare_visit(
                ORG,
                environment="test",
                visit_key="Appointment/appt-u",
                ehr_user_id=PRACTITIONER,
                start=start,
                end=end,
            )
        assert refused.value.reason == "clinician_unbound"
        assert 400 <= refused.value.http_status_hint < 500
        for identifier in (PRACTITIONER, ORG, CLINICIAN_OID, sandbox.ehr.base_url):
            assert identifier not in str(refused.value)
        assert sandbox.graph.meetings == {}
        with pytest.raises(TypeError):  # the old way of naming the organizer is gone
            await app.visits.meetings.prepare_visit(  # type: ignore[call-arg]
                ORG,
                environment="test",
                visit_key="Appointment/appt-u",
                organizer_oid=CLINICIAN_OID,
                start=start,
                end=end,
            )


async def test_a_bound_clinician_organizes_with_the_bound_identity() -> None:
    sandbox = Sandbox()
    start, end = sandbox.seed_appointment("appt-b")
    async with sandbox.app() as app:
        await sandbox.seed_organization(app)
        await sandbox.seed_clinician(app, object_id=BOUND_OID)
        await sandbox.seed_clinician(app, user="someone-else")  # another clinician's binding
        token = await app.visits.meetings.prepare_visit(
            ORG,
            environment="test",
            visit_key="Appointment/appt-b",
            ehr_user_id=PRACTITIONER,
            start=start,
            end=end,
        )
        assert token
        (row,) = [await app.store.find_meeting_by_id(mid) for mid in sandbox.graph.meetings]
        assert row is not None
        assert row.organizer_oid == BOUND_OID
        with pytest.raises(ApprovalRequiredError):  # no production environment: no issuer
            await app.visits.meetings.prepare_visit(
                ORG,
                environment="production",
                visit_key="Appointment/appt-b",
                ehr_user_id=PRACTITIONER,
                start=start,
                end=end,
            )


async def test_the_launch_path_takes_the_organizer_from_the_binding_too() -> None:
    sandbox = Sandbox()
    sandbox.seed_appointment("appt-l")
    async with sandbox.app() as app:
        await sandbox.seed_organization(app)
        await sandbox.seed_clinician(app, object_id=BOUND_OID)
        entered = await launch_to_meeting(sandbox, app, "appt-l", "browser")
        assert entered.status == 303  # bound: no Microsoft sign-in
        (meeting_id,) = sandbox.graph.meetings
        row = await app.store.find_meeting_by_id(meeting_id)
        assert row is not None
        assert row.organizer_oid == BOUND_OID
