"""Lifecycle, renewal, background workers and settings of the attendance runtime (SPEC D1, D6)."""

from __future__ import annotations

import base64
import secrets
from datetime import timedelta
from pathlib import Path

import anyio
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
    stored_facts,
)

from teams_ehr.attendance.runtime import load_certificate
from teams_ehr.config import load_settings
from teams_ehr.errors import ConfigurationError
from teams_ehr.testing.sandbox import PRACTITIONER, Sandbox

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_sandbox(tmp_path: Path, clock: Clock, **overrides: object) -> Sandbox:
    return Sandbox(
        clock=clock,
        store_url=f"sqlite:///{tmp_path}/teams-ehr.sqlite3",
        attendance=attendance_settings(tmp_path, **overrides),
    )


async def test_renewal_at_two_thirds_and_lifecycle_events(tmp_path: Path) -> None:
    clock = Clock()
    sandbox = make_sandbox(tmp_path, clock)
    async with open_host(sandbox) as host:
        await sandbox.seed_organization(host.runtime)
        sandbox.seed_appointment("appt-rt-1", start=T0, minutes=30)
        meeting = await launch_visit(host, sandbox)
        again = await launch_visit(host, sandbox)  # a repeat launch does not subscribe again
        assert again == meeting
        [subscription] = list(sandbox.graph.subscriptions.items.values())
        first_expiry = subscription.expiration

        room = sandbox.graph.room(meeting.meeting_id)
        room.join("leg-doc", identity="organizer")  # in the call past the slot: not "over"
        await sandbox.notifier.flush()
        await host.attendance.processor.run_once()
        lifetime = host.attendance.manager(sandbox.graph.tenant_id).lifetime

        clock.advance(hours=1)  # not yet at 2/3 of the lifetime
        await host.attendance.maintain()
        assert subscription.expiration == first_expiry
        clock.advance(days=2)
        await host.attendance.maintain()
        assert subscription.expiration == clock() + lifetime

        clock.advance(minutes=5)
        reply = await sandbox.notifier.send_lifecycle(subscription.id, "reauthorizationRequired")
        assert reply.status == 202
        await host.attendance.processor.run_once()
        assert subscription.expiration == clock() + lifetime

        await sandbox.notifier.send_lifecycle(subscription.id, "subscriptionRemoved")
        await host.attendance.processor.run_once()
        [renewed] = sandbox.graph.subscriptions.items.values()
        assert renewed.id != subscription.id
        assert renewed.validated  # the new handshake went through the Starlette route too


async def test_missed_notifications_are_filled_from_the_report(tmp_path: Path) -> None:
    clock = Clock()
    sandbox = make_sandbox(tmp_path, clock)
    async with open_host(sandbox) as host:
        await sandbox.seed_organization(host.runtime, writer="audit_event")
        sandbox.seed_appointment("appt-rt-1", start=T0, minutes=30)
        meeting = await launch_visit(host, sandbox)
        start = clock()
        play_visit(sandbox, clock, meeting.meeting_id)
        sandbox.notifier.drop_next(7)  # Graph lost every notification
        await sandbox.notifier.flush()
        [subscription] = sandbox.graph.subscriptions.items.values()
        await sandbox.notifier.send_lifecycle(subscription.id, "missed")
        await host.attendance.drain()
        facts = await stored_facts(host.runtime, meeting.external_id, start)
        # the report knows joins and leaves, not the lobby
        lobby = ("lobby_entered", "admitted")
        assert facts == sorted(g for g in GROUND_TRUTH if g[0] not in lobby)
        assert len(sandbox.fhir.resources("AuditEvent")) == 4

        clock.advance(minutes=40)  # the scheduled end + reconcile_delay: final reconciliation
        await host.attendance.maintain()
        await host.attendance.drain()
        assert len(sandbox.fhir.resources("AuditEvent")) == 4  # nothing counted twice


