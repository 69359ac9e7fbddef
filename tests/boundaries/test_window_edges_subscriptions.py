"""Subscription renewal at ⅔ of the lifetime and roster grants, at and around their edges.

Graph docs, *Get change notifications for Microsoft Teams meeting call updates*: a meeting
call-event subscription lives at most 3 days. :meth:`SubscriptionManager.renew_due` renews a
subscription once ⅔ of its lifetime has passed, i.e. from ``expires_at − lifetime/3`` inclusive
(the runtime's maintenance pass uses the same edge) and recreates it from ``expires_at``. A roster
grant (requirement D3) lets a session watch the live roster until ``meeting end + margin``,
exclusive like every nonce.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from clocks import Clock
from teams_ehr.attendance.handshake import PendingHandshakes
from teams_ehr.attendance.notification_crypto import NotificationCertificate
from teams_ehr.attendance.subscriptions import SubscriptionManager
from teams_ehr.attendance.visit_state import VisitState
from teams_ehr.config import AttendanceSettings
from teams_ehr.store.crypto import FieldCipher, new_encryption_key
from teams_ehr.store.protocol import MeetingRow
from teams_ehr.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
TICK = timedelta(microseconds=1)
CERTIFICATE = NotificationCertificate.generate(T0 - timedelta(days=1))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Created:
    id: str
    expiration_date_time: datetime


@dataclass
class Graph:
    """Answers like Graph's subscription API and records each call."""

    calls: list[str] = field(default_factory=list)

    async def create_subscription(self, **kw: Any) -> Created:
        self.calls.append("create")
        return Created(f"sub-{len(self.calls)}", kw["expiration"])

    async def renew_subscription(
        self, subscription_id: str, expiration: datetime, **kw: Any
    ) -> Created:
        self.calls.append("renew")
        return Created(subscription_id, expiration)

    async def delete_subscription(self, subscription_id: str, **kw: Any) -> bool:
        self.calls.append("delete")
        return True


def meeting(end: datetime = T0 + timedelta(minutes=30)) -> MeetingRow:
    join = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_x%40thread.v2/0"
    return MeetingRow("org-a", "visit-1", "oid-1", "meeting-1", join, T0, end, "active")


@pytest.fixture
async def store() -> AsyncIterator[tuple[SqliteStore, Clock]]:
    clock = Clock(T0)
    async with SqliteStore(":memory:", cipher=FieldCipher(new_encryption_key()), clock=clock) as s:
        yield s, clock


async def test_renewal_at_two_thirds_of_the_lifetime(store: tuple[SqliteStore, Clock]) -> None:
    sqlite, clock = store
    graph = Graph()
    manager = SubscriptionManager(
        graph,
        sqlite,
        PendingHandshakes(),
        notification_url="https://app.test/graph/notifications",
        lifecycle_url="https://app.test/graph/lifecycle",
        certificate=CERTIFICATE,
        meetings=sqlite,
        clock=clock,
    )
    row = await manager.subscribe(meeting())
    lifetime = manager.lifetime
    assert row.expires_at == T0 + lifetime
    due = row.expires_at - lifetime / 3
    assert due == T0 + lifetime * 2 / 3
    clock.now = due - TICK
    assert await manager.renew_due(clock.now) == []
    clock.now = due
    [renewed] = await manager.renew_due(clock.now)
    assert renewed.expires_at == due + lifetime
    assert graph.calls == ["create", "renew"]
    # the renewed subscription is due again only ⅔ of its new lifetime later
    clock.now = due + TICK
    assert await manager.renew_due(clock.now) == []


async def test_recreation_from_the_expiry_instant(store: tuple[SqliteStore, Clock]) -> None:
    sqlite, clock = store
    graph = Graph()
    manager = SubscriptionManager(
        graph,
        sqlite,
        PendingHandshakes(),
        notification_url="https://app.test/graph/notifications",
        lifecycle_url="https://app.test/graph/lifecycle",
        certificate=CERTIFICATE,
        meetings=sqlite,
        clock=clock,
    )
    await sqlite.put_meeting(meeting())
    row = await manager.subscribe(meeting())
    clock.now = row.expires_at - TICK
    [renewed] = await manager.renew_due(clock.now)
    assert renewed.subscription_id == row.subscription_id  # renewed in place
    await sqlite.put_subscription(row)  # as if the renewal had not happened
    clock.now = row.expires_at
    [recreated] = await manager.renew_due(clock.now)
    assert recreated.subscription_id != row.subscription_id
    assert graph.calls == ["create", "renew", "delete", "create"]


@pytest.mark.parametrize("margin", [AttendanceSettings().roster_grant_margin, timedelta(0)])
async def test_roster_grant_margin_edge(
    store: tuple[SqliteStore, Clock], margin: timedelta
) -> None:
    sqlite, clock = store
    row = meeting()
    await sqlite.put_meeting(row)
    visits = VisitState(sqlite, clock)
    await visits.grant_roster("session-1", row, margin)
    edge = row.end + margin
    for now, allowed in ((edge - TICK, True), (edge, False), (edge + TICK, False)):
        clock.now = now
        assert await visits.may_watch("session-1", "org-a", "visit-1", "oid-1") is allowed, now
    assert await visits.may_watch("session-2", "org-a", "visit-1", "oid-1") is False


def test_default_roster_margin_is_two_hours() -> None:
    assert AttendanceSettings().roster_grant_margin == timedelta(hours=2)
