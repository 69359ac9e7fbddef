"""Two instances on one PostgreSQL store (SPEC C6): the launch and Graph's webhook on one, the
clinician's roster stream on the other (LISTEN/NOTIFY), the outbox delivered by the second."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from runtime_support import (
    GROUND_TRUTH,
    ORG,
    T0,
    Clock,
    attendance_settings,
    launch_visit,
    open_host,
    play_visit,
    sse,
    stored_facts,
)

from teams_ehr.testing.sandbox import Sandbox

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


@pytest.fixture
def anyio_backend() -> str:
    """psycopg's async connections run on asyncio only."""
    return "asyncio"


async def test_webhook_on_one_instance_roster_on_another(tmp_path: Path, postgres_dsn: str) -> None:
    clock = Clock()
    sandbox = Sandbox(clock=clock, store_url=postgres_dsn, attendance=attendance_settings(tmp_path))
    async with open_host(sandbox) as first, open_host(sandbox, webhooks=False) as second:
        await sandbox.seed_organization(first.runtime)
        sandbox.seed_appointment("appt-rt-1", start=T0, minutes=30)
        meeting = await launch_visit(first, sandbox)
        [subscription] = sandbox.graph.subscriptions.items.values()
        assert subscription.validated

        path = f"/visits/{ORG}/{meeting.external_id}/roster"
        async with sse(second.asgi, path, first.session_cookie()) as stream:
            assert await stream.start() == 200
            assert (await stream.event())[0] == "snapshot"
            start = clock()
            play_visit(sandbox, clock, meeting.meeting_id)
            assert {s.status for s in await sandbox.notifier.flush()} == {202}
            await first.attendance.processor.run_once()
            frames = [await stream.event() for _ in range(8)]
        assert [(data["role"], data["kind"]) for _, data in frames] == [
            (role, kind) for kind, role, _ in GROUND_TRUTH
        ]

        clock.advance(minutes=16)
        await second.attendance.maintain()
        await second.attendance.drain()
        assert await stored_facts(second.runtime, meeting.external_id, start) == sorted(
            GROUND_TRUTH
        )
    [note] = sandbox.fhir.resources("DocumentReference")
    text = base64.b64decode(note["content"][0]["attachment"]["data"]).decode()
    assert "Patient waited in the lobby: 4 min 0 s" in text
