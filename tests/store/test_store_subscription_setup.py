"""Handshake windows and the subscription setup queue, on every engine (requirements D1, C6)."""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest
from store_helpers import FakeClock, raw

from teams_ehr.errors import UsageError
from teams_ehr.store._base import SqlStore
from teams_ehr.store.protocol import MeetingRow, SubscriptionRow

pytestmark = pytest.mark.anyio
MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)


def _row(sub: str, external_id: str, clock: FakeClock, org: str = "org-a") -> SubscriptionRow:
    return SubscriptionRow(sub, org, external_id, f"state-{sub}", clock() + DAY, "active")


# -- handshake windows --------------------------------------------------------------------------


async def test_one_row_per_window_seen_by_another_instance(
    store: SqlStore, other_instance: SqlStore, clock: FakeClock
) -> None:
    until = clock() + timedelta(seconds=10)
    await store.open_handshake("h1", ["notification", "lifecycle"], expires_at=until)
    assert len(await raw(store, "SELECT handshake_id FROM handshakes")) == 1
    for kind in ("notification", "lifecycle"):
        assert await other_instance.handshake_pending(kind, now=until - timedelta(microseconds=1))
        assert not await other_instance.handshake_pending(kind, now=until)
    assert not await other_instance.handshake_pending("notif", now=clock())  # whole words only
    await other_instance.close_handshake("h1")
    assert not await store.handshake_pending("notification", now=clock())
    await store.close_handshake("h1")  # unknown ids are ignored


async def test_windows_are_per_kind_and_overlap(store: SqlStore, clock: FakeClock) -> None:
    await store.open_handshake("a", ["lifecycle"], expires_at=clock() + MINUTE)
    assert not await store.handshake_pending("notification", now=clock())
    await store.open_handshake("b", ["notification"], expires_at=clock() + MINUTE)
    await store.open_handshake("c", ["notification"], expires_at=clock() + MINUTE)
    await store.close_handshake("b")
    assert await store.handshake_pending("notification", now=clock())
    await store.close_handshake("c")
    assert not await store.handshake_pending("notification", now=clock())
    assert await store.handshake_pending("lifecycle", now=clock())


async def test_opening_sweeps_expired_windows(store: SqlStore, clock: FakeClock) -> None:
    for i in range(5):
        await store.open_handshake(f"old-{i}", ["notification"], expires_at=clock() + MINUTE)
    clock.advance(61)
    await store.open_handshake("new", ["notification"], expires_at=clock() + MINUTE)
    assert await raw(store, "SELECT handshake_id FROM handshakes") == [("new",)]


@pytest.mark.parametrize("kinds", [[], ["Notification"], ["no_tif"], ["%"], [""], ["x" * 33]])
async def test_kinds_must_be_plain_words(
    store: SqlStore, clock: FakeClock, kinds: list[str]
) -> None:
    with pytest.raises(UsageError):
        await store.open_handshake("h", kinds, expires_at=clock() + MINUTE)
    with pytest.raises(UsageError):
        await store.handshake_pending(kinds[0] if kinds else "", now=clock())


# -- the setup queue ------------------------------------------------------------------------------


async def test_request_is_idempotent_per_meeting(store: SqlStore, clock: FakeClock) -> None:
    keep = clock() + DAY
    assert await store.request_subscription_setup("org-a", "m1", now=clock(), keep_until=keep)
    assert not await store.request_subscription_setup("org-a", "m1", now=clock(), keep_until=keep)
    assert await store.request_subscription_setup("org-b", "m1", now=clock(), keep_until=keep)
    counts = await store.subscription_setup_counts()
    assert counts == {"pending": 2, "leased": 0, "done": 0, "abandoned": 0, "retrying": 0}


async def test_lease_complete_stores_the_subscription_atomically(
    store: SqlStore, other_instance: SqlStore, clock: FakeClock
) -> None:
    keep = clock() + DAY
    await store.request_subscription_setup("org-a", "m1", now=clock(), keep_until=keep)
    lease = clock() + MINUTE
    [setup] = await store.lease_subscription_setups(
        worker="w1", limit=5, now=clock(), lease_until=lease
    )
    assert (setup.org_id, setup.external_id, setup.attempts, setup.last_reason) == (
        "org-a",
        "m1",
        1,
        None,
    )
    # leased: another instance gets nothing until the lease expires
    assert not await other_instance.lease_subscription_setups(
        worker="w2", limit=5, now=clock(), lease_until=lease
    )
    # a worker that does not hold the lease stores nothing
    assert not await other_instance.complete_subscription_setup(
        _row("sub-x", "m1", clock), worker="w2"
    )
    assert await store.get_subscription("sub-x") is None
    assert await store.complete_subscription_setup(_row("sub-1", "m1", clock), worker="w1")
    stored = await other_instance.get_subscription("sub-1")
    assert stored is not None
    assert stored.client_state == "state-sub-1"
    counts = await store.subscription_setup_counts()
    assert (counts["done"], counts["pending"], counts["leased"]) == (1, 0, 0)
    # done: a repeat request does nothing, and nothing is leased again
    assert not await store.request_subscription_setup("org-a", "m1", now=clock(), keep_until=keep)
    clock.advance(3600)
    assert not await store.lease_subscription_setups(
        worker="w1", limit=5, now=clock(), lease_until=clock() + MINUTE
    )


async def test_expired_lease_returns_to_another_worker(
    store: SqlStore, other_instance: SqlStore, clock: FakeClock
) -> None:
    await store.request_subscription_setup("org-a", "m1", now=clock(), keep_until=clock() + DAY)
    await store.lease_subscription_setups(
        worker="dead", limit=5, now=clock(), lease_until=clock() + MINUTE
    )
    clock.advance(60)
    [setup] = await other_instance.lease_subscription_setups(
        worker="w2", limit=5, now=clock(), lease_until=clock() + MINUTE
    )
    assert setup.attempts == 2
    assert not await store.complete_subscription_setup(_row("late", "m1", clock), worker="dead")
    assert await other_instance.complete_subscription_setup(_row("s2", "m1", clock), worker="w2")
    assert await store.get_subscription("late") is None