async def test_background_workers_deliver_and_stop_cleanly(tmp_path: Path) -> None:
    clock = Clock()
    sandbox = make_sandbox(tmp_path, clock, workers=True, poll_interval=timedelta(milliseconds=20))
    async with open_host(sandbox) as host:
        await sandbox.seed_organization(host.runtime, writer="audit_event")
        sandbox.seed_appointment("appt-rt-1", start=T0, minutes=30)
        meeting = await launch_visit(host, sandbox)
        # the background loop subscribes, off the launch's path
        with anyio.fail_after(60):
            while not sandbox.graph.subscriptions.items:
                await anyio.sleep(0.01)
        sandbox.graph.room(meeting.meeting_id).join("leg-doc", identity="organizer")
        await sandbox.notifier.flush()
        with anyio.fail_after(60):
            while not sandbox.fhir.resources("AuditEvent"):
                await anyio.sleep(0.01)
    assert len(sandbox.fhir.resources("AuditEvent")) == 1


def test_settings_from_environment(tmp_path: Path) -> None:
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    environ = {
        "TEAMS_EHR__APP_BASE_URL": "https://app.example",
        "TEAMS_EHR__ENCRYPTION_KEY": key,
        "TEAMS_EHR__EXTERNAL_ID_KEY": key,
        "TEAMS_EHR__MICROSOFT__CLIENT_ID": "app",
        "TEAMS_EHR__ATTENDANCE__WORKERS": "false",
        "TEAMS_EHR__ATTENDANCE__RECONCILE_DELAY": "PT30M",
        "TEAMS_EHR__ATTENDANCE__PARTICIPANT_KEY": key,
    }
    settings = load_settings(environ=environ)
    assert settings.attendance.workers is False
    assert settings.attendance.reconcile_delay == timedelta(minutes=30)
    assert key not in repr(settings)

    half = {**environ, "TEAMS_EHR__ATTENDANCE__CERTIFICATE_PATH": str(tmp_path / "c.pem")}
    with pytest.raises(ConfigurationError):
        load_certificate(load_settings(environ=half), lambda: T0)
    files = attendance_settings(tmp_path)
    both = {
        **environ,
        "TEAMS_EHR__ATTENDANCE__CERTIFICATE_PATH": str(files.certificate_path),
        "TEAMS_EHR__ATTENDANCE__CERTIFICATE_KEY_PATH": str(files.certificate_key_path),
    }
    first = load_certificate(load_settings(environ=both), lambda: T0)
    assert (
        first.certificate_id
        == load_certificate(load_settings(environ=both), lambda: T0).certificate_id
    )
    assert ORG  # the organization id used by the other tests


async def test_zero_reconcile_delay_writes_the_note_when_the_call_ends(tmp_path: Path) -> None:
    clock = Clock()
    sandbox = make_sandbox(tmp_path, clock, reconcile_delay=timedelta(0))
    async with open_host(sandbox) as host:
        await sandbox.seed_organization(host.runtime)
        sandbox.seed_appointment("appt-rt-1", start=T0, minutes=30)
        meeting = await launch_visit(host, sandbox)
        play_visit(sandbox, clock, meeting.meeting_id)
        await sandbox.notifier.flush()
        await host.attendance.drain()  # no maintenance run, no clock advance
        [note] = sandbox.fhir.resources("DocumentReference")
        text = base64.b64decode(note["content"][0]["attachment"]["data"]).decode()
        assert "Patient waited in the lobby: 4 min 0 s" in text


async def test_visit_prepared_without_a_launch(tmp_path: Path) -> None:
    """A visit prepared ahead (no browser session, no launch context): the target comes from
    an ``Encounter/…`` visit key, and nobody holds a roster grant."""
    clock = Clock()
    sandbox = make_sandbox(tmp_path, clock)
    async with open_host(sandbox) as host:
        await sandbox.seed_organization(host.runtime, writer="audit_event")
        await sandbox.seed_clinician(host.runtime)
        await host.runtime.visits.meetings.prepare_visit(
            ORG,
            environment="test",
            visit_key="Encounter/enc-9",
            ehr_user_id=PRACTITIONER,
            start=T0,
            end=T0 + timedelta(minutes=30),
        )
        [meeting_id] = list(sandbox.graph.meetings)
        meeting = await host.runtime.store.find_meeting_by_id(meeting_id)
        assert meeting is not None
        target = await host.attendance.visits.target_for(ORG, meeting.external_id)
        assert target is not None
        assert target.encounter == "Encounter/enc-9"
        assert sandbox.graph.subscriptions.items  # subscribed all the same
        reply = await host.browser.get(f"/visits/{ORG}/{meeting.external_id}/roster")
        assert reply.status_code == 403
