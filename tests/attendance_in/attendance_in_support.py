"""Shared helpers for the attendance input tests: small in-memory stores and payload builders."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx

from teams_ehr.attendance.notification_crypto import NotificationCertificate, encrypt_content
from teams_ehr.attendance.notifications import ParticipantKeyer
from teams_ehr.attendance.validation_tokens import GraphValidationTokenVerifier
from teams_ehr.attendance.webhook import WebhookSecurity
from teams_ehr.errors import StorageError
from teams_ehr.smart.jwks import JwksCache
from teams_ehr.store.protocol import (
    AttendanceFactRow,
    InboxItem,
    MeetingRow,
    SubscriptionRow,
)
from teams_ehr.testing.fake_entra import FakeEntra

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
TENANT = "11111111-2222-3333-4444-555555555555"
OTHER_TENANT = "99999999-8888-7777-6666-555555555555"
APP_ID = "6a1c0f7e-0d9b-4e55-9d57-1f2e3d4c5b6a"
ORG = "org-a"
EXTERNAL_ID = "ext-visit-1"
ORGANIZER_OID = "aaaaaaaa-0000-0000-0000-000000000001"
CLIENT_STATE = "client-state-canary-7b1e0c"
SUBSCRIPTION_ID = "sub-0001"
JOIN_URL = (
    "https://teams.microsoft.com/l/meetup-join/19%3ameeting_SECRETJOINCANARY%40thread.v2/0"
    "?context=%7b%22Tid%22%3a%22t%22%7d"
)
CANARY_NAME = "Zebulon Canaryname-4471"
KEYER = ParticipantKeyer(b"k" * 32)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


class _Sub:
    """Cancel-safe subscription iterator (like the store's hub)."""

    def __init__(self, bus: MemoryStore, channel: str) -> None:
        self.channel = channel
        self.buffer: deque[str] = deque()
        self.wakeup = anyio.Event()
        self.closed = False
        self._bus = bus

    def __aiter__(self) -> _Sub:
        return self

    async def __anext__(self) -> str:
        while not self.buffer:
            if self.closed:
                raise StopAsyncIteration
            self.wakeup = anyio.Event()
            await self.wakeup.wait()
        return self.buffer.popleft()

    async def aclose(self) -> None:
        self.closed = True
        self._bus.subs.discard(self)


@dataclass
class MemoryStore:
    """Inbox, subscriptions, facts, meetings and the event bus, in memory."""

    inbox: dict[tuple[str, str], InboxItem] = field(default_factory=dict)
    leases: dict[int, tuple[str, datetime]] = field(default_factory=dict)
    done: set[int] = field(default_factory=set)
    subscriptions: dict[str, SubscriptionRow] = field(default_factory=dict)
    facts: dict[tuple[str, str], AttendanceFactRow] = field(default_factory=dict)
    meetings: dict[tuple[str, str], MeetingRow] = field(default_factory=dict)
    published: list[tuple[str, str]] = field(default_factory=list)
    subs: set[_Sub] = field(default_factory=set)
    fail_inbox: bool = False
    append_calls: int = 0

    async def append_inbox(self, items: Sequence[InboxItem]) -> int:
        self.append_calls += 1
        if self.fail_inbox:
            raise StorageError("disk full")
        new = 0
        for item in items:
            key = (item.org_id, item.dedupe_key)
            if key not in self.inbox:
                self.inbox[key] = replace(item, item_id=len(self.inbox) + 1)
                new += 1
        return new

    async def claim_inbox(
        self, *, worker: str, limit: int, now: datetime, lease_until: datetime
    ) -> Sequence[InboxItem]:
        claimed = []
        for item in self.inbox.values():
            assert item.item_id is not None
            lease = self.leases.get(item.item_id)
            if item.item_id in self.done or (lease is not None and lease[1] > now):
                continue
            self.leases[item.item_id] = (worker, lease_until)
            claimed.append(item)
            if len(claimed) >= limit:
                break
        return claimed

    async def complete_inbox(self, item_ids: Sequence[int], *, worker: str) -> None:
        self.done.update(item_ids)

    async def put_subscription(self, row: SubscriptionRow) -> None:
        self.subscriptions[row.subscription_id] = row

    async def get_subscription(self, subscription_id: str) -> SubscriptionRow | None:
        return self.subscriptions.get(subscription_id)

    async def list_subscriptions_expiring(self, before: datetime) -> Sequence[SubscriptionRow]:
        rows = [r for r in self.subscriptions.values() if r.expires_at < before]
        return sorted((r for r in rows if r.state != "removed"), key=lambda r: r.expires_at)

    async def record_facts(self, rows: Sequence[AttendanceFactRow]) -> int:
        new = 0
        for row in rows:
            if (row.org_id, row.fact_key) not in self.facts:
                self.facts[(row.org_id, row.fact_key)] = row
                new += 1
        return new

    async def list_facts(self, org_id: str, external_id: str) -> Sequence[AttendanceFactRow]:
        return [
            f for f in self.facts.values() if (f.org_id, f.external_id) == (org_id, external_id)
        ]

    async def list_org_facts(
        self, org_id: str, *, since: datetime, until: datetime
    ) -> Sequence[AttendanceFactRow]:
        return [f for f in self.facts.values() if f.org_id == org_id and since <= f.at < until]

    async def put_meeting(self, row: MeetingRow) -> None:
        self.meetings[(row.org_id, row.external_id)] = row

    async def get_meeting(self, org_id: str, external_id: str) -> MeetingRow | None:
        return self.meetings.get((org_id, external_id))

    async def find_meeting_by_id(self, meeting_id: str) -> MeetingRow | None:
        return next((m for m in self.meetings.values() if m.meeting_id == meeting_id), None)

    async def publish(self, channel: str, message: str) -> None:
        self.published.append((channel, message))
        for sub in list(self.subs):
            if sub.channel == channel:
                sub.buffer.append(message)
                sub.wakeup.set()

    def subscribe(self, channel: str) -> AsyncIterator[str]:
        sub = _Sub(self, channel)
        self.subs.add(sub)
        return sub


def meeting_row(**overrides: Any) -> MeetingRow:
    values: dict[str, Any] = {
        "org_id": ORG,
        "external_id": EXTERNAL_ID,
        "organizer_oid": ORGANIZER_OID,
        "meeting_id": "meeting-1",
        "join_url": JOIN_URL,
        "start": T0,
        "end": T0 + timedelta(hours=1),
        "state": "active",
        "department": "cardiology",
    }
    values.update(overrides)
    return MeetingRow(**values)


def subscription_row(**overrides: Any) -> SubscriptionRow:
    values: dict[str, Any] = {
        "subscription_id": SUBSCRIPTION_ID,
        "org_id": ORG,
        "external_id": EXTERNAL_ID,
        "client_state": CLIENT_STATE,
        "expires_at": T0 + timedelta(days=2),
        "state": "active",
    }
    values.update(overrides)
    return SubscriptionRow(**values)


@dataclass
class Harness:
    """A webhook wired to FakeEntra's keys, an in-memory store and a notification certificate."""

    clock: Clock
    entra: FakeEntra
    store: MemoryStore
    certificate: NotificationCertificate
    security: WebhookSecurity
    client: httpx.AsyncClient

    def token(self, **overrides: Any) -> str:
        tenant = overrides.pop("tenant_id", TENANT)
        return self.entra.sign_graph_validation_token(
            overrides or None, audience=APP_ID, tenant_id=tenant
        )

    def item(self, content: dict[str, Any], **overrides: Any) -> dict[str, Any]:
        encrypted = encrypt_content(
            json.dumps(content).encode(),
            encryption_certificate=self.certificate.encryption_certificate,
            certificate_id=self.certificate.certificate_id,
        )
        item: dict[str, Any] = {
            "subscriptionId": SUBSCRIPTION_ID,
            "clientState": CLIENT_STATE,
            "changeType": "updated",
            "tenantId": TENANT,
            "resource": f"communications/onlineMeetings(joinWebUrl='{JOIN_URL}')/meetingCallEvents",
            "subscriptionExpirationDateTime": "2026-03-04T15:00:00Z",
            "resourceData": {"@odata.type": "#microsoft.graph.callevent", "id": "n1"},
            "encryptedContent": encrypted.model_dump(by_alias=True),
        }
        item.update(overrides)
        return item

    def body(self, *items: dict[str, Any], tokens: list[str] | None = None) -> bytes:
        return json.dumps(
            {"value": list(items), "validationTokens": [self.token()] if tokens is None else tokens}
        ).encode()


def roster_event(
    *participants: dict[str, Any], at: str = "2026-03-02T15:01:00.1234567Z"
) -> dict[str, Any]:
    return {
        "@odata.type": "#microsoft.graph.callevent",
        "id": "n1",
        "eventType": "rosterUpdated",
        "eventDateTime": at,
        "participants@delta": list(participants),
    }


def delta_user(
    user_id: str,
    *,
    tenant: str | None = TENANT,
    lobby: bool = False,
    left: bool = False,
    name: str = CANARY_NAME,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "info": {"identity": {"user": {"id": user_id, "displayName": name, "tenantId": tenant}}},
        "isInLobby": lobby,
        "id": f"leg-{user_id}",
    }
    if left:
        entry["removedState"] = {"reason": "Participant has left the meeting call."}
    return entry


def delta_guest(guest_id: str, *, lobby: bool = False, left: bool = False) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "info": {"identity": {"guest": {"id": guest_id, "displayName": CANARY_NAME}}},
        "isInLobby": lobby,
        "id": f"leg-{guest_id}",
    }
    if left:
        entry["removedState"] = {"reason": "Participant has left the meeting call."}
    return entry


