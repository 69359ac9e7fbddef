"""The maintenance pass purges what retention allows, at most hourly (SPEC C5, D5; §3.2 I6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from runtime_support import T0, Clock, attendance_settings, launch_visit, open_host, play_visit

from teams_ehr.store._base import SqlStore, Stmt
from teams_ehr.testing.sandbox import Sandbox

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def rows(store: SqlStore, sql: str) -> list[Any]:
    return list((await store._tx([Stmt(sql, (), "all")], write=False))[0])


async def test_maintenance_purges_processed_and_delivered_rows(tmp_path: Path) -> None:
    clock = Clock()
    sandbox = Sandbox(
        clock=clock,
        store_url=f"sqlite:///{tmp_path}/teams-ehr.sqlite3",
        attendance=attendance_settings(tmp_path),
    )
    async with open_host(sandbox) as host:
        store = host.runtime.store
        await sandbox.seed_organization(host.runtime, writer="audit_event")
        sandbox.seed_appointment("appt-rt-1", start=T0, minutes=30)
        meeting = await launch_visit(host, sandbox)
        play_visit(sandbox, clock, meeting.meeting_id)
        await sandbox.notifier.flush()
        await host.attendance.drain()
        clock.advance(minutes=16)  # reconcile_delay after call_ended: the visit is retired
        await host.attendance.maintain()  # the first pass purges: nothing is old yet
        await host.attendance.drain()
        processed = "SELECT dedupe_key FROM inbox WHERE processed_at IS NOT NULL"
        assert len(await rows(store, processed)) == 7
        delivered = (await store.outbox_counts())["delivered"]
        assert delivered >= 4
        facts = await store.list_facts(meeting.org_id, meeting.external_id)

        clock.advance(hours=23, minutes=30)  # delivered rows past 23 h, inbox rows not 24 h
        await host.attendance.maintain()
        assert (await store.outbox_counts())["delivered"] == 0
        assert len(await rows(store, processed)) == 7

        clock.advance(minutes=40)  # inbox rows past 24 h, but the last purge was < 1 h ago
        await host.attendance.maintain()
        assert len(await rows(store, processed)) == 7
        clock.advance(minutes=30)
        await host.attendance.maintain()
        assert await rows(store, "SELECT dedupe_key FROM inbox") == []
        # facts, the meeting and the audit trail have their own lifecycles
        assert await store.list_facts(meeting.org_id, meeting.external_id) == facts
        assert await store.get_meeting(meeting.org_id, meeting.external_id) is not None
