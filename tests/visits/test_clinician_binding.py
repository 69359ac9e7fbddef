"""The clinician's one-time Microsoft sign-in, bound to a live launch (``runtime.visits.binding``).

See docs/security.md, T14: binding only from a validated EHR launch session, in the same browser.
"""

from __future__ import annotations

import pytest
from visit_support import ORG, launch_to_meeting

from teams_ehr.errors import IdentityBindingError, StateInvalidError
from teams_ehr.teams.identity import IdentityBinder, MicrosoftIdentity
from teams_ehr.testing.sandbox import CLINICIAN_OID, TENANT_ID, Sandbox

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_microsoft_signin_is_single_use_and_needs_a_live_launch_session() -> None:
    sandbox = Sandbox()
    sandbox.seed_appointment("appt-4")
    async with sandbox.app() as app:
        await sandbox.seed_organization(app)
        first = await launch_to_meeting(sandbox, app, "appt-4", "s")
        assert first.location is not None
        sandbox.entra.sign_in_as(CLINICIAN_OID)
        signin = sandbox.entra.authorize_in_browser(first.location)
        with pytest.raises(StateInvalidError):  # the sign-in is bound to the browser session
            await app.visits.binding.complete_microsoft_signin(signin, session_id="other")
        assert await app.store.get_identity(ORG, sandbox.ehr.base_url, "practitioner-1") is None
        assert (
            await app.visits.binding.organizer_of(ORG, sandbox.ehr.base_url, "practitioner-1")
            is None
        )

        # A Microsoft sign-in started without an EHR launch session cannot bind.
        with pytest.raises(IdentityBindingError):
            await IdentityBinder(app.store, app.clock).bind(
                ORG,
                sandbox.ehr.base_url,
                "practitioner-9",
                MicrosoftIdentity(tenant_id=TENANT_ID, object_id=CLINICIAN_OID),
                organization_tenant_id=TENANT_ID,
                launch_session_valid=False,
            )