async def test_retry_backs_off_and_is_counted(store: SqlStore, clock: FakeClock) -> None:
    await store.request_subscription_setup("org-a", "m1", now=clock(), keep_until=clock() + DAY)
    await store.lease_subscription_setups(
        worker="w", limit=5, now=clock(), lease_until=clock() + MINUTE
    )
    assert not await store.retry_subscription_setup(
        "org-a", "m1", worker="other", not_before=clock(), reason="x"
    )
    later = clock() + timedelta(seconds=30)
    assert await store.retry_subscription_setup(
        "org-a", "m1", worker="w", not_before=later, reason="graph_bad_request"
    )
    counts = await store.subscription_setup_counts()
    assert (counts["pending"], counts["retrying"]) == (1, 1)
    assert not await store.lease_subscription_setups(
        worker="w", limit=5, now=later - timedelta(microseconds=1), lease_until=later + MINUTE
    )
    [again] = await store.lease_subscription_setups(
        worker="w", limit=5, now=later, lease_until=later + MINUTE
    )
    assert (again.attempts, again.last_reason) == (2, "graph_bad_request")
    assert (await store.subscription_setup_counts())["retrying"] == 1  # leased, failed before


async def test_abandoned_setups_stay_counted_then_purge(store: SqlStore, clock: FakeClock) -> None:
    keep = clock() + DAY
    for ext in ("m1", "m2", "m3"):
        await store.request_subscription_setup("org-a", ext, now=clock(), keep_until=keep)
    leased = await store.lease_subscription_setups(
        worker="w", limit=2, now=clock(), lease_until=clock() + MINUTE
    )
    assert len(leased) == 2
    first, second = leased
    assert await store.abandon_subscription_setup(
        first.org_id, first.external_id, worker="w", reason="visit_ended"
    )
    assert not await store.abandon_subscription_setup(
        first.org_id, first.external_id, worker="w", reason="visit_ended"
    )
    await store.complete_subscription_setup(_row("s", second.external_id, clock), worker="w")
    counts = await store.subscription_setup_counts()
    assert (counts["abandoned"], counts["done"], counts["pending"]) == (1, 1, 1)
    assert await store.purge_subscription_setups(now=keep - timedelta(microseconds=1)) == 0
    assert await store.purge_subscription_setups(now=keep) == 2  # the pending one stays
    counts = await store.subscription_setup_counts()
    assert (counts["abandoned"], counts["done"], counts["pending"]) == (0, 0, 1)


async def test_concurrent_workers_never_share_a_setup(
    store: SqlStore, other_instance: SqlStore, clock: FakeClock
) -> None:
    for i in range(40):
        await store.request_subscription_setup("org-a", f"m{i}", now=clock(), keep_until=clock())
    got: dict[str, list[str]] = {"a": [], "b": []}

    async def take(name: str, instance: SqlStore) -> None:
        for _ in range(10):
            leased = await instance.lease_subscription_setups(
                worker=name, limit=3, now=clock(), lease_until=clock() + MINUTE
            )
            got[name].extend(s.external_id for s in leased)

    async with anyio.create_task_group() as group:
        group.start_soon(take, "a", store)
        group.start_soon(take, "b", other_instance)
    assert sorted(got["a"] + got["b"]) == sorted(f"m{i}" for i in range(40))


async def test_sweep_queues_live_meetings_without_setup_or_subscription(
    store: SqlStore, clock: FakeClock
) -> None:
    def meeting(ext: str, end_minutes: int, state: str = "active") -> MeetingRow:
        end = clock() + timedelta(minutes=end_minutes)
        return MeetingRow(
            "org-a", ext, "oid", f"id-{ext}", f"https://join/{ext}", clock(), end, state
        )  # type: ignore[arg-type]

    for row in (
        meeting("lost", 30),  # its launch died before queueing: swept
        meeting("queued", 30),
        meeting("subscribed", 30),  # subscribed before setups existed
        meeting("removed-sub", 30),  # its subscription was removed: swept
        meeting("over", -20),  # ended before the cutoff
        meeting("cancelled", 30, "cancelled"),
    ):
        await store.put_meeting(row)
    await store.request_subscription_setup("org-a", "queued", now=clock(), keep_until=clock())
    await store.put_subscription(_row("s1", "subscribed", clock))
    removed = SubscriptionRow("s2", "org-a", "removed-sub", "cs", clock() + DAY, "removed")
    await store.put_subscription(removed)
    cutoff = clock() - timedelta(minutes=15)
    assert (
        await store.request_missing_subscription_setups(
            now=clock(), ended_after=cutoff, keep_for=DAY
        )
        == 2
    )
    assert (
        await store.request_missing_subscription_setups(
            now=clock(), ended_after=cutoff, keep_for=DAY
        )
        == 0
    )
    leased = await store.lease_subscription_setups(
        worker="w", limit=9, now=clock(), lease_until=clock() + MINUTE
    )
    assert sorted(s.external_id for s in leased) == ["lost", "queued", "removed-sub"]
    for setup in leased:
        await store.abandon_subscription_setup("org-a", setup.external_id, worker="w", reason="x")
    # kept a day after the meeting's end (the swept ones), not a day after now
    end = clock() + timedelta(minutes=30)
    assert await store.purge_subscription_setups(now=end + DAY - timedelta(microseconds=1)) == 1
    assert await store.purge_subscription_setups(now=end + DAY) == 2
