"""The clinician binding's refusals at their edges (T14/T17, docs/security.md;
tests/mutation-report-edges.md): the launch session kept under a 256-bit handle for
``LAUNCH_SESSION_TTL``, a sign-in of another purpose refused, a missing or foreign launch session
refused with ``no_launch_session`` and nothing bound.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from pydantic import SecretStr
from visit_support import ORG, launch_to_meeting

from teams_ehr.app import TeamsEhr
from teams_ehr.errors import IdentityBindingError, StateInvalidError
from teams_ehr.teams.signin import (
    PendingMicrosoftSignin,
    SigninPurpose,
    store_pending_signin,
    take_pending_signin,
)
from teams_ehr.testing.sandbox import CLINICIAN_OID, TENANT_ID, Sandbox
from teams_ehr.visits.binding import LAUNCH_SESSION_TTL
from teams_ehr.visits.records import LaunchSession, launch_session_key

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FixedClock:
    def __init__(self) -> None:
        self.now = datetime.now().astimezone()

    def __call__(self) -> datetime:
        return self.now


async def _signed_in(sandbox: Sandbox, app: TeamsEhr) -> tuple[dict[str, str], str]:
    """A clinician's first launch and Microsoft sign-in, not yet completed: (callback
    parameters, the launch-session handle the pending sign-in names)."""
    first = await launch_to_meeting(sandbox, app, "appt-1", "s")
    assert first.location is not None
    sandbox.entra.sign_in_as(CLINICIAN_OID)
    params = sandbox.entra.authorize_in_browser(first.location)
    org_id, pending = await take_pending_signin(app.store, params, now=app.clock())
    await store_pending_signin(app.store, pending, org_id=org_id)  # put back untouched
    assert org_id == ORG
    assert pending.purpose == "clinician_binding"
    assert pending.bound_launch is not None
    return params, pending.bound_launch


async def test_launch_session_is_kept_under_a_256_bit_handle_for_the_ttl() -> None:
    clock = FixedClock()
    sandbox = Sandbox(clock=clock)
    sandbox.seed_appointment("appt-1")
    async with sandbox.app() as app:
        await sandbox.seed_organization(app)
        _, handle = await _signed_in(sandbox, app)
        assert len(handle) == 43  # secrets.token_urlsafe(32): 32 random bytes
        late = clock.now + LAUNCH_SESSION_TTL
        assert await app.store.take_pending(launch_session_key(handle), now=late) is None
    sandbox = Sandbox(clock=clock)
    sandbox.seed_appointment("appt-1")
    async with sandbox.app() as app:
        await sandbox.seed_organization(app)
        _, handle = await _signed_in(sandbox, app)
        just_in_time = clock.now + LAUNCH_SESSION_TTL - timedelta(microseconds=1)
        taken = await app.store.take_pending(launch_session_key(handle), now=just_in_time)
        assert taken is not None
        assert taken[0] == ORG
        session = LaunchSession.model_validate_json(taken[1])
        assert session.ehr_user_id == "practitioner-1"
        assert session.issuer == sandbox.ehr.base_url


@pytest.mark.parametrize(
    ("purpose", "bound_launch"),
    [("approval", "a-launch-handle"), ("approval", None), ("clinician_binding", None)],
)
async def test_a_signin_not_started_for_a_clinician_launch_is_refused(
    purpose: SigninPurpose, bound_launch: str | None
) -> None:
    sandbox = Sandbox()
    async with sandbox.app() as app:
        await sandbox.seed_organization(app)
        now = app.clock()
        pending = PendingMicrosoftSignin(
            state=SecretStr("s" * 43),
            code_verifier=SecretStr("v" * 43),
            nonce=SecretStr("n" * 43),
            purpose=purpose,
            tenant_id=TENANT_ID,
            session_binding="b",
            bound_launch=bound_launch,
            created_at=now,
            expires_at=now + timedelta(minutes=5),
        )
        await store_pending_signin(app.store, pending, org_id=ORG)
        with pytest.raises(StateInvalidError) as caught:
            await app.visits.binding.complete_microsoft_signin(
                {"state": "s" * 43, "code": "c"}, session_id="s"
            )
    assert caught.value.reason == "purpose"
    assert str(caught.value) == "sign-in was not started for a clinician"


@pytest.mark.parametrize("launch_org", [None, "another-clinic"])
async def test_binding_needs_the_live_launch_session_of_the_same_organization(
    launch_org: str | None,
) -> None:
    sandbox = Sandbox()
    sandbox.seed_appointment("appt-1")
    async with sandbox.app() as app:
        await sandbox.seed_organization(app)
        params, handle = await _signed_in(sandbox, app)
        key = launch_session_key(handle)
        taken = await app.store.take_pending(key, now=app.clock())
        assert taken is not None
        if launch_org is not None:  # the same session, filed under another organization
            await app.store.put_pending(
                key,
                org_id=launch_org,
                payload=taken[1],
                expires_at=app.clock() + timedelta(minutes=5),
            )
        with pytest.raises(IdentityBindingError) as caught:
            await app.visits.binding.complete_microsoft_signin(params, session_id="s")
        assert caught.value.reason == "no_launch_session"
        assert str(caught.value) == "binding needs a live, validated EHR launch session"
        assert await app.store.get_identity(ORG, sandbox.ehr.base_url, "practitioner-1") is None
        assert (
            await app.visits.binding.organizer_of(ORG, sandbox.ehr.base_url, "practitioner-1")
            is None
        )


async def test_repr_names_no_state() -> None:
    sandbox = Sandbox()
    async with sandbox.app() as app:
        assert repr(app.visits.binding) == "<ClinicianBinding>"
