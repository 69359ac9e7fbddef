"""Contract: identity map, meetings, join links, subscriptions, attendance facts (B2, B6, C4, D1, D2)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

import pytest
from store_helpers import FakeClock

from teams_ehr.errors import StorageConflictError, StorageError
from teams_ehr.store._base import SqlStore
from teams_ehr.store.protocol import (
    AttendanceFactRow,
    IdentityLink,
    JoinLinkRow,
    MeetingRow,
    SubscriptionRow,
)

pytestmark = pytest.mark.anyio
ISS = "https://fhir.example.org/R4"


async def test_identity_bind_conflict_and_unlink(store: SqlStore, clock: FakeClock) -> None:
    link = IdentityLink("org-a", ISS, "E1001", "tid-1", "oid-1", clock())
    await store.bind_identity(link)
    await store.bind_identity(link)  # the same binding again is a no-op
    with pytest.raises(StorageConflictError) as err:
        await store.bind_identity(IdentityLink("org-a", ISS, "E1001", "tid-1", "oid-2", clock()))
    assert err.value.reason == "identity_bound"
    assert await store.get_identity("org-a", ISS, "E1001") == link
    assert await store.get_identity("org-b", ISS, "E1001") is None
    assert await store.unlink_identity("org-b", ISS, "E1001") is False
    assert await store.unlink_identity("org-a", ISS, "E1001") is True
    assert await store.unlink_identity("org-a", ISS, "E1001") is False
    await store.bind_identity(IdentityLink("org-a", ISS, "E1001", "tid-1", "oid-2", clock()))
    rebound = await store.get_identity("org-a", ISS, "E1001")
    assert rebound is not None
    assert rebound.object_id == "oid-2"


def meeting(clock: FakeClock, org: str = "org-a", ext: str = "ext-1", **kw: Any) -> MeetingRow:
    values: dict[str, Any] = {
        "org_id": org,
        "external_id": ext,
        "organizer_oid": "oid-1",
        "meeting_id": f"mtg-{org}-{ext}",
        "join_url": f"https://teams.microsoft.com/l/meetup-join/{org}/{ext}",
        "start": clock(),
        "end": clock() + timedelta(minutes=30),
        "state": "active",
        "department": "cardiology",
    }
    values.update(kw)
    return MeetingRow(**values)


async def test_meeting_upsert_and_lookups(store: SqlStore, clock: FakeClock) -> None:
    first = meeting(clock)
    await store.put_meeting(first)
    assert await store.get_meeting("org-a", "ext-1") == first
    moved = meeting(clock, start=clock() + timedelta(hours=1), end=clock() + timedelta(hours=2))
    await store.put_meeting(moved)
    cancelled = meeting(clock, state="cancelled", department=None)
    await store.put_meeting(cancelled)
    assert await store.get_meeting("org-a", "ext-1") == cancelled
    assert await store.find_meeting_by_id("mtg-org-a-ext-1") == cancelled
    assert await store.find_meeting_by_id("mtg-unknown") is None
    assert await store.get_meeting("org-b", "ext-1") is None


async def test_join_links_by_hash_and_revoke(store: SqlStore, clock: FakeClock) -> None:
    window = (clock() - timedelta(minutes=30), clock() + timedelta(minutes=90))
    for n in range(2):
        await store.put_join_link(JoinLinkRow(f"h{n}", "org-a", "ext-1", *window))
    await store.put_join_link(JoinLinkRow("h-other", "org-a", "ext-2", *window))
    with pytest.raises(StorageConflictError):
        await store.put_join_link(JoinLinkRow("h0", "org-b", "ext-9", *window))
    got = await store.get_join_link("h0")
    assert got == JoinLinkRow("h0", "org-a", "ext-1", *window, revoked=False)
    assert await store.revoke_join_links("org-b", "ext-1") == 0
    assert await store.revoke_join_links("org-a", "ext-1") == 2
    assert await store.revoke_join_links("org-a", "ext-1") == 0
    revoked = await store.get_join_link("h1")
    assert revoked is not None
    assert revoked.revoked is True
    still = await store.get_join_link("h-other")
    assert still is not None
    assert still.revoked is False
    assert await store.get_join_link("h-unknown") is None


async def test_subscriptions(store: SqlStore, clock: FakeClock) -> None:
    def sub(sid: str, org: str, hours: int, state: str = "active") -> SubscriptionRow:
        expires = clock() + timedelta(hours=hours)
        return SubscriptionRow(sid, org, "ext-1", f"cs-{sid}", expires, cast(Any, state))

    await store.put_subscription(sub("s1", "org-a", 1, "pending"))
    await store.put_subscription(sub("s2", "org-b", 5))
    await store.put_subscription(sub("s3", "org-a", 2, "removed"))
    await store.put_subscription(sub("s1", "org-a", 3))  # renewal: upsert
    with pytest.raises(StorageConflictError):
        await store.put_subscription(sub("s1", "org-b", 3))
    assert await store.get_subscription("s1") == sub("s1", "org-a", 3)
    assert await store.get_subscription("s-unknown") is None
    expiring = await store.list_subscriptions_expiring(clock() + timedelta(hours=6))
    assert [s.subscription_id for s in expiring] == ["s1", "s2"]
    soon = await store.list_subscriptions_expiring(clock() + timedelta(hours=4))
    assert [s.subscription_id for s in soon] == ["s1"]


def fact(clock: FakeClock, key: str, minutes: int, org: str = "org-a") -> AttendanceFactRow:
    at = clock() + timedelta(minutes=minutes)
    return AttendanceFactRow(org, "ext-1", key, "connected", "patient", "pk-1", at, "cardiology")


async def test_attendance_facts_dedupe_and_ranges(store: SqlStore, clock: FakeClock) -> None:
    rows = [fact(clock, "f2", 2), fact(clock, "f1", 1), fact(clock, "f1", 1)]
    assert await store.record_facts(rows) == 2
    assert await store.record_facts([fact(clock, "f1", 1), fact(clock, "f3", 30)]) == 1
    assert await store.record_facts([fact(clock, "f1", 1, org="org-b")]) == 1
    assert await store.record_facts([]) == 0
    listed = await store.list_facts("org-a", "ext-1")
    assert [f.fact_key for f in listed] == ["f1", "f2", "f3"]
    assert listed[0] == fact(clock, "f1", 1)
    ranged = await store.list_org_facts(
        "org-a", since=clock() + timedelta(minutes=1), until=clock() + timedelta(minutes=30)
    )
    assert [f.fact_key for f in ranged] == ["f1", "f2"]
    assert [f.org_id for f in await store.list_facts("org-b", "ext-1")] == ["org-b"]


async def test_failed_batch_leaves_nothing_half_written(store: SqlStore, clock: FakeClock) -> None:
    broken = AttendanceFactRow(
        "org-a", "ext-1", "f-bad", cast(str, None), "patient", "pk", clock(), None
    )
    with pytest.raises(StorageError) as err:
        await store.record_facts([fact(clock, "f1", 1), fact(clock, "f2", 2), broken])
    assert err.value.reason == "integrity"
    assert await store.list_facts("org-a", "ext-1") == []
    assert await store.record_facts([fact(clock, "f1", 1)]) == 1
