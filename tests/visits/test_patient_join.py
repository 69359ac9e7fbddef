"""The patient's ways into the visit, through ``runtime.visits.patient``: join link, Epic
context-aware link and the portal's SMART launch, each to the meeting's anonymous join URL.

A patient never creates a meeting: before the visit is prepared they get VisitNotReadyError.
"""

from __future__ import annotations

import pytest
from visit_support import ORG, assert_security_headers, browser

from teams_ehr.errors import JoinLinkInvalidError, VisitNotReadyError
from teams_ehr.testing.sandbox import PRACTITIONER, Sandbox
from teams_ehr.web import WebResponse

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_patient_join_link_lands_on_the_meeting_and_early_patients_wait() -> None:
    sandbox = Sandbox()
    start, end = sandbox.seed_appointment("appt-2")
    async with sandbox.app() as app:
        await sandbox.seed_organization(app)
        await sandbox.seed_clinician(app)
        with pytest.raises(VisitNotReadyError):
            await app.visits.patient.join_visit(ORG, "Appointment/appt-2")
        token = await app.visits.meetings.prepare_visit(
            ORG,
            environment="test",
            visit_key="Appointment/appt-2",
            ehr_user_id=PRACTITIONER,
            start=start,
            end=end,
        )
        joined = await app.visits.patient.join(token, client_key="203.0.113.9")
        assert joined.status == 303
        (meeting,) = sandbox.graph.meetings.values()
        assert joined.location == meeting["joinWebUrl"]
        assert_security_headers(joined)
        assert await app.visits.meetings.cancel_visit(ORG, "Appointment/appt-2")
        with pytest.raises(JoinLinkInvalidError):  # cancel revokes the join links
            await app.visits.patient.join(token, client_key="203.0.113.9")


async def test_patient_portal_launch_joins_the_prepared_meeting_and_never_creates_one() -> None:
    sandbox = Sandbox()
    start, end = sandbox.seed_appointment("appt-6")
    async with sandbox.app() as app:
        await sandbox.seed_organization(app)
        await sandbox.seed_clinician(app)

        async def portal_launch(session: str) -> WebResponse:
            params = {"iss": sandbox.ehr.base_url, "launch": sandbox.patient_launch("appt-6")}
            started = await app.visits.patient.begin_launch(ORG, "test", params, session_id=session)
            assert started.status == 302
            callback = sandbox.ehr.authorize_in_browser(browser(started))
            return await app.visits.callback.complete(callback, session_id=session)

        with pytest.raises(VisitNotReadyError):  # the clinician has not opened the visit yet
            await portal_launch("patient-early")
        assert sandbox.graph.meetings == {}

        await app.visits.meetings.prepare_visit(
            ORG,
            environment="test",
            visit_key="Appointment/appt-6",
            ehr_user_id=PRACTITIONER,
            start=start,
            end=end,
        )
        joined = await portal_launch("patient-on-time")
        assert joined.status == 303
        (meeting,) = sandbox.graph.meetings.values()
        assert joined.location == meeting["joinWebUrl"]
        assert_security_headers(joined)


async def test_epic_context_link_joins_the_same_visit_once() -> None:
    from teams_ehr.errors import ContextLinkError
    from teams_ehr.smart.epic_context_link import ContextLinkKey, encrypt_context_link

    sandbox = Sandbox()
    start, end = sandbox.seed_appointment("appt-5")
    key = ContextLinkKey(bytes(range(32)))
    async with sandbox.app() as app:
        await sandbox.seed_organization(app)
        await sandbox.seed_clinician(app)
        await app.visits.meetings.prepare_visit(
            ORG,
            environment="test",
            visit_key="Appointment/appt-5",
            ehr_user_id=PRACTITIONER,
            start=start,
            end=end,
        )
        stamp = str(int(sandbox.clock().timestamp()))
        link = encrypt_context_link(
            {"sessionId": "CSN-77", "appointment": "appt-5", "timestamp": stamp}, key
        )
        joined = await app.visits.patient.join_from_context_link(ORG, "test", link, key=key)
        assert joined.status == 303
        assert joined.location == next(iter(sandbox.graph.meetings.values()))["joinWebUrl"]
        with pytest.raises(ContextLinkError):  # replayed
            await app.visits.patient.join_from_context_link(ORG, "test", link, key=key)
        other = encrypt_context_link({"sessionId": "CSN-78", "timestamp": stamp}, key)
        with pytest.raises(VisitNotReadyError):  # names no appointment or encounter
            await app.visits.patient.join_from_context_link(ORG, "test", other, key=key)
