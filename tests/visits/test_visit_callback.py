"""The one SMART ``/callback`` (``runtime.visits.callback``): state taken once, bound to the
browser session, then the flow of the role that started the authorization completes it."""

from __future__ import annotations

import pytest
from visit_support import ORG, browser

from teams_ehr.errors import LaunchParameterError, StateInvalidError
from teams_ehr.orgs.models import EnvironmentName, Organization
from teams_ehr.smart.flows import LaunchResult
from teams_ehr.testing.sandbox import Sandbox
from teams_ehr.web import WebResponse

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_replayed_launch_state_and_session_checks() -> None:
    sandbox = Sandbox()
    sandbox.seed_appointment("appt-3")
    async with sandbox.app() as app:
        await sandbox.seed_organization(app)
        launch = sandbox.provider_launch("appt-3")
        params = {"iss": sandbox.ehr.base_url, "launch": launch}
        started = await app.visits.provider.begin_launch(ORG, "test", params, session_id="s1")
        with pytest.raises(LaunchParameterError):
            await app.visits.provider.begin_launch(ORG, "test", params, session_id="s1")
        callback = sandbox.ehr.authorize_in_browser(browser(started))
        with pytest.raises(StateInvalidError):  # another browser session
            await app.visits.callback.complete(callback, session_id="s2")
        with pytest.raises(StateInvalidError):  # state is single use, even after a failure
            await app.visits.callback.complete(callback, session_id="s1")


async def test_an_approval_state_reaches_the_approval_hook_and_nothing_else() -> None:
    sandbox = Sandbox()
    async with sandbox.app() as app:
        await sandbox.seed_organization(app)
        received: list[tuple[str, str, str]] = []

        async def hook(
            org: Organization, environment: EnvironmentName, result: LaunchResult, session: str
        ) -> WebResponse:
            received.append((org.org_id, environment, session))
            return WebResponse(204)

        approval = app.visits.approval
        approval.on_signin = hook
        started = await approval.begin_standalone(ORG, "test", session_id="admin-browser")
        callback = sandbox.ehr.authorize_in_browser(browser(started))
        answer = await app.visits.callback.complete(callback, session_id="admin-browser")
        assert answer.status == 204
        assert received == [(ORG, "test", "admin-browser")]
        assert sandbox.graph.meetings == {}  # an approval sign-in never reaches a meeting

        # Without a console to receive it, an approval sign-in is refused at the callback.
        approval.on_signin = None
        started = await approval.begin_standalone(ORG, "test", session_id="admin-browser")
        callback = sandbox.ehr.authorize_in_browser(browser(started))
        with pytest.raises(StateInvalidError) as refused:
            await app.visits.callback.complete(callback, session_id="admin-browser")
        assert refused.value.reason == "purpose"


async def test_runtime_visits_are_one_object_per_role() -> None:
    from dataclasses import FrozenInstanceError

    from teams_ehr.visits import (
        ApprovalLaunch,
        ClinicianBinding,
        EhrCallback,
        PatientJoin,
        ProviderLaunch,
        VisitMeetings,
    )

    async with Sandbox().app() as app:
        visits = app.visits
        assert isinstance(visits.provider, ProviderLaunch)
        assert isinstance(visits.patient, PatientJoin)
        assert isinstance(visits.binding, ClinicianBinding)
        assert isinstance(visits.approval, ApprovalLaunch)
        assert isinstance(visits.meetings, VisitMeetings)
        assert isinstance(visits.callback, EhrCallback)
        # The patient's object has no way to create a meeting or start a clinician's launch.
        assert not hasattr(visits.patient, "prepare_visit")
        assert not hasattr(visits.patient, "ensure")
        with pytest.raises(FrozenInstanceError):
            visits.provider = visits.provider  # type: ignore[misc]
