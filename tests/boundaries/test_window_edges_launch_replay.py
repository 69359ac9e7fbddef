"""The ``launch`` replay window, at, just before and just after its edge (threat T06).

SMART App Launch's ``launch`` value is single use for ``VisitPolicy.launch_replay_window`` after
its first use: :meth:`EhrLaunch.begin <teams_ehr.visits.launch.EhrLaunch.begin>` remembers its
hash in the store's nonce table until ``first use + window``, and a remembered nonce is gone at
its expiry instant (``expires_at <= now``), so the window is ``[first use, first use + window)``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from clocks import Clock
from teams_ehr.app import TeamsEhr
from teams_ehr.errors import LaunchParameterError
from teams_ehr.testing.sandbox import Sandbox
from teams_ehr.visits.launch import EhrLaunch
from teams_ehr.visits.policy import VisitPolicy

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
TICK = timedelta(microseconds=1)
ORG = "sandbox-clinic"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def begin(launcher: EhrLaunch, sandbox: Sandbox, launch: str) -> str:
    """``"redirect"`` when the launch goes on to the EHR, else the refusal's reason."""
    params = {"iss": sandbox.ehr.base_url, "launch": launch}
    try:
        started = await launcher.begin(ORG, "test", params, session_id="s", role="provider")
    except LaunchParameterError as exc:
        return exc.reason
    assert started.status == 302
    return "redirect"


async def check_window(app: TeamsEhr, sandbox: Sandbox, clock: Clock, policy: VisitPolicy) -> None:
    launcher = EhrLaunch(
        store=app.store, registry=app.registry, services=app.services, policy=policy, clock=clock
    )
    window = policy.launch_replay_window
    first, second = sandbox.provider_launch("appt-1"), sandbox.provider_launch("appt-1")
    clock.now = T0
    assert await begin(launcher, sandbox, first) == "redirect"
    assert await begin(launcher, sandbox, second) == "redirect"
    clock.now = T0 + TICK
    assert await begin(launcher, sandbox, first) == "launch_replayed"
    clock.now = T0 + window - TICK
    assert await begin(launcher, sandbox, first) == "launch_replayed"
    clock.now = T0 + window
    assert await begin(launcher, sandbox, first) == "redirect"  # forgotten at the edge ...
    assert await begin(launcher, sandbox, first) == "launch_replayed"  # ... and remembered anew
    clock.now = T0 + window + TICK
    assert await begin(launcher, sandbox, second) == "redirect"


@pytest.mark.parametrize(
    "window", [VisitPolicy().launch_replay_window, timedelta(minutes=5), timedelta(seconds=1)]
)
async def test_replay_window_edge(window: timedelta) -> None:
    clock = Clock(T0)
    sandbox = Sandbox(clock=clock)
    sandbox.seed_appointment("appt-1")
    async with sandbox.app() as app:
        await sandbox.seed_organization(app)
        await check_window(app, sandbox, clock, VisitPolicy(launch_replay_window=window))


async def test_the_hosted_launch_uses_the_default_hour() -> None:
    assert VisitPolicy().launch_replay_window == timedelta(hours=1)
    clock = Clock(T0)
    sandbox = Sandbox(clock=clock)
    sandbox.seed_appointment("appt-1")
    async with sandbox.app() as app:
        await sandbox.seed_organization(app)
        launch = sandbox.provider_launch("appt-1")
        params = {"iss": sandbox.ehr.base_url, "launch": launch}
        provider = app.visits.provider
        assert (await provider.begin_launch(ORG, "test", params, session_id="s")).status == 302
        clock.now = T0 + timedelta(hours=1) - TICK
        with pytest.raises(LaunchParameterError) as refused:
            await provider.begin_launch(ORG, "test", params, session_id="s")
        assert refused.value.reason == "launch_replayed"
        clock.now = T0 + timedelta(hours=1)
        assert (await provider.begin_launch(ORG, "test", params, session_id="s")).status == 302
