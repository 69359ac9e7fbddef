"""Outbox time rules, at, just before and just after each edge (invariants I2, I4).

docs/security.md#delivery-invariants: a row is due from ``not_before`` inclusive; a row that has
been tried is dead-lettered ``expired`` from ``created_at + max_age`` inclusive, and a retry is
never scheduled past that instant, so the row comes back exactly when it expires. The backoff
waits ``[d/2, d]`` with ``d = min(cap, base·2^attempts)``, never before ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import SecretStr

from clocks import Clock
from teams_ehr.attendance.outbox import Backoff, OrgRoute, OutboxWorker, enqueue_attendance
from teams_ehr.attendance.writers import AuditEventWriter, FhirTarget, WriterStrategy
from teams_ehr.store.crypto import FieldCipher, new_encryption_key
from teams_ehr.store.protocol import AttendanceFactRow
from teams_ehr.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
TICK = timedelta(microseconds=1)
MAX_AGE = timedelta(hours=1)
FHIR_BASE = "https://ehr.test/fhir/r4"
ORG = "org-a"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store() -> AsyncIterator[tuple[SqliteStore, Clock]]:
    clock = Clock(T0)
    cipher = FieldCipher(new_encryption_key())
    async with SqliteStore(":memory:", cipher=cipher, clock=clock) as opened:
        yield opened, clock


async def token(org_id: str, *, force_refresh: bool = False) -> SecretStr:
    return SecretStr("backend-token")


def fhir_down(request: httpx.Request) -> httpx.Response:
    return httpx.Response(503)


async def enqueue_one(store: SqliteStore, clock: Clock) -> None:
    fact = AttendanceFactRow(ORG, "visit-1", "f" * 64, "connected", "patient", "p-1", T0, None)
    writer = AuditEventWriter(clock=clock)
    target = FhirTarget(encounter="Encounter/enc-1")
    assert await enqueue_attendance(store, [fact], target=target, writers=[writer], now=T0) == 1


def worker(store: SqliteStore, clock: Clock, http: httpx.AsyncClient) -> OutboxWorker:
    writer = AuditEventWriter(clock=clock)

    async def route(org_id: str, strategy: WriterStrategy) -> OrgRoute:
        return OrgRoute(writer, FHIR_BASE)

    backoff = Backoff(jitter=lambda: 1.0)
    return OutboxWorker(store, route, token, http, clock=clock, backoff=backoff, max_age=MAX_AGE)


async def reasons(store: SqliteStore) -> tuple[dict[str, int], list[str | None]]:
    counts = {str(state): n for state, n in (await store.outbox_counts()).items() if n}
    return counts, [item.last_reason for item in await store.list_dead()]


async def test_a_tried_row_expires_exactly_at_max_age(store: tuple[SqliteStore, Clock]) -> None:
    sqlite, clock = store
    await enqueue_one(sqlite, clock)
    async with httpx.AsyncClient(transport=httpx.MockTransport(fhir_down)) as http:
        outbox = worker(sqlite, clock, http)
        assert await outbox.run_once() == 1  # attempt 1 at T0: 503, retried in 5 s
        expires = T0 + MAX_AGE
        clock.now = expires - TICK
        assert await outbox.run_once() == 1  # attempt 2, still young: tried, not expired
        assert await reasons(sqlite) == ({"pending": 1}, [])
        assert outbox.stats.retried == 2
        # the retry would wait 10 s; it is clamped to the expiry instant instead
        assert await outbox.run_once() == 0  # not due one tick before the expiry instant
        clock.now = expires
        assert await outbox.run_once() == 1
        assert await reasons(sqlite) == ({"dead": 1}, ["expired"])


async def test_an_old_row_never_tried_gets_one_attempt(store: tuple[SqliteStore, Clock]) -> None:
    sqlite, clock = store
    await enqueue_one(sqlite, clock)
    async with httpx.AsyncClient(transport=httpx.MockTransport(fhir_down)) as http:
        outbox = worker(sqlite, clock, http)
        clock.now = T0 + MAX_AGE + TICK  # a worker outage longer than max_age
        assert await outbox.run_once() == 1
        assert await reasons(sqlite) == ({"pending": 1}, [])  # tried once, due again at once
        assert await outbox.run_once() == 1
        assert await reasons(sqlite) == ({"dead": 1}, ["expired"])


async def test_a_retry_is_due_from_its_not_before(store: tuple[SqliteStore, Clock]) -> None:
    sqlite, clock = store
    await enqueue_one(sqlite, clock)
    async with httpx.AsyncClient(transport=httpx.MockTransport(fhir_down)) as http:
        outbox = worker(sqlite, clock, http)
        clock.now = T0 - TICK
        assert await outbox.run_once() == 0  # enqueued due at T0
        clock.now = T0
        assert await outbox.run_once() == 1
        due = T0 + Backoff().base  # attempt 1, jitter 1.0: d = base·2^0
        for now, leased in ((due - TICK, 0), (due, 1)):
            clock.now = now
            assert await outbox.run_once() == leased
        assert await sqlite.list_dead() == []


# -- backoff (pure) ----------------------------------------------------------------------------


def test_backoff_jitter_bounds() -> None:
    base = timedelta(seconds=5)
    for attempts, d in ((0, base), (1, 2 * base), (3, 8 * base)):
        assert Backoff(jitter=lambda: 0.0).next_at(attempts, T0) == T0 + d / 2
        assert Backoff(jitter=lambda: 1.0).next_at(attempts, T0) == T0 + d
        assert Backoff(jitter=lambda: -0.5).next_at(attempts, T0) == T0 + d / 2
        assert Backoff(jitter=lambda: 1.5).next_at(attempts, T0) == T0 + d


def test_backoff_cap_edge() -> None:
    # base·2^a meets cap exactly at a = 3 for base 75 s, cap 600 s
    backoff = Backoff(base=timedelta(seconds=75), cap=timedelta(seconds=600), jitter=lambda: 1.0)
    assert backoff.next_at(2, T0) == T0 + timedelta(seconds=300)
    assert backoff.next_at(3, T0) == T0 + timedelta(seconds=600)
    assert backoff.next_at(4, T0) == T0 + timedelta(seconds=600)
    assert backoff.next_at(10_000, T0) == T0 + timedelta(seconds=600)


def test_backoff_never_before_retry_after() -> None:
    backoff = Backoff(jitter=lambda: 1.0)
    at = T0 + timedelta(seconds=5)
    assert backoff.next_at(0, T0, at - TICK) == at
    assert backoff.next_at(0, T0, at) == at
    assert backoff.next_at(0, T0, at + TICK) == at + TICK
