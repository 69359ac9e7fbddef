"""Contract: pending authorizations, replay cache, rate counters (A3, A4, A10, C4)."""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest
from store_helpers import FakeClock, raw

from teams_ehr.errors import StorageConflictError, UsageError
from teams_ehr.store import _common
from teams_ehr.store._base import SqlStore

pytestmark = pytest.mark.anyio


async def test_take_pending_is_single_use(store: SqlStore, clock: FakeClock) -> None:
    until = clock() + timedelta(minutes=10)
    await store.put_pending("h-state", org_id="org-a", payload=b"verifier", expires_at=until)
    with pytest.raises(StorageConflictError):
        await store.put_pending("h-state", org_id="org-b", payload=b"x", expires_at=until)
    assert await store.take_pending("h-state", now=clock()) == ("org-a", b"verifier")
    assert await store.take_pending("h-state", now=clock()) is None
    assert await store.take_pending("h-unknown", now=clock()) is None


async def test_expired_pending_returns_none_and_is_removed(
    store: SqlStore, clock: FakeClock
) -> None:
    await store.put_pending(
        "h-old", org_id="org-a", payload=b"v", expires_at=clock() + timedelta(minutes=10)
    )
    assert await store.take_pending("h-old", now=clock() + timedelta(minutes=10)) is None
    assert await raw(store, "SELECT state_key FROM pending_authorizations") == []


async def test_fifty_concurrent_takers_exactly_one_wins(
    store: SqlStore, other_instance: SqlStore, clock: FakeClock
) -> None:
    until = clock() + timedelta(minutes=5)
    await store.put_pending("h-race", org_id="org-a", payload=b"v", expires_at=until)
    results: list[object] = []

    async def take(target: SqlStore) -> None:
        results.append(await target.take_pending("h-race", now=clock()))

    async with anyio.create_task_group() as tg:
        for n in range(50):
            tg.start_soon(take, store if n % 2 else other_instance)
    assert [r for r in results if r is not None] == [("org-a", b"v")]
    assert results.count(None) == 49


async def test_expired_pending_rows_are_swept(store: SqlStore, clock: FakeClock) -> None:
    soon = clock() + timedelta(seconds=1)
    await store.put_pending("h-stale", org_id="org-a", payload=b"v", expires_at=soon)
    clock.advance(60)
    later = clock() + timedelta(minutes=10)
    await store.put_pending("h-fresh", org_id="org-a", payload=b"v", expires_at=later)
    store._writes = _common.PURGE_EVERY - 1  # the next write is a sweeping one
    await store.put_pending("h-next", org_id="org-a", payload=b"v", expires_at=later)
    keys = {r[0] for r in await raw(store, "SELECT state_key FROM pending_authorizations")}
    assert keys == {"h-fresh", "h-next"}


async def test_remember_once(store: SqlStore, clock: FakeClock) -> None:
    until = clock() + timedelta(minutes=5)
    assert await store.remember_once("jti", "h1", expires_at=until) is True
    assert await store.remember_once("jti", "h1", expires_at=until) is False
    assert await store.remember_once("launch", "h1", expires_at=until) is True
    clock.advance(299)
    assert (
        await store.remember_once("jti", "h1", expires_at=clock() + timedelta(minutes=5)) is False
    )
    clock.advance(1)  # expired at expires_at: the key may be used again
    assert await store.remember_once("jti", "h1", expires_at=clock() + timedelta(minutes=5))


async def test_remember_once_concurrent_single_winner(
    store: SqlStore, other_instance: SqlStore, clock: FakeClock
) -> None:
    wins: list[bool] = []
    until = clock() + timedelta(minutes=5)

    async def remember(target: SqlStore) -> None:
        wins.append(await target.remember_once("ctx", "h-link", expires_at=until))

    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(remember, store if n % 2 else other_instance)
    assert sorted(wins) == [False] * 19 + [True]


async def test_expired_nonces_are_swept(store: SqlStore, clock: FakeClock) -> None:
    await store.remember_once("jti", "old", expires_at=clock() + timedelta(seconds=1))
    clock.advance(10)
    await store.remember_once("jti", "k1", expires_at=clock() + timedelta(minutes=5))
    assert len(await raw(store, "SELECT nonce_key FROM nonces")) == 2
    store._writes = _common.PURGE_EVERY - 1  # the next write is a sweeping one
    await store.remember_once("jti", "k2", expires_at=clock() + timedelta(minutes=5))
    keys = {r[0] for r in await raw(store, "SELECT nonce_key FROM nonces")}
    assert keys == {"k1", "k2"}


async def test_count_hit_per_bucket_and_window(store: SqlStore, clock: FakeClock) -> None:
    w1 = clock()
    assert [await store.count_hit("join:ip1", window_start=w1) for _ in range(3)] == [1, 2, 3]
    assert await store.count_hit("join:ip2", window_start=w1) == 1
    w2 = w1 + timedelta(minutes=1)
    assert await store.count_hit("join:ip1", window_start=w2) == 1
    rows = await raw(store, "SELECT bucket FROM rate_counters WHERE bucket = ?", ("join:ip1",))
    assert len(rows) == 1  # the previous window of the bucket is dropped


async def test_count_hit_concurrent_is_exact(
    store: SqlStore, other_instance: SqlStore, clock: FakeClock
) -> None:
    seen: list[int] = []

    async def hit(target: SqlStore) -> None:
        seen.append(await target.count_hit("b", window_start=clock()))

    async with anyio.create_task_group() as tg:
        for n in range(30):
            tg.start_soon(hit, store if n % 2 else other_instance)
    assert sorted(seen) == list(range(1, 31))


async def test_naive_datetimes_are_refused(store: SqlStore, clock: FakeClock) -> None:
    naive = clock().replace(tzinfo=None)
    with pytest.raises(UsageError) as err:
        await store.put_pending("k", org_id="org-a", payload=b"", expires_at=naive)
    assert err.value.reason == "naive_datetime"
    with pytest.raises(UsageError):
        await store.remember_once("", "k", expires_at=clock())


async def test_day_old_rate_counters_are_swept(store: SqlStore, clock: FakeClock) -> None:
    await store.count_hit("join:ip-old", window_start=clock())
    clock.advance(2 * 86400)
    store._writes = _common.PURGE_EVERY - 1  # the next write is a sweeping one
    await store.count_hit("join:ip-new", window_start=clock())
    buckets = {r[0] for r in await raw(store, "SELECT bucket FROM rate_counters")}
    assert buckets == {"join:ip-new"}