_SHARED_CLOCK = Clock()
_SHARED_ENTRA: FakeEntra | None = None
_CERTIFICATE = NotificationCertificate.generate(T0)


def shared_clock() -> Clock:
    """The clock of the shared FakeEntra, reset to ``T0``."""
    _SHARED_CLOCK.now = T0
    return _SHARED_CLOCK


def shared_entra(clock: Clock) -> FakeEntra:
    """One FakeEntra (RSA key generation is slow) whose clock is reset for each test."""
    global _SHARED_ENTRA
    _SHARED_CLOCK.now = clock.now
    if _SHARED_ENTRA is None:
        _SHARED_ENTRA = FakeEntra(TENANT, clock=_SHARED_CLOCK)
    return _SHARED_ENTRA


async def make_harness(clock: Clock | None = None, *, fresh_entra: bool = False) -> Harness:
    clock = clock or _SHARED_CLOCK
    clock.now = T0
    entra = FakeEntra(TENANT, clock=clock) if fresh_entra else shared_entra(clock)
    store = MemoryStore()
    await store.put_subscription(subscription_row())
    await store.put_meeting(meeting_row())
    certificate = _CERTIFICATE
    client = httpx.AsyncClient(transport=httpx.MockTransport(entra.handler))
    verifier = GraphValidationTokenVerifier(
        app_id=APP_ID, jwks=JwksCache(clock=clock), client=client
    )
    tenants = {ORG: TENANT, "org-b": OTHER_TENANT}

    async def org_tenant(org_id: str) -> str | None:
        return tenants.get(org_id)

    security = WebhookSecurity(
        token_verifier=verifier,
        decryption_keys=certificate.keys(),
        org_tenant=org_tenant,
        keyer=KEYER,
    )
    return Harness(clock, entra, store, certificate, security, client)
