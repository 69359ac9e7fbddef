"""SPEC D1–D7 through the assembled runtime and the Starlette host, on SQLite.

Provider launch → meeting → subscription (FakeGraph validates against our route) → room
activity → GraphNotifier posts → inbox → processor → facts and roster frames on the clinician's
stream → reconciliation after the call → outbox worker → the organization's writer strategy in
the sandbox FHIR store (validated as R4 there)."""

from __future__ import annotations

import base64
import logging
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
    play_visit,
    sse,
    stored_facts,
)

from leaks import assert_no_leak
from teams_ehr.testing.sandbox import Sandbox

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """asyncio: Starlette's streaming response and the SQLite store's worker threads."""
    return "asyncio"


def make_sandbox(tmp_path: Path, clock: Clock, **overrides: object) -> Sandbox:
    return Sandbox(
        clock=clock,
        store_url=f"sqlite:///{tmp_path}/teams-ehr.sqlite3",
        attendance=attendance_settings(tmp_path, **overrides),
    )


@pytest.mark.parametrize("writer", ["epic_clinical_note", "audit_event"])
async def test_visit_end_to_end_through_starlette(
    tmp_path: Path, writer: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = Clock()
    sandbox = make_sandbox(tmp_path, clock)
    async with open_host(sandbox) as host:
        await sandbox.seed_organization(host.runtime, writer=writer)
        sandbox.seed_appointment("appt-rt-1", start=T0, minutes=30)
        meeting = await launch_visit(host, sandbox)

        [subscription] = sandbox.graph.subscriptions.items.values()
        assert subscription.validated  # the handshake went through our Starlette route
        assert subscription.include_resource_data
        assert subscription.notification_url == "https://app.test/graph/notifications"

        path = f"/visits/{ORG}/{meeting.external_id}/roster"
        async with sse(host.asgi, path, host.session_cookie()) as stream:
            assert await stream.start() == 200
            assert await stream.event() == (
                "snapshot",
                {"call": {"kind": None, "at": None}, "participants": []},
            )
            start = clock()
            play_visit(sandbox, clock, meeting.meeting_id)
            sent = await sandbox.notifier.flush()
            assert [s.status for s in sent] == [202] * 7
            report = await host.attendance.processor.run_once()
            assert (report.claimed, report.failed) == (7, 0)
            frames = [await stream.event() for _ in range(8)]
        assert [(name, data["role"], data["kind"]) for name, data in frames] == [
            ("attendance", role, kind) for kind, role, _ in GROUND_TRUTH
        ]
        assert all(set(data) == {"participant", "role", "kind", "at"} for _, data in frames)
        assert await stored_facts(host.runtime, meeting.external_id, start) == sorted(GROUND_TRUTH)

        clock.advance(minutes=16)  # reconcile_delay after call_ended
        await host.attendance.maintain()
        await host.attendance.drain()
        counts = await host.runtime.store.outbox_counts()
        assert counts["dead"] == 0
        assert counts["pending"] == 0
        # the report matched every notified fact: nothing was added
        assert await stored_facts(host.runtime, meeting.external_id, start) == sorted(GROUND_TRUTH)
        assert sandbox.graph.subscriptions.items == {}  # retired once the visit was reconciled

    if writer == "epic_clinical_note":
        [note] = sandbox.fhir.resources("DocumentReference")
        assert note["context"]["encounter"] == [{"reference": "Encounter/encounter-1"}]
        assert note["subject"] == {"reference": "Patient/patient-1"}
        text = base64.b64decode(note["content"][0]["attachment"]["data"]).decode()
        assert "Patient waited in the lobby: 4 min 0 s" in text
        assert sandbox.fhir.resources("AuditEvent") == []
    else:
        events = sandbox.fhir.resources("AuditEvent")
        assert len(events) == 4  # one per connect/disconnect
        assert sandbox.fhir.resources("DocumentReference") == []
    body = "".join(
        str(r) for t in ("DocumentReference", "AuditEvent") for r in sandbox.fhir.resources(t)
    )
    secrets = [PATIENT_NAME, "Dr Canary Clinician", meeting.join_url, "leg-pt", "leg-doc"]
    assert_no_leak(secrets, caplog.text, body, repr(frames))


async def test_roster_refused_for_another_session(tmp_path: Path) -> None:
    clock = Clock()
    sandbox = make_sandbox(tmp_path, clock)
    async with open_host(sandbox) as host:
        await sandbox.seed_organization(host.runtime)
        sandbox.seed_appointment("appt-rt-1", start=T0, minutes=30)
        meeting = await launch_visit(host, sandbox)
        path = f"/visits/{ORG}/{meeting.external_id}/roster"
        stranger = host.session_cookie().split("=")[0] + "=" + "s" * 43
        for cookie, other_path in [
            (stranger, path),  # a session that never launched this visit
            (host.session_cookie(), f"/visits/{ORG}/not-a-visit/roster"),
            (host.session_cookie(), f"/visits/other-org/{meeting.external_id}/roster"),
        ]:
            async with sse(host.asgi, other_path, cookie) as stream:
                assert await stream.start() == 403
                assert b"snapshot" not in await stream.body()
        clock.advance(hours=3)  # the grant ends with the meeting (+ margin)
        async with sse(host.asgi, path, host.session_cookie()) as stream:
            assert await stream.start() == 403
