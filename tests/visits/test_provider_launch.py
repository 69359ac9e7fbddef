"""The clinician's EHR launch into the meeting as organizer, through ``runtime.visits.provider``.

Everything runs against the sandbox fakes; each assertion names the rule it pins (see
docs/guides/integrator.md, "What a launch does").
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from visit_support import ORG, assert_security_headers, launch_to_meeting, sign_in_and_enter

from teams_ehr.errors import ApprovalRequiredError, UntrustedIssuerError
from teams_ehr.testing.sandbox import APPROVER_OID, CLINICIAN_OID, Sandbox

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_first_launch_binds_then_enters_meeting_second_launch_goes_straight_in() -> None:
    sandbox = Sandbox()
    sandbox.seed_appointment("appt-1")
    async with sandbox.app() as app:
        await sandbox.seed_organization(app)
        first = await launch_to_meeting(sandbox, app, "appt-1", "session-a")
        # First time: the clinician is sent to the tenant's Microsoft sign-in.
        assert first.status == 302
        assert first.location is not None
        assert first.location.startswith(sandbox.entra.authorize_endpoint)
        assert_security_headers(first)
        entered = await sign_in_and_enter(sandbox, app, first, "session-a", CLINICIAN_OID)
        assert entered.status == 303
        assert urlsplit(entered.location or "").hostname == "teams.microsoft.com"
        assert_security_headers(entered)

        # The meeting exists once, with the patient-visit lobby applied and verified.
        (meeting,) = sandbox.graph.meetings.values()
        assert meeting["lobbyBypassSettings"]["scope"] == "organizer"
        assert meeting["lobbyBypassSettings"]["isDialInBypassEnabled"] is False

        # Second launch: the identity is bound, no sign-in, same meeting.
        again = await launch_to_meeting(sandbox, app, "appt-1", "session-b")
        assert again.status == 303
        assert again.location == entered.location
        assert len(sandbox.graph.meetings) == 1
        link = await app.store.get_identity(ORG, sandbox.ehr.base_url, "practitioner-1")
        assert link is not None
        assert link.object_id == CLINICIAN_OID


async def test_consult_launch_enters_a_meeting_with_the_consult_lobby() -> None:
    sandbox = Sandbox()
    sandbox.seed_appointment("appt-consult")
    async with sandbox.app() as app:
        await sandbox.seed_organization(app)
        first = await launch_to_meeting(sandbox, app, "appt-consult", "s", role="consult")
        entered = await sign_in_and_enter(sandbox, app, first, "s", CLINICIAN_OID)
        assert entered.status == 303
        # VisitPolicy.consult_preset: colleagues of the organization skip the lobby.
        (meeting,) = sandbox.graph.meetings.values()
        assert meeting["lobbyBypassSettings"]["scope"] == "organization"


async def test_unapproved_or_foreign_issuer_cannot_launch_and_sends_nothing() -> None:
    sandbox = Sandbox()
    async with sandbox.app() as app:
        await sandbox.seed_organization(app, approve=False)
        before = len(sandbox.ehr.requests)
        for iss in (sandbox.ehr.base_url, "https://evil.test/fhir"):
            with pytest.raises(UntrustedIssuerError):
                await app.visits.provider.begin_launch(
                    ORG, "test", {"iss": iss, "launch": "x"}, session_id="s"
                )
        assert len(sandbox.ehr.requests) == before


async def test_edit_after_approval_blocks_launch() -> None:
    sandbox = Sandbox()
    async with sandbox.app() as app:
        org = await sandbox.seed_organization(app)
        env = org.test
        assert env is not None
        edited = env.config.model_copy(update={"context_tokens": ("sessionId=%CSN%", "dep=%DEP%")})
        await app.registry.update(
            ORG, expected_version=org.version, actor=APPROVER_OID, environments={"test": edited}
        )
        with pytest.raises((UntrustedIssuerError, ApprovalRequiredError)):
            await app.visits.provider.begin_launch(
                ORG,
                "test",
                {"iss": sandbox.ehr.base_url, "launch": sandbox.provider_launch("a")},
                session_id="s",
            )
