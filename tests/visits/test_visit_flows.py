"""Provider launch to the meeting, patient join to the lobby, through TeamsEhr (SPEC C3, C4, B6).

Everything runs against the sandbox fakes; each assertion names the rule it pins.
"""

from __future__ import annotations

from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest

from teams_ehr.app import TeamsEhr
from teams_ehr.errors import (
    ApprovalRequiredError,
    IdentityBindingError,
    JoinLinkInvalidError,
    LaunchParameterError,
    StateInvalidError,
    UntrustedIssuerError,
    VisitNotReadyError,
)
from teams_ehr.teams.identity import MicrosoftIdentity
from teams_ehr.testing.sandbox import APPROVER_OID, CLINICIAN_OID, TENANT_ID, Sandbox
from teams_ehr.web import WebResponse

pytestmark = pytest.mark.anyio

ORG = "sandbox-clinic"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _browser(response: WebResponse) -> SimpleNamespace:
    assert response.location is not None
    return SimpleNamespace(method="GET", url=response.location, fields=())


async def _launch_to_meeting(
    sandbox: Sandbox, app: TeamsEhr, appointment: str, session: str
) -> WebResponse:
    launch = sandbox.provider_launch(appointment)
    started = await app.visits.begin_launch(
        ORG, "test", {"iss": sandbox.ehr.base_url, "launch": launch}, session_id=session
    )
    assert started.status == 302
    params = sandbox.ehr.authorize_in_browser(_browser(started))
    return await app.visits.complete_ehr_callback(params, session_id=session)


def _security_headers(response: WebResponse) -> None:
    headers = dict(response.headers)
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-store"


async def test_first_launch_binds_then_enters_meeting_second_launch_goes_straight_in() -> None:
    sandbox = Sandbox()
    sandbox.seed_appointment("appt-1")
    async with sandbox.app() as app:
        await sandbox.seed_organization(app)
        first = await _launch_to_meeting(sandbox, app, "appt-1", "session-a")
        # First time: the clinician is sent to the tenant's Microsoft sign-in (B6).
        assert first.status == 302
        assert first.location is not None
        assert first.location.startswith(sandbox.entra.authorize_endpoint)
        _security_headers(first)
        sandbox.entra.sign_in_as(CLINICIAN_OID)
        signin = sandbox.entra.authorize_in_browser(first.location)
        entered = await app.visits.complete_microsoft_signin(signin, session_id="session-a")
        assert entered.status == 303
        assert urlsplit(entered.location or "").hostname == "teams.microsoft.com"
        _security_headers(entered)

        # The meeting exists once, with the patient-visit lobby applied and verified (B2, B3).
        (meeting,) = sandbox.graph.meetings.values()
        assert meeting["lobbyBypassSettings"]["scope"] == "organizer"
        assert meeting["lobbyBypassSettings"]["isDialInBypassEnabled"] is False

        # Second launch: the identity is bound, no sign-in, same meeting.
        again = await _launch_to_meeting(sandbox, app, "appt-1", "session-b")
        assert again.status == 303
        assert again.location == entered.location
        assert len(sandbox.graph.meetings) == 1
        link = await app.store.get_identity(ORG, sandbox.ehr.base_url, "practitioner-1")
        assert link is not None
        assert link.object_id == CLINICIAN_OID


async def test_patient_join_link_lands_on_the_meeting_and_early_patients_wait() -> None:
    sandbox = Sandbox()
    start, end = sandbox.seed_appointment("appt-2")
    async with sandbox.app() as app:
        await sandbox.seed_organization(app)
        with pytest.raises(VisitNotReadyError):
            await app.visits.join_visit(ORG, "Appointment/appt-2")
        token = await app.visits.prepare_visit(
            ORG, visit_key="Appointment/appt-2", organizer_oid=CLINICIAN_OID, start=start, end=end
        )
        joined = await app.visits.join(token, client_key="203.0.113.9")
        assert joined.status == 303
        (meeting,) = sandbox.graph.meetings.values()
        assert joined.location == meeting["joinWebUrl"]
        _security_headers(joined)
        assert await app.visits.cancel_visit(ORG, "Appointment/appt-2")
        with pytest.raises(JoinLinkInvalidError):  # cancel revokes the join links (B2)
            await app.visits.join(token, client_key="203.0.113.9")


