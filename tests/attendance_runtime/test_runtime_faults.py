"""The same visit survives a FHIR outage, duplicated and reordered notifications, and crashes of
the workers between steps (fresh TeamsEhr on the same SQLite file); forged or cross-tenant
notifications change nothing (SPEC D1, D5; security.md §3.2 I3–I5)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from runtime_support import (
    GROUND_TRUTH,
    ORG,
    PATIENT_NAME,
    T0,
    Clock,
    attendance_settings,
    launch_visit,
    open_host,
    stored_facts,
)

from teams_ehr.testing.sandbox import Sandbox

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Crash(BaseException):
    """The process dies (not an error the worker could handle)."""


def make_sandbox(tmp_path: Path, clock: Clock) -> Sandbox:
    return Sandbox(
        clock=clock,
        store_url=f"sqlite:///{tmp_path}/teams-ehr.sqlite3",
        attendance=attendance_settings(tmp_path),
    )


@pytest.mark.parametrize("writer", ["epic_clinical_note", "audit_event"])
async def test_outage_duplicates_reordering_and_restarts(tmp_path: Path, writer: str) -> None:
    clock = Clock()
    sandbox = make_sandbox(tmp_path, clock)
    async with open_host(sandbox) as first:
        await sandbox.seed_organization(first.runtime, writer=writer)
        sandbox.seed_appointment("appt-rt-1", start=T0, minutes=30)
        meeting = await launch_visit(first, sandbox)
        room = sandbox.graph.room(meeting.meeting_id)
        start = clock()
        room.join("leg-doc", identity="organizer")
        clock.advance(minutes=1)
        room.join("leg-pt", identity="guest", display_name=PATIENT_NAME)
        clock.advance(minutes=4)
        room.admit("leg-pt")
        sandbox.notifier.duplicate_next(2)
        assert {s.status for s in await sandbox.notifier.flush()} == {202}
        await sandbox.notifier.redeliver_last()
    # crash: the inbox holds unprocessed notifications; a fresh instance opens the same file

    async with open_host(sandbox) as second:
        await second.attendance.processor.run_once()
        sandbox.fhir.outage(clock() + timedelta(minutes=10), retry_after=120)
        await second.attendance.outbox.run_once()
        assert sandbox.fhir.resources("AuditEvent") == []
        clock.advance(minutes=15)
        room.leave("leg-pt")
        clock.advance(minutes=1)
        room.end_call()
        sandbox.notifier.reorder()
        sandbox.notifier.duplicate_next(1)
        assert {s.status for s in await sandbox.notifier.flush()} == {202}
        await second.attendance.processor.run_once()
        clock.advance(minutes=16)  # the outage is over, the call ended long enough ago
        await second.attendance.maintain()

        def die(point: str) -> None:
            if point == "after_fhir_2xx_before_mark":
                raise Crash(point)

        second.attendance.outbox.crash_hook = die
        with pytest.raises((Crash, BaseExceptionGroup)) as crashed:  # the Crash, or a group of it
            await second.attendance.outbox.run_once()
        dead = crashed.value
        found = dead if isinstance(dead, Crash) else dead.subgroup(Crash)
        assert found is not None
        assert "after_fhir_2xx_before_mark" in repr(found)

    clock.advance(minutes=3)  # the dead worker's leases expire
    async with open_host(sandbox) as third:
        await third.attendance.drain()
        counts = await third.runtime.store.outbox_counts()
        assert (counts["pending"], counts["leased"], counts["dead"]) == (0, 0, 0)
        assert await stored_facts(third.runtime, meeting.external_id, start) == sorted(GROUND_TRUTH)
        facts = await third.runtime.store.list_facts(ORG, meeting.external_id)

    if writer == "audit_event":
        tags = sorted(r["meta"]["tag"][0]["code"] for r in sandbox.fhir.resources("AuditEvent"))
        expected = sorted(f.fact_key for f in facts if f.kind in ("connected", "disconnected"))
        assert tags == expected  # one each: the write repeated after the crash found it
    else:
        [note] = sandbox.fhir.resources("DocumentReference")
        assert note["context"]["encounter"] == [{"reference": "Encounter/encounter-1"}]


@pytest.mark.parametrize(
    "forgery", ["bad_client_state", "bad_hmac", "wrong_tenant", "forged_token", "wrong_appid"]
)
async def test_forged_or_cross_tenant_notifications_change_nothing(
    tmp_path: Path, forgery: str
) -> None:
    clock = Clock()
    sandbox = make_sandbox(tmp_path, clock)
    async with open_host(sandbox) as host:
        await sandbox.seed_organization(host.runtime, writer="audit_event")
        sandbox.seed_appointment("appt-rt-1", start=T0, minutes=30)
        meeting = await launch_visit(host, sandbox)
        room = sandbox.graph.room(meeting.meeting_id)
        sandbox.notifier.forge_next(forgery)  # type: ignore[arg-type]
        room.join("leg-doc", identity="organizer")  # call_started (forged), connected (genuine)
        assert [s.status for s in await sandbox.notifier.flush()] == [202, 202]
        junk = await host.browser.post(
            "/graph/notifications", content=json.dumps({"value": [{"x": 1}]})
        )
        assert junk.status_code in (202, 400)
        await host.attendance.drain()
        facts = await host.runtime.store.list_facts(ORG, meeting.external_id)
        assert [f.kind for f in facts] == ["connected"]
        assert len(sandbox.fhir.resources("AuditEvent")) == 1


async def test_handshake_refused_without_pending_subscription(tmp_path: Path) -> None:
    sandbox = make_sandbox(tmp_path, Clock())
    async with open_host(sandbox) as host:
        for path in ("/graph/notifications", "/graph/lifecycle"):
            reply = await host.browser.post(path, params={"validationToken": "someone-else"})
            assert reply.status_code == 404
            assert b"someone-else" not in reply.content
