"""Retention purge windows, at, just before and just after each edge (invariant I6).

``Store.purge_expired`` deletes processed inbox rows, delivered and dead outbox rows *older* than
their keep (a row exactly ``keep`` old stays), and launch state and nonces expired at ``now``
(``expires_at <= now``, the instant ``take_pending`` and ``remember_once`` stop seeing them). Each
kind gets a different keep, so a purge that used another kind's keep would show here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from clocks import Clock
from teams_ehr.store.crypto import FieldCipher, new_encryption_key
from teams_ehr.store.postgres import PostgresStore
from teams_ehr.store.protocol import InboxItem, OutboxItem
from teams_ehr.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
TICK = timedelta(microseconds=1)
KEEP = {"inbox": timedelta(hours=4), "outbox_delivered": timedelta(hours=1)}
KEEP["outbox_dead"] = timedelta(hours=72)
TTL = timedelta(minutes=10)  # pending authorizations and nonces


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # psycopg's async pool runs on asyncio


@pytest.fixture(params=["sqlite", "postgres"])
async def seeded(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, Clock]]:
    """One row of each kind, processed / delivered / dead-lettered / created at ``T0``."""
    clock = Clock(T0)
    cipher = FieldCipher(new_encryption_key())
    if request.param == "sqlite":
        store: Any = SqliteStore(":memory:", cipher=cipher, clock=clock)
    else:
        store = PostgresStore(request.getfixturevalue("postgres_dsn"), cipher=cipher, clock=clock)
    async with store:
        await store.append_inbox([InboxItem("org-a", "dedupe-1", b"{}", T0)])
        [claimed] = await store.claim_inbox(worker="w", limit=1, now=T0, lease_until=T0 + TTL)
        await store.complete_inbox([claimed.item_id], worker="w")
        rows = [OutboxItem("org-a", f"key-{n}", "audit_event", b"{}", T0, T0) for n in (1, 2)]
        await store.enqueue_outbox(rows)
        first, second = await store.lease_outbox(worker="w", limit=2, now=T0, lease_until=T0 + TTL)
        assert await store.mark_delivered(first.item_id, worker="w")
        assert await store.mark_dead(second.item_id, worker="w", reason="fhir_bad_request")
        await store.put_pending("state-1", org_id="org-a", payload=b"p", expires_at=T0 + TTL)
        assert await store.remember_once("launch", "hash-1", expires_at=T0 + TTL)
        yield store, clock


async def purgeable(store: Any, clock: Clock, now: datetime) -> dict[str, int]:
    clock.now = now
    counts = await store.purge_expired(
        now=now,
        inbox_keep=KEEP["inbox"],
        outbox_keep=KEEP["outbox_delivered"],
        dead_keep=KEEP["outbox_dead"],
        dry_run=True,
    )
    return {kind: n for kind, n in counts.items() if n}


@pytest.mark.parametrize("kind", sorted(KEEP))
async def test_keep_windows(seeded: tuple[Any, Clock], kind: str) -> None:
    store, clock = seeded
    edge = T0 + KEEP[kind]
    assert kind not in await purgeable(store, clock, edge - TICK)
    assert kind not in await purgeable(store, clock, edge)  # exactly ``keep`` old: stays
    assert (await purgeable(store, clock, edge + TICK)).get(kind) == 1


async def test_expired_launch_state_and_nonces(seeded: tuple[Any, Clock]) -> None:
    store, clock = seeded
    edge = T0 + TTL
    assert await purgeable(store, clock, edge - TICK) == {}
    assert await purgeable(store, clock, edge) == {"pending_authorizations": 1, "nonces": 1}
    assert await purgeable(store, clock, edge + TICK) == {"pending_authorizations": 1, "nonces": 1}


async def test_a_real_purge_deletes_at_the_same_edges(seeded: tuple[Any, Clock]) -> None:
    store, clock = seeded
    keeps = {"inbox_keep": KEEP["inbox"], "outbox_keep": KEEP["outbox_delivered"]}
    keeps["dead_keep"] = KEEP["outbox_dead"]
    clock.now = T0 + KEEP["outbox_delivered"]
    counts = await store.purge_expired(now=clock.now, **keeps)
    assert {k: n for k, n in counts.items() if n} == {"pending_authorizations": 1, "nonces": 1}
    clock.now += TICK
    counts = await store.purge_expired(now=clock.now, **keeps)
    assert {k: n for k, n in counts.items() if n} == {"outbox_delivered": 1}
    assert (await store.outbox_counts())["dead"] == 1