async def test_unapproved_or_foreign_issuer_cannot_launch_and_sends_nothing() -> None:
    sandbox = Sandbox()
    async with sandbox.app() as app:
        await sandbox.seed_organization(app, approve=False)
        before = len(sandbox.ehr.requests)
        for iss in (sandbox.ehr.base_url, "https://evil.test/fhir"):
            with pytest.raises(UntrustedIssuerError):
                await app.visits.begin_launch(
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
            await app.visits.begin_launch(
                ORG,
                "test",
                {"iss": sandbox.ehr.base_url, "launch": sandbox.provider_launch("a")},
                session_id="s",
            )


async def test_replayed_launch_state_and_session_checks() -> None:
    sandbox = Sandbox()
    sandbox.seed_appointment("appt-3")
    async with sandbox.app() as app:
        await sandbox.seed_organization(app)
        launch = sandbox.provider_launch("appt-3")
        params = {"iss": sandbox.ehr.base_url, "launch": launch}
        started = await app.visits.begin_launch(ORG, "test", params, session_id="s1")
        with pytest.raises(LaunchParameterError):
            await app.visits.begin_launch(ORG, "test", params, session_id="s1")
        callback = sandbox.ehr.authorize_in_browser(_browser(started))
        with pytest.raises(StateInvalidError):  # another browser session
            await app.visits.complete_ehr_callback(callback, session_id="s2")
        with pytest.raises(StateInvalidError):  # state is single use, even after a failure
            await app.visits.complete_ehr_callback(callback, session_id="s1")


async def test_microsoft_signin_is_single_use_and_needs_a_live_launch_session() -> None:
    sandbox = Sandbox()
    sandbox.seed_appointment("appt-4")
    async with sandbox.app() as app:
        await sandbox.seed_organization(app)
        first = await _launch_to_meeting(sandbox, app, "appt-4", "s")
        assert first.location is not None
        sandbox.entra.sign_in_as(CLINICIAN_OID)
        signin = sandbox.entra.authorize_in_browser(first.location)
        with pytest.raises(StateInvalidError):  # the sign-in is bound to the browser session
            await app.visits.complete_microsoft_signin(signin, session_id="other")
        assert await app.store.get_identity(ORG, sandbox.ehr.base_url, "practitioner-1") is None

        # A Microsoft sign-in started without an EHR launch session cannot bind (B6).
        with pytest.raises(IdentityBindingError):
            await app.visits._binder.bind(
                ORG,
                sandbox.ehr.base_url,
                "practitioner-9",
                MicrosoftIdentity(tenant_id=TENANT_ID, object_id=CLINICIAN_OID),
                organization_tenant_id=TENANT_ID,
                launch_session_valid=False,
            )


async def test_epic_context_link_joins_the_same_visit_once() -> None:
    from teams_ehr.errors import ContextLinkError
    from teams_ehr.smart.epic_context_link import ContextLinkKey, encrypt_context_link

    sandbox = Sandbox()
    start, end = sandbox.seed_appointment("appt-5")
    key = ContextLinkKey(bytes(range(32)))
    async with sandbox.app() as app:
        await sandbox.seed_organization(app)
        await app.visits.prepare_visit(
            ORG, visit_key="Appointment/appt-5", organizer_oid=CLINICIAN_OID, start=start, end=end
        )
        stamp = str(int(sandbox.clock().timestamp()))
        link = encrypt_context_link(
            {"sessionId": "CSN-77", "appointment": "appt-5", "timestamp": stamp}, key
        )
        joined = await app.visits.join_from_context_link(ORG, "test", link, key=key)
        assert joined.status == 303
        assert joined.location == next(iter(sandbox.graph.meetings.values()))["joinWebUrl"]
        with pytest.raises(ContextLinkError):  # replayed
            await app.visits.join_from_context_link(ORG, "test", link, key=key)
        other = encrypt_context_link({"sessionId": "CSN-78", "timestamp": stamp}, key)
        with pytest.raises(VisitNotReadyError):  # names no appointment or encounter
            await app.visits.join_from_context_link(ORG, "test", other, key=key)
