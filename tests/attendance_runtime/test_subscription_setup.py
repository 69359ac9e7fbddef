"""The durable subscription setup (issue 11, requirement D1): a Graph failure is retried with
backoff until it succeeds; a visit that ends first stops the retries, is counted and alerted, and
is reconciled from its attendance report; ``teams-ehr outbox setups`` / ``status`` and the metrics
show both; a setup taken over after its lease ran out leaves one subscription. SQLite and
PostgreSQL."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from runtime_support import T0, Clock, attendance_settings, launch_visit, open_host, play_visit

from teams_ehr import metrics
from teams_ehr.attendance.subscriptions import SETUP_LEASE, SubscriptionSetupWorker
from teams_ehr.cli import main
from teams_ehr.store.crypto import FieldCipher, new_encryption_key
from teams_ehr.store.protocol import MeetingRow, SubscriptionRow
from teams_ehr.store.sqlite import SqliteStore
from teams_ehr.testing.sandbox import Sandbox

pytestmark = pytest.mark.anyio
SUBSCRIBE = ("/subscriptions", 403)  # "no application access policy": not retried by the client


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'teams-ehr.sqlite3'}"
    else:
        yield request.getfixturevalue("postgres_dsn")


@pytest.fixture
def no_env_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """CLI settings come only from the file: drop TEAMS_EHR__* variables of the environment."""
    for name in [n for n in os.environ if n.startswith("TEAMS_EHR__")]:
        monkeypatch.delenv(name)


async def cli(
    sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str], *argv: str
) -> str:
    """What ``teams-ehr *argv`` prints against the sandbox's store (it must exit 0); in a
    thread, as the command runs its own event loop."""
    settings = sandbox.settings
    config = tmp_path / "settings.toml"
    config.write_text(
        f'app_base_url = "{settings.app_base_url}"\n'
        f'store_url = "{settings.store_url}"\n'
        f'encryption_key = "{settings.encryption_key.get_secret_value()}"\n'
        f'external_id_key = "{settings.external_id_key.get_secret_value()}"\n'
        f'[microsoft]\nclient_id = "{settings.microsoft.client_id}"\n',
        encoding="utf-8",
    )
    capsys.readouterr()
    assert await anyio.to_thread.run_sync(main, [*argv, "--config", str(config)]) == 0
    return capsys.readouterr().out


async def test_graph_failure_is_retried_until_success(store_url: str, tmp_path: Path) -> None:
    clock = Clock()
    attendance = attendance_settings(tmp_path)  # no background loops: the test steps them
    sandbox = Sandbox(clock=clock, store_url=store_url, attendance=attendance)
    retries = metrics.DEFAULT.subscription_setups.value(outcome="retry")
    async with open_host(sandbox) as host:
        await sandbox.seed_organization(host.runtime)
        sandbox.seed_appointment("appt-rt-1", start=T0, minutes=30)
        sandbox.graph.fail_next(*SUBSCRIBE, method="POST", times=3)
        meeting = await launch_visit(host, sandbox)  # the launch itself succeeds
        assert not sandbox.graph.subscriptions.items
        counts = await host.runtime.store.subscription_setup_counts()
        assert (counts["pending"], counts["retrying"], counts["done"]) == (1, 1, 0)
        report = await host.attendance.setup_subscriptions()
        assert report.leased == 0  # backing off: not due yet
        for attempt in (2, 3, 4):
            clock.advance(seconds=2 ** (attempt - 1))  # the longest backoff of that attempt
            report = await host.attendance.setup_subscriptions()
            assert (report.leased, report.done) == (1, int(attempt == 4))
        [created] = sandbox.graph.subscriptions.items.values()
        assert created.validated
        stored = await host.runtime.store.list_subscriptions_expiring(clock() + timedelta(days=9))
        assert [(row.external_id, row.subscription_id) for row in stored] == [
            (meeting.external_id, created.id)
        ]
        counts = await host.runtime.store.subscription_setup_counts()
        assert counts == {"pending": 0, "leased": 0, "done": 1, "abandoned": 0, "retrying": 0}
        await launch_visit(host, sandbox)  # a repeat launch does not subscribe again
        await host.attendance.drain()
        assert len(sandbox.graph.subscriptions.items) == 1
    assert metrics.DEFAULT.subscription_setups.value(outcome="retry") == retries + 3


async def test_a_visit_ended_before_success_stops_retrying(
    tmp_path: Path,
    no_env_settings: None,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="teams_ehr")
    clock = Clock()
    url = f"sqlite:///{tmp_path / 'teams-ehr.sqlite3'}"
    sandbox = Sandbox(clock=clock, store_url=url, attendance=attendance_settings(tmp_path))
    abandoned = metrics.DEFAULT.subscription_setups.value(outcome="abandoned")
    async with open_host(sandbox) as host:
        await sandbox.seed_organization(host.runtime, writer="audit_event")
        sandbox.seed_appointment("appt-rt-1", start=T0, minutes=30)
        sandbox.graph.fail_next(*SUBSCRIBE, method="POST", times=1000)
        meeting = await launch_visit(host, sandbox)
        clock.advance(minutes=5)
        assert (await host.attendance.setup_subscriptions()).retried == 1
        play_visit(sandbox, clock, meeting.meeting_id)  # nobody is notified of it

        counts = json.loads(await cli(sandbox, tmp_path, capsys, "outbox", "setups", "--json"))
        assert (counts["pending"], counts["retrying"], counts["abandoned"]) == (1, 1, 0)

        clock.advance(minutes=40)  # the scheduled end + reconcile_delay: the visit is over
        report = await host.attendance.setup_subscriptions()
        assert (report.leased, report.abandoned, report.retried) == (1, 1, 0)
        clock.advance(hours=1)
        assert (await host.attendance.setup_subscriptions()).leased == 0  # never again
        await host.attendance.drain()
        assert not sandbox.graph.subscriptions.items
        # …but its attendance report was reconciled: joins and leaves are written back
        facts = await host.runtime.store.list_facts(meeting.org_id, meeting.external_id)
        assert sorted((f.kind, f.role) for f in facts) == [
            ("call_ended", "other"),
            ("call_started", "other"),
            ("connected", "patient"),
            ("connected", "provider"),
            ("disconnected", "patient"),
            ("disconnected", "provider"),
        ]
        assert len(sandbox.fhir.resources("AuditEvent")) == 4  # the joins and leaves
        counts = await host.runtime.store.subscription_setup_counts()
        assert counts == {"pending": 0, "leased": 0, "done": 0, "abandoned": 1, "retrying": 0}
        exposition = await metrics.exposition(host.runtime.store)
        assert 'teams_ehr_subscription_setup_depth{state="abandoned"} 1' in exposition
        assert 'teams_ehr_subscription_setup_depth{state="pending"} 0' in exposition

        table = await cli(sandbox, tmp_path, capsys, "outbox", "status")
        assert "SUBSCRIPTION SETUP" in table
        assert "abandoned           1" in table
    assert metrics.DEFAULT.subscription_setups.value(outcome="abandoned") == abandoned + 1
    alerts = [r for r in caplog.records if getattr(r, "alert", "") == "attendance_setup_abandoned"]
    assert len(alerts) == 1
    assert "visit_ended" in alerts[0].getMessage()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert meeting.join_url not in logged
    assert meeting.external_id not in logged


async def test_a_setup_taken_over_after_its_lease_leaves_one_subscription(
    tmp_path: Path,
) -> None:
    clock = Clock()
    key = new_encryption_key()
    path = str(tmp_path / "shared.sqlite3")
    meeting = MeetingRow("org-a", "visit-1", "oid", "m-1", "https://join/1", T0, T0, "active")
    discarded: list[str] = []
    slow_started, release = anyio.Event(), anyio.Event()

    async def never_over(row: MeetingRow, now: object) -> bool:
        return False

    async def discard(row: SubscriptionRow) -> None:
        discarded.append(row.subscription_id)

    def creator(name: str, *, slow: bool) -> object:
        async def create(row: MeetingRow) -> SubscriptionRow:
            if slow:
                slow_started.set()
                await release.wait()
            return SubscriptionRow(f"sub-{name}", row.org_id, row.external_id, "cs", T0, "active")

        return create

    async with (
        SqliteStore(path, cipher=FieldCipher(key), clock=clock) as a,
        SqliteStore(path, cipher=FieldCipher(key), clock=clock) as b,
    ):
        await a.put_meeting(meeting)
        workers = {
            name: SubscriptionSetupWorker(
                store,
                create=creator(name, slow=name == "a"),  # type: ignore[arg-type]
                discard=discard,
                visit_over=never_over,
                worker_id=name,
                clock=clock,
            )
            for name, store in (("a", a), ("b", b))
        }
        assert await workers["a"].request(meeting)
        assert not await workers["b"].request(meeting)  # one row per meeting
        async with anyio.create_task_group() as group:
            group.start_soon(workers["a"].run_once)
            await slow_started.wait()
            assert (await workers["b"].run_once()).leased == 0  # leased by a
            clock.now += SETUP_LEASE
            assert (await workers["b"].run_once()).done == 1
            release.set()
        assert discarded == ["sub-a"]
        assert await a.get_subscription("sub-a") is None
        assert await a.get_subscription("sub-b") is not None
        counts = await b.subscription_setup_counts()
        assert (counts["done"], counts["pending"], counts["leased"]) == (1, 0, 0)


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    worker = SubscriptionSetupWorker(
        None,  # type: ignore[arg-type]
        create=None,  # type: ignore[arg-type]
        discard=None,  # type: ignore[arg-type]
        visit_over=None,  # type: ignore[arg-type]
        worker_id="w",
    )
    for attempts, base in ((1, 2), (2, 4), (3, 8), (8, 256), (9, 300), (10_000, 300)):
        waits = {worker.backoff(attempts).total_seconds() for _ in range(50)}
        assert all(base * 0.8 <= wait <= base for wait in waits), (attempts, waits)
        assert len(waits) > 1  # jittered


async def test_a_meeting_whose_launch_died_before_queueing_is_swept_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    url = f"sqlite:///{tmp_path / 'teams-ehr.sqlite3'}"
    sandbox = Sandbox(clock=clock, store_url=url, attendance=attendance_settings(tmp_path))
    async with open_host(sandbox) as host:
        await sandbox.seed_organization(host.runtime)
        sandbox.seed_appointment("appt-rt-1", start=T0, minutes=30)

        async def died(meeting: MeetingRow) -> bool:  # the meeting is stored, the queue not
            return False

        monkeypatch.setattr(host.attendance.setups, "request", died)
        meeting = await launch_visit(host, sandbox)
        monkeypatch.undo()
        await host.attendance.drain()
        assert not sandbox.graph.subscriptions.items
        await host.attendance.maintain()  # what a restarted (or any other) instance runs
        await host.attendance.drain()
        [created] = sandbox.graph.subscriptions.items.values()
        stored = await host.runtime.store.list_subscriptions_expiring(clock() + timedelta(days=9))
        assert [(r.external_id, r.subscription_id) for r in stored] == [
            (meeting.external_id, created.id)
        ]
        await host.attendance.maintain()  # subscribed now: nothing more to sweep
        await host.attendance.drain()
        assert len(sandbox.graph.subscriptions.items) == 1
