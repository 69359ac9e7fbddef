"""Contract: migrations and restarts on databases that outlive the process (C5; §3.2 I4, I5)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from store_helpers import FakeClock, StoreMaker, raw

from teams_ehr.store.migrations import MIGRATIONS
from teams_ehr.store.protocol import InboxItem, OutboxItem

pytestmark = pytest.mark.anyio
ENGINES_USED = {"sqlite-file", "postgres"}


async def test_migrate_is_idempotent_across_restarts(maker: StoreMaker) -> None:
    async with maker.make() as first:
        await first.migrate()
    async with maker.make() as second:
        await second.migrate()
        versions = await raw(second, "SELECT version FROM schema_migrations ORDER BY version")
    assert [v for (v,) in versions] == [m.version for m in MIGRATIONS]


async def test_rows_and_leases_survive_restart(maker: StoreMaker, clock: FakeClock) -> None:
    lease = clock() + timedelta(seconds=60)
    async with maker.make() as before:
        await before.append_inbox([InboxItem("org-a", f"n{i}", b"p", clock()) for i in range(3)])
        await before.enqueue_outbox(
            [OutboxItem("org-a", f"k{i}", "fhir", b"f", clock(), clock()) for i in range(3)]
        )
        claimed = await before.claim_inbox(worker="w1", limit=1, now=clock(), lease_until=lease)
        leased = await before.lease_outbox(worker="w1", limit=1, now=clock(), lease_until=lease)
        await before.remember_once("jti", "h", expires_at=lease)
    # the process "crashes" mid-lease; a new instance starts on the same database
    async with maker.make() as after:
        assert await after.remember_once("jti", "h", expires_at=lease) is False
        inbox = await after.claim_inbox(worker="w2", limit=10, now=clock(), lease_until=lease)
        assert [i.dedupe_key for i in inbox] == ["n1", "n2"]
        outbox = await after.lease_outbox(worker="w2", limit=10, now=clock(), lease_until=lease)
        assert [i.idempotency_key for i in outbox] == ["k1", "k2"]
        assert await after.outbox_counts() == {
            "pending": 0,
            "leased": 3,
            "delivered": 0,
            "dead": 0,
        }
        clock.advance(61)  # the dead worker's leases expire and the rows are picked again
        later = clock() + timedelta(seconds=60)
        again = await after.claim_inbox(worker="w2", limit=10, now=clock(), lease_until=later)
        assert {i.dedupe_key for i in again} >= {claimed[0].dedupe_key}
        redo = await after.lease_outbox(worker="w2", limit=10, now=clock(), lease_until=later)
        assert leased[0].item_id in {i.item_id for i in redo}
        assert await after.mark_delivered(leased[0].item_id or 0, worker="w1") is False
