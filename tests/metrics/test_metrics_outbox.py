"""SPEC E6: the outbox-depth gauge reads the real store's ``outbox_counts()``."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import pytest

from teams_ehr import metrics
from teams_ehr.metrics import StandardMetrics
from teams_ehr.store.factory import open_store
from teams_ehr.store.protocol import OutboxItem, OutboxState

pytestmark = pytest.mark.anyio


class _Counts:
    def __init__(self, counts: dict[OutboxState, int]) -> None:
        self.counts = counts

    async def outbox_counts(self) -> dict[OutboxState, int]:
        return self.counts


async def test_refresh_sets_every_state_including_zero() -> None:
    std = StandardMetrics()
    await metrics.refresh_outbox_depth(_Counts({"pending": 4, "dead": 1}), metrics=std)
    values = {labels["state"]: value for labels, value in std.outbox_depth.samples()}
    assert values == {"pending": 4.0, "leased": 0.0, "delivered": 0.0, "dead": 1.0}
    await metrics.refresh_outbox_depth(_Counts({"pending": 0, "delivered": 5}), metrics=std)
    text = metrics.render_prometheus(std)
    assert 'teams_ehr_outbox_depth{state="pending"} 0' in text
    assert 'teams_ehr_outbox_depth{state="delivered"} 5' in text


def clock() -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC)


async def test_refresh_from_an_sqlite_store() -> None:
    key = secrets.token_bytes(32)
    async with open_store("sqlite://:memory:", encryption_key=key, clock=clock) as store:
        await store.migrate()
        now = clock()
        items = [OutboxItem("org-a", f"k{n}", "fhir", b"p", now, now) for n in range(3)]
        await store.enqueue_outbox(items)
        (leased,) = await store.lease_outbox(worker="w", limit=1, now=now, lease_until=now)
        assert leased.item_id is not None
        await store.mark_dead(leased.item_id, worker="w", reason="fhir_refused")
        std = StandardMetrics()
        await metrics.refresh_outbox_depth(store, metrics=std)
        values = {labels["state"]: value for labels, value in std.outbox_depth.samples()}
        assert values == {"pending": 2.0, "leased": 0.0, "delivered": 0.0, "dead": 1.0}


async def test_exposition_refreshes_the_gauge_then_renders() -> None:
    std = StandardMetrics()
    metrics.record_dead_letter(metrics=std)
    text = await metrics.exposition(_Counts({"dead": 2}), metrics=std)
    assert 'teams_ehr_outbox_depth{state="dead"} 2' in text
    assert "teams_ehr_dead_letters_total 1" in text
    assert await metrics.exposition(metrics=std) == text  # without a store: last values
