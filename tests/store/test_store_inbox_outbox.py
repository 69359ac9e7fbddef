"""Contract: durable inbox and outbox with leases (D1, D5; security.md §3.2 I1–I6, R06, R07, R16)."""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest
from store_helpers import FakeClock, raw

from teams_ehr.errors import StorageError
from teams_ehr.store._base import SqlStore, Stmt
from teams_ehr.store._sql import INBOX_INSERT
from teams_ehr.store.protocol import InboxItem, OutboxItem

pytestmark = pytest.mark.anyio


def inbox(clock: FakeClock, key: str, org: str = "org-a") -> InboxItem:
    return InboxItem(org, key, f"payload-{org}-{key}".encode(), clock())


def outbox(clock: FakeClock, key: str, org: str = "org-a", delay: float = 0) -> OutboxItem:
    due = clock() + timedelta(seconds=delay)
    return OutboxItem(org, key, "fhir.audit_event", f"fact-{key}".encode(), due, clock())


async def test_inbox_batch_dedupes_and_counts_new(store: SqlStore, clock: FakeClock) -> None:
    batch = [inbox(clock, "n1"), inbox(clock, "n2"), inbox(clock, "n1")]
    assert await store.append_inbox(batch) == 2
    assert await store.append_inbox([inbox(clock, "n2"), inbox(clock, "n3")]) == 1
    assert await store.append_inbox([inbox(clock, "n1", org="org-b")]) == 1
    assert await store.append_inbox([]) == 0
    assert len(await raw(store, "SELECT item_id FROM inbox")) == 4


async def test_inbox_claim_lease_complete(store: SqlStore, clock: FakeClock) -> None:
    await store.append_inbox([inbox(clock, f"n{i}") for i in range(5)])
    lease = clock() + timedelta(seconds=30)
    first = await store.claim_inbox(worker="w1", limit=3, now=clock(), lease_until=lease)
    assert [i.dedupe_key for i in first] == ["n0", "n1", "n2"]
    assert first[0].payload == b"payload-org-a-n0"
    assert all(i.item_id is not None for i in first)
    second = await store.claim_inbox(worker="w2", limit=10, now=clock(), lease_until=lease)
    assert [i.dedupe_key for i in second] == ["n3", "n4"]
    assert await store.claim_inbox(worker="w3", limit=10, now=clock(), lease_until=lease) == []
    await store.complete_inbox([i.item_id or 0 for i in first], worker="w2")  # not its lease
    clock.advance(30)  # at lease_until the lease has expired
    later = clock() + timedelta(seconds=30)
    back = await store.claim_inbox(worker="w3", limit=10, now=clock(), lease_until=later)
    assert [i.dedupe_key for i in back] == ["n0", "n1", "n2", "n3", "n4"]
    await store.complete_inbox([i.item_id or 0 for i in first], worker="w1")  # lease lost
    await store.complete_inbox([i.item_id or 0 for i in back[:3]], worker="w3")
    clock.advance(30)
    rest = await store.claim_inbox(worker="w4", limit=10, now=clock(), lease_until=later)
    assert [i.dedupe_key for i in rest] == ["n3", "n4"]
    purged = await raw(store, "SELECT payload FROM inbox WHERE processed_at IS NOT NULL")
    assert purged == [(None,)] * 3  # processed items drop their payload


async def test_inbox_append_is_one_transaction(store: SqlStore, clock: FakeClock) -> None:
    rows = [("org-a", "n1", b"sealed", store._enc(clock()))]
    with pytest.raises(StorageError):
        await store._tx([Stmt(INBOX_INSERT, rows, "many"), Stmt("INSERT INTO no_such_table")])
    assert await raw(store, "SELECT item_id FROM inbox") == []


async def test_outbox_enqueue_dedupes(store: SqlStore, clock: FakeClock) -> None:
    assert await store.enqueue_outbox([outbox(clock, "k1"), outbox(clock, "k1")]) == 1
    assert await store.enqueue_outbox([outbox(clock, "k1"), outbox(clock, "k2")]) == 1
    assert await store.enqueue_outbox([outbox(clock, "k1", org="org-b")]) == 1
    counts = await store.outbox_counts()
    assert counts == {"pending": 3, "leased": 0, "delivered": 0, "dead": 0}


async def test_outbox_leases_only_due_items(store: SqlStore, clock: FakeClock) -> None:
    await store.enqueue_outbox([outbox(clock, "later", delay=60), outbox(clock, "now")])
    lease = clock() + timedelta(minutes=5)
    leased = await store.lease_outbox(worker="w1", limit=10, now=clock(), lease_until=lease)
    assert [(i.idempotency_key, i.attempts, i.payload) for i in leased] == [("now", 1, b"fact-now")]
    assert await store.lease_outbox(worker="w2", limit=10, now=clock(), lease_until=lease) == []
    clock.advance(60)
    leased = await store.lease_outbox(worker="w2", limit=10, now=clock(), lease_until=lease)
    assert [i.idempotency_key for i in leased] == ["later"]


