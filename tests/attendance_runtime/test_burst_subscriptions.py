"""A clinic-opening burst loses no attendance: every started visit gets its subscription (issue 11,
requirements D1, P3).

N concurrent provider launches through one runtime against the sandbox fakes, on a store made
slow on purpose (every write transaction, or every statement on PostgreSQL, waits a little while
it holds the database), with FakeGraph validating each new subscription through the webhook
within its window as Graph does (docs: *Receive change notifications through webhooks*,
validation request; the window is scaled down with the load). Before the fix, the handshake's
per-second rows queued behind the burst's writes, Graph's validation found nothing pending and
the visit was left without attendance. Now: meetings == subscriptions == N, each validated, each
stored once, no setup pending or abandoned.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from teams_ehr.app import TeamsEhr
from teams_ehr.config import AttendanceSettings
from teams_ehr.store.postgres import PostgresStore
from teams_ehr.store.protocol import IdentityLink
from teams_ehr.store.sqlite import SqliteStore
from teams_ehr.testing.sandbox import TENANT_ID, Sandbox

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
ORG = "sandbox-clinic"
LAUNCHES = 200
HANDSHAKE_SECONDS = 1.0
"""FakeGraph's window for the validation echo (Graph's is 10 s; scaled down with the burst)."""
WRITE_DELAY = 0.001
"""Seconds each SQLite write transaction holds the database (its one writer)."""
STATEMENT_DELAY = 0.003
"""Seconds each PostgreSQL statement holds its pooled connection (ten of them)."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # psycopg's async connections; SqliteStore's worker threads


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'burst.sqlite3'}"
    else:
        yield request.getfixturevalue("postgres_dsn")


def slow_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every write holds the database longer (a slow disk, a busy server)."""
    transaction = SqliteStore._transaction

    def slow_transaction(conn: Any, run: Any, *, durable: bool) -> Any:
        time.sleep(WRITE_DELAY)  # in the store's worker thread, under its limiter
        return transaction(conn, run, durable=durable)

    monkeypatch.setattr(SqliteStore, "_transaction", staticmethod(slow_transaction))
    run = PostgresStore._run

    async def slow_run(self: PostgresStore, cur: Any, stmts: Any) -> list[Any]:
        await anyio.sleep(STATEMENT_DELAY * len(stmts))  # holding the pooled connection
        return await run(self, cur, stmts)

    monkeypatch.setattr(PostgresStore, "_run", slow_run)


async def prepare(sandbox: Sandbox, app: TeamsEhr, count: int) -> None:
    """The organization, ``count`` appointments and as many practitioners bound to Microsoft
    identities (no sign-in hop: every launch goes straight to its own meeting)."""
    await sandbox.seed_organization(app, org_id=ORG)
    for index in range(count):
        sandbox.seed_appointment(f"appt-{index}")
        await app.store.bind_identity(
            IdentityLink(
                org_id=ORG,
                ehr_issuer=sandbox.ehr.base_url,
                ehr_user_id=f"practitioner-{index}",
                tenant_id=TENANT_ID,
                object_id=str(uuid.UUID(int=index + 1, version=4)),
                linked_at=sandbox.clock(),
            )
        )


async def launch(sandbox: Sandbox, app: TeamsEhr, index: int) -> None:
    """One provider launch: begin, the EHR's authorize (the browser), callback, 303 to Teams."""
    session = f"browser-{index}"
    params = {
        "iss": sandbox.ehr.base_url,
        "launch": sandbox.provider_launch(f"appt-{index}", user=f"practitioner-{index}"),
    }
    started = await app.visits.provider.begin_launch(ORG, "test", params, session_id=session)
    assert started.location is not None
    redirect = SimpleNamespace(method="GET", url=started.location, fields=())
    callback = sandbox.ehr.authorize_in_browser(redirect)
    done = await app.visits.callback.complete(callback, session_id=session)
    assert done.status == 303
    assert (done.location or "").startswith("https://teams.microsoft.com/")


async def test_burst_every_visit_gets_one_validated_subscription(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    attendance = AttendanceSettings(workers=True, poll_interval=timedelta(milliseconds=50))
    sandbox = Sandbox(store_url=store_url, attendance=attendance)
    sandbox.graph.subscriptions.handshake_timeout = HANDSHAKE_SECONDS
    failures: list[str] = []
    async with sandbox.app() as app:
        await prepare(sandbox, app, LAUNCHES)
        runtime = app.attendance
        assert runtime is not None
        # a failed attempt (a validation that timed out) comes back within a second or two
        runtime.setups.retry_first = timedelta(milliseconds=200)
        runtime.setups.retry_max = timedelta(seconds=2)
        slow_store(monkeypatch)

        async def one(index: int) -> None:
            try:
                await launch(sandbox, app, index)
            except Exception as exc:  # counted: every launch must succeed
                failures.append(f"{index}: {type(exc).__name__}")

        async with anyio.create_task_group() as group:
            for index in range(LAUNCHES):
                group.start_soon(one, index)
        setups = await runtime.settle_subscriptions(timeout=300)
        stored = await app.store.list_subscriptions_expiring(sandbox.clock() + timedelta(days=9))
        meetings = [await app.store.find_meeting_by_id(m) for m in sandbox.graph.meetings]

    assert failures == []
    assert len(sandbox.graph.meetings) == LAUNCHES
    created = list(sandbox.graph.subscriptions.items.values())
    assert len(created) == LAUNCHES
    assert all(sub.validated for sub in created)
    assert len({sub.resource for sub in created}) == LAUNCHES  # one per meeting
    visits = {(m.org_id, m.external_id) for m in meetings if m is not None}
    assert len(visits) == LAUNCHES
    assert {(row.org_id, row.external_id) for row in stored} == visits
    assert len(stored) == LAUNCHES
    assert {row.subscription_id for row in stored} == {sub.id for sub in created}
    assert setups == {"pending": 0, "leased": 0, "done": LAUNCHES, "abandoned": 0, "retrying": 0}
