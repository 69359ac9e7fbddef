"""A ``launch`` value is single use per (canonical issuer, launch), for a configurable window.

SMART App Launch makes ``launch`` an opaque value of the EHR that issued it: two EHRs (or an
organization's test and production environments) may issue the same one, so replay protection
keyed by the value alone would refuse a legitimate launch from the second EHR (issue 9, finding
7). The window is ``settings.smart.launch_replay_window`` (default one hour).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from clocks import Clock
from teams_ehr.app import TeamsEhr
from teams_ehr.config import TeamsEhrSettings
from teams_ehr.errors import ConfigurationError, LaunchParameterError
from teams_ehr.orgs.approval import ApprovalProof
from teams_ehr.orgs.models import Environment, Organization, config_hash
from teams_ehr.sansio import run_async
from teams_ehr.smart.discovery import DiscoverySnapshot, discovery_flow
from teams_ehr.smart.launch import launch_hash, launch_replay_key
from teams_ehr.teams.identity import MicrosoftIdentity
from teams_ehr.testing.fake_ehr import FakeEhr
from teams_ehr.testing.sandbox import APPROVER_OID, TENANT_ID, Sandbox

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
FIRST, SECOND = "sandbox-clinic", "second-clinic"
SECOND_BASE = "https://ehr-two.test/fhir/r4"
SHARED = "opaque-launch-1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _router(sandbox: Sandbox, second: FakeEhr) -> httpx.AsyncClient:
    host = httpx.URL(SECOND_BASE).host

    async def route(request: httpx.Request) -> httpx.Response:
        if request.url.host == host:
            await request.aread()
            return second.handler(request)
        return await sandbox.route(request)

    return httpx.AsyncClient(transport=httpx.MockTransport(route))


async def _seed_second(app: TeamsEhr, sandbox: Sandbox, second: FakeEhr) -> None:
    config = sandbox.environment_config().model_copy(update={"fhir_base": SECOND_BASE})
    org = Organization(
        org_id=SECOND,
        display_name="Second Clinic",
        tenant_id=TENANT_ID,
        approver_oid=APPROVER_OID,
        test=Environment(config=config),
    )
    org = await app.registry.create(org, actor=APPROVER_OID)
    org = await app.registry.submit_for_approval(SECOND, "test", actor=APPROVER_OID)
    smart = await run_async(discovery_flow(SECOND_BASE), app.http)
    proof = ApprovalProof(
        canonical_base=SECOND_BASE,
        snapshot=DiscoverySnapshot.of(smart),
        id_token_issuer=second.oidc_issuer,
        signed_in_at=sandbox.clock(),
    )
    await app.registry.approve(
        SECOND,
        "test",
        MicrosoftIdentity(tenant_id=TENANT_ID, object_id=APPROVER_OID),
        proof,
        config_hash=config_hash(org, "test"),
    )


async def _begin(app: TeamsEhr, org_id: str, iss: str, launch: str = SHARED) -> str:
    """``"redirect"`` when the launch goes on to the EHR, else the refusal's reason."""
    try:
        started = await app.visits.provider.begin_launch(
            org_id, "test", {"iss": iss, "launch": launch}, session_id="s"
        )
    except LaunchParameterError as exc:
        return exc.reason
    assert started.status == 302
    return "redirect"


def _with_window(settings: TeamsEhrSettings, window: timedelta) -> TeamsEhrSettings:
    smart = settings.smart.model_copy(update={"launch_replay_window": window})
    return settings.model_copy(update={"smart": smart})


async def test_the_same_launch_value_from_two_issuers_is_not_a_replay() -> None:
    clock = Clock(T0)
    sandbox = Sandbox(clock=clock)
    second = FakeEhr(SECOND_BASE, clock=clock)
    async with sandbox.app(http=_router(sandbox, second)) as app:
        await sandbox.seed_organization(app)
        await _seed_second(app, sandbox, second)
        first_base = sandbox.ehr.base_url
        assert await _begin(app, FIRST, first_base) == "redirect"
        # Before: refused as "launch_replayed", keyed by the launch value alone.
        assert await _begin(app, SECOND, SECOND_BASE) == "redirect"
        assert await _begin(app, FIRST, first_base) == "launch_replayed"
        assert await _begin(app, SECOND, SECOND_BASE) == "launch_replayed"


async def test_the_replay_window_comes_from_the_settings() -> None:
    clock = Clock(T0)
    sandbox = Sandbox(clock=clock)
    sandbox.settings = _with_window(sandbox.settings, timedelta(minutes=5))
    async with sandbox.app() as app:
        await sandbox.seed_organization(app)
        base = sandbox.ehr.base_url
        assert await _begin(app, FIRST, base) == "redirect"
        clock.now = T0 + timedelta(minutes=5) - timedelta(microseconds=1)
        assert await _begin(app, FIRST, base) == "launch_replayed"
        clock.now = T0 + timedelta(minutes=5)
        # Before: the runtime's policy kept its own one-hour default whatever the settings said.
        assert await _begin(app, FIRST, base) == "redirect"


def test_the_window_is_bounded_and_defaults_to_an_hour() -> None:
    settings = Sandbox().settings
    assert settings.smart.launch_replay_window == timedelta(hours=1)
    for bad in (timedelta(0), timedelta(days=2)):
        with pytest.raises(ConfigurationError, match="launch_replay_window"):
            TeamsEhrSettings.model_validate(
                {
                    **settings.model_dump(),
                    "smart": {"launch_replay_window": bad},
                    "encryption_key": settings.encryption_key.get_secret_value(),
                    "external_id_key": settings.external_id_key.get_secret_value(),
                }
            )


def test_the_replay_key_binds_the_issuer_and_hides_the_value() -> None:
    one = launch_replay_key("https://a.test/fhir", SHARED)
    assert one == launch_replay_key("https://a.test/fhir", SHARED)
    assert one != launch_replay_key("https://b.test/fhir", SHARED)
    assert one != launch_hash(SHARED)
    assert SHARED not in one
    assert len(one) == 64