async def test_mark_fails_after_lease_lost(store: SqlStore, clock: FakeClock) -> None:
    await store.enqueue_outbox([outbox(clock, "k1")])
    short = clock() + timedelta(seconds=30)
    (mine,) = await store.lease_outbox(worker="w1", limit=1, now=clock(), lease_until=short)
    clock.advance(29)
    assert await store.lease_outbox(worker="w2", limit=1, now=clock(), lease_until=short) == []
    clock.advance(1)  # at lease_until the lease has expired
    later = clock() + timedelta(seconds=30)
    (theirs,) = await store.lease_outbox(worker="w2", limit=1, now=clock(), lease_until=later)
    assert theirs.item_id == mine.item_id
    assert theirs.attempts == 2
    item_id = mine.item_id or 0
    assert await store.mark_delivered(item_id, worker="w1") is False
    assert await store.mark_retry(item_id, worker="w1", not_before=clock(), reason="x") is False
    assert await store.mark_dead(item_id, worker="w1", reason="x") is False
    assert await store.mark_delivered(item_id, worker="w2") is True
    assert await store.mark_delivered(item_id, worker="w2") is False


async def test_delivered_purges_payload(store: SqlStore, clock: FakeClock) -> None:
    await store.enqueue_outbox([outbox(clock, "k1")])
    lease = clock() + timedelta(seconds=30)
    (item,) = await store.lease_outbox(worker="w", limit=5, now=clock(), lease_until=lease)
    assert await store.mark_delivered(item.item_id or 0, worker="w")
    rows = await raw(store, "SELECT state, payload FROM outbox")
    assert rows == [("delivered", None)]
    assert await store.outbox_counts() == {"pending": 0, "leased": 0, "delivered": 1, "dead": 0}


async def test_retry_dead_letter_requeue(store: SqlStore, clock: FakeClock) -> None:
    await store.enqueue_outbox([outbox(clock, "k1"), outbox(clock, "k2", org="org-b")])
    lease = clock() + timedelta(seconds=30)
    a, b = await store.lease_outbox(worker="w", limit=5, now=clock(), lease_until=lease)
    retry_at = clock() + timedelta(seconds=120)
    assert await store.mark_retry(a.item_id or 0, worker="w", not_before=retry_at, reason="503")
    assert await store.mark_dead(b.item_id or 0, worker="w", reason="fhir_422")
    assert await store.lease_outbox(worker="w", limit=5, now=clock(), lease_until=lease) == []
    assert await store.outbox_counts() == {"pending": 1, "leased": 0, "delivered": 0, "dead": 1}
    (dead,) = await store.list_dead()
    assert (dead.org_id, dead.last_reason, dead.payload) == ("org-b", "fhir_422", b"fact-k2")
    assert await store.list_dead("org-a") == []
    assert [d.idempotency_key for d in await store.list_dead("org-b")] == ["k2"]
    assert await store.requeue_dead(a.item_id or 0, now=clock()) is False  # not dead
    assert await store.requeue_dead(dead.item_id or 0, now=clock()) is True
    assert await store.requeue_dead(dead.item_id or 0, now=clock()) is False
    clock.advance(120)
    again = await store.lease_outbox(worker="w", limit=5, now=clock(), lease_until=lease)
    assert sorted((i.idempotency_key, i.attempts) for i in again) == [("k1", 2), ("k2", 1)]
    assert next(i for i in again if i.idempotency_key == "k1").last_reason == "503"


async def test_two_workers_never_lease_one_row(
    store: SqlStore, other_instance: SqlStore, clock: FakeClock
) -> None:
    total = 120
    await store.enqueue_outbox([outbox(clock, f"k{n}") for n in range(total)])
    leased: dict[str, list[int]] = {"w1": [], "w2": []}
    lease = clock() + timedelta(minutes=5)

    async def work(target: SqlStore, name: str) -> None:
        while batch := await target.lease_outbox(
            worker=name, limit=7, now=clock(), lease_until=lease
        ):
            for item in batch:
                leased[name].append(item.item_id or 0)
                assert await target.mark_delivered(item.item_id or 0, worker=name)
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(work, store, "w1")
        tg.start_soon(work, other_instance, "w2")
    both = leased["w1"] + leased["w2"]
    assert len(both) == total
    assert len(set(both)) == total
    assert (await store.outbox_counts())["delivered"] == total


async def test_two_claimers_never_take_one_inbox_item(
    store: SqlStore, other_instance: SqlStore, clock: FakeClock
) -> None:
    await store.append_inbox([inbox(clock, f"n{n}") for n in range(60)])
    seen: list[int] = []
    lease = clock() + timedelta(minutes=5)

    async def work(target: SqlStore, name: str) -> None:
        while batch := await target.claim_inbox(
            worker=name, limit=4, now=clock(), lease_until=lease
        ):
            seen.extend(i.item_id or 0 for i in batch)
            await target.complete_inbox([i.item_id or 0 for i in batch], worker=name)

    async with anyio.create_task_group() as tg:
        for name, target in (("w1", store), ("w2", other_instance), ("w3", store)):
            tg.start_soon(work, target, name)
    assert sorted(seen) == sorted(set(seen))
    assert len(seen) == 60
