"""Contract: bounded retention purge (C5, D5; security.md §3.2 I1 dedupe window, I6 purge).

``purge_expired`` deletes processed inbox rows, delivered and dead outbox rows past their windows,
and expired pending authorizations and nonces; in-flight rows and every other table stay.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from store_helpers import FakeClock, raw

from teams_ehr.errors import UsageError
from teams_ehr.store import _common
from teams_ehr.store._base import SqlStore
from teams_ehr.store.protocol import AttendanceFactRow, InboxItem, OutboxItem

pytestmark = pytest.mark.anyio

HOUR = 3600
DAY = timedelta(days=1)
KEEP = {"inbox_keep": DAY, "outbox_keep": DAY, "dead_keep": 3 * DAY}


def inbox(clock: FakeClock, key: str) -> InboxItem:
    return InboxItem("org-a", key, f"payload-{key}".encode(), clock())


def outbox(clock: FakeClock, key: str) -> OutboxItem:
    return OutboxItem("org-a", key, "fhir.audit_event", f"fact-{key}".encode(), clock(), clock())


async def process_inbox(store: SqlStore, clock: FakeClock, keys: list[str]) -> None:
    """Append and complete ``keys`` now (``processed_at`` = the store clock)."""
    await store.append_inbox([inbox(clock, k) for k in keys])
    lease = clock() + timedelta(minutes=1)
    claimed = await store.claim_inbox(worker="w", limit=100, now=clock(), lease_until=lease)
    await store.complete_inbox([i.item_id or 0 for i in claimed], worker="w")


async def finish_outbox(store: SqlStore, clock: FakeClock, keys: list[str], *, dead: bool) -> None:
    """Enqueue ``keys`` and deliver (or dead-letter) them now."""
    await store.enqueue_outbox([outbox(clock, k) for k in keys])
    lease = clock() + timedelta(minutes=1)
    for item in await store.lease_outbox(worker="w", limit=100, now=clock(), lease_until=lease):
        if dead:
            assert await store.mark_dead(item.item_id or 0, worker="w", reason="fhir_rejected")
        else:
            assert await store.mark_delivered(item.item_id or 0, worker="w")


async def keys_of(store: SqlStore, table: str, column: str) -> set[str]:
    return {str(r[0]) for r in await raw(store, f"SELECT {column} FROM {table}")}


async def test_old_rows_go_new_and_in_flight_rows_stay(store: SqlStore, clock: FakeClock) -> None:
    await process_inbox(store, clock, ["old-done"])
    await finish_outbox(store, clock, ["old-delivered"], dead=False)
    await finish_outbox(store, clock, ["old-dead", "old-dead-requeued"], dead=True)
    await store.put_pending("p-expired", org_id="org-a", payload=b"v", expires_at=clock())
    await store.remember_once("grant", "n-expired", expires_at=clock())
    await store.record_facts(
        [AttendanceFactRow("org-a", "m1", "f1", "connected", "patient", "pk", clock())]
    )
    await store.append_audit("org-a", at=clock(), actor="a", action="x", detail={})
    # In flight, as old as the others: leased inbox and outbox rows, a pending outbox row.
    t0, lease = clock(), clock() + timedelta(days=10)
    await store.append_inbox([inbox(clock, "old-leased")])
    assert len(await store.claim_inbox(worker="slow", limit=9, now=t0, lease_until=lease)) == 1
    await store.enqueue_outbox([outbox(clock, "old-leased")])
    assert len(await store.lease_outbox(worker="slow", limit=9, now=t0, lease_until=lease)) == 1
    later = OutboxItem("org-a", "old-pending", "fhir.audit_event", b"f", t0 + 9 * DAY, t0)
    await store.enqueue_outbox([later])
    dead = {i.idempotency_key: i.item_id or 0 for i in await store.list_dead()}

    clock.advance(2 * 24 * HOUR)  # past the inbox and delivered windows, inside the dead one
    assert await store.requeue_dead(dead["old-dead-requeued"], now=clock())
    await process_inbox(store, clock, ["new-done"])
    await finish_outbox(store, clock, ["new-delivered", "old-dead-requeued"], dead=False)
    await store.put_pending("p-live", org_id="org-a", payload=b"v", expires_at=clock() + DAY)
    await store.remember_once("grant", "n-live", expires_at=clock() + DAY)
    await store.append_inbox([InboxItem("org-a", "old-unclaimed", b"p", t0)])  # received long ago

    counts = await store.purge_expired(now=clock(), **KEEP)
    assert counts == {
        "inbox": 1,
        "outbox_delivered": 1,
        "outbox_dead": 0,
        "pending_authorizations": 1,
        "nonces": 1,
    }
    inbox_left = {"new-done", "old-unclaimed", "old-leased"}
    assert await keys_of(store, "inbox", "dedupe_key") == inbox_left
    outbox_left = {"new-delivered", "old-dead", "old-dead-requeued", "old-pending", "old-leased"}
    assert await keys_of(store, "outbox", "idempotency_key") == outbox_left
    assert await keys_of(store, "pending_authorizations", "state_key") == {"p-live"}
    assert await keys_of(store, "nonces", "nonce_key") == {"n-live"}

    clock.advance(2 * 24 * HOUR)  # the dead letter is now 4 days dead; the requeued one is not
    counts = await store.purge_expired(now=clock(), **KEEP)
    assert counts["outbox_dead"] == 1
    assert counts["outbox_delivered"] == 2  # new-delivered and the requeued, delivered letter
    assert await keys_of(store, "outbox", "idempotency_key") == {"old-pending", "old-leased"}
    assert await keys_of(store, "inbox", "dedupe_key") == {"old-unclaimed", "old-leased"}
    assert len(await store.list_facts("org-a", "m1")) == 1
    assert len(await store.list_audit("org-a")) == 1
    assert (await store.outbox_counts())["leased"] == 1


async def test_dedupe_holds_inside_the_window(store: SqlStore, clock: FakeClock) -> None:
    await process_inbox(store, clock, ["graph-1"])
    clock.advance(4 * HOUR)  # Graph's longest redelivery
    assert await store.purge_expired(now=clock(), **KEEP) == dict.fromkeys(
        ("inbox", "outbox_delivered", "outbox_dead", "pending_authorizations", "nonces"), 0
    )
    assert await store.append_inbox([inbox(clock, "graph-1")]) == 0  # still a duplicate
    clock.advance(24 * HOUR)
    assert (await store.purge_expired(now=clock(), **KEEP))["inbox"] == 1
    assert await store.append_inbox([inbox(clock, "graph-1")]) == 1  # forgotten after it


async def test_limit_and_batches_respected(
    store: SqlStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_common, "PURGE_BATCH_ROWS", 2)
    await process_inbox(store, clock, [f"n{i}" for i in range(7)])
    for i in range(4):
        await store.remember_once("grant", f"k{i}", expires_at=clock())
    clock.advance(2 * 24 * HOUR)
    counts = await store.purge_expired(now=clock(), limit=5, **KEEP)
    assert (counts["inbox"], counts["nonces"]) == (5, 4)
    assert len(await raw(store, "SELECT item_id FROM inbox")) == 2
    counts = await store.purge_expired(now=clock(), limit=5, **KEEP)
    assert (counts["inbox"], counts["nonces"]) == (2, 0)
    assert await raw(store, "SELECT item_id FROM inbox") == []


async def test_dry_run_counts_and_keeps(store: SqlStore, clock: FakeClock) -> None:
    await process_inbox(store, clock, ["a", "b", "c"])
    await finish_outbox(store, clock, ["d"], dead=False)
    clock.advance(2 * 24 * HOUR)
    counts = await store.purge_expired(now=clock(), limit=2, dry_run=True, **KEEP)
    assert (counts["inbox"], counts["outbox_delivered"]) == (2, 1)
    assert len(await raw(store, "SELECT item_id FROM inbox")) == 3
    assert len(await raw(store, "SELECT item_id FROM outbox")) == 1


async def test_bad_arguments_refused(store: SqlStore, clock: FakeClock) -> None:
    with pytest.raises(UsageError):
        await store.purge_expired(now=clock(), limit=0, **KEEP)
    with pytest.raises(UsageError):
        await store.purge_expired(now=clock(), **{**KEEP, "dead_keep": -DAY})
    with pytest.raises(UsageError):
        await store.purge_expired(now=clock().replace(tzinfo=None), **KEEP)
