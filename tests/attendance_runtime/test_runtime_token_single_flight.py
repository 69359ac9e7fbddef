"""Concurrent write-backs for one organization share one backend-services token, end to end.

SMART Backend Services (https://hl7.org/fhir/smart-app-launch/backend-services.html) asks a
client to reuse its access token until it expires. tests/smart_tokens proves the token-source
cache on its own; here the whole runtime does it: a visit's facts go through the inbox into the
outbox, one outbox pass delivers them concurrently while the EHR's token endpoint is slow, and
the FakeEhr sees exactly one ``client_credentials`` request.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest
from runtime_support import T0, Clock, attendance_settings, launch_visit, open_host, play_visit

from teams_ehr.testing.sandbox import Sandbox

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def backend_token_requests(sandbox: Sandbox) -> list[httpx.Request]:
    return [r for r in sandbox.ehr.calls("token") if b"client_credentials" in r.content]


async def test_concurrent_deliveries_for_one_org_request_one_token(tmp_path: Path) -> None:
    clock = Clock()
    sandbox = Sandbox(
        clock=clock,
        store_url=f"sqlite:///{tmp_path}/teams-ehr.sqlite3",
        attendance=attendance_settings(tmp_path),
    )
    route = sandbox.route

    async def slow_token_endpoint(request: httpx.Request) -> httpx.Response:
        if request.url == sandbox.ehr.token_url:
            await anyio.sleep(0.05)  # every delivery asks before the first answer comes back
        return await route(request)

    sandbox.route = slow_token_endpoint  # type: ignore[method-assign]
    async with open_host(sandbox) as host:
        await sandbox.seed_organization(host.runtime, writer="audit_event")
        sandbox.seed_appointment("appt-rt-1", start=T0, minutes=30)
        meeting = await launch_visit(host, sandbox)
        play_visit(sandbox, clock, meeting.meeting_id)
        await sandbox.notifier.flush()
        while (await host.attendance.processor.run_once()).claimed:
            pass  # facts → outbox, nothing delivered yet
        pending = (await host.runtime.store.outbox_counts())["pending"]
        assert pending >= 4
        assert backend_token_requests(sandbox) == []

        leased = await host.attendance.outbox.run_once()  # one batch, delivered concurrently

        assert leased == pending
        counts = await host.runtime.store.outbox_counts()
        assert (counts["delivered"], counts["pending"], counts["dead"]) == (pending, 0, 0)
        assert len(backend_token_requests(sandbox)) == 1
