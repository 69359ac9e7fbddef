"""Subscription manager: create, ⅔-lifetime renewal, lifecycle handling (D1; R18, R19, T26)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote

import pytest
from attendance_in_support import (
    _CERTIFICATE,
    EXTERNAL_ID,
    JOIN_URL,
    ORG,
    Clock,
    MemoryStore,
    meeting_row,
)
from pydantic import SecretStr

from leaks import assert_no_leak
from teams_ehr.attendance.handshake import PendingHandshakes, handle_validation
from teams_ehr.attendance.notifications import LifecycleEnvelope
from teams_ehr.attendance.subscriptions import (
    MAX_MEETING_SUBSCRIPTION_LIFETIME,
    SubscriptionManager,
    meeting_call_events_resource,
)
from teams_ehr.errors import ConfigurationError, GraphError, UsageError

pytestmark = pytest.mark.anyio


@dataclass
class Created:
    id: str
    expiration_date_time: datetime


@dataclass
class FakeApi:
    """Records calls; answers like Graph; optionally checks the handshake during create."""

    clock: Clock
    handshakes: PendingHandshakes | None = None
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    fail_renew: int = 0
    handshake_status: list[int] = field(default_factory=list)

    async def create_subscription(self, **kw: Any) -> Created:
        self.calls.append(("create", kw))
        if self.handshakes is not None:
            for kind in ("notification", "lifecycle"):
                result = await handle_validation(
                    {"validationToken": "tok"},
                    handshakes=self.handshakes,
                    kind=kind,
                    now=self.clock(),  # type: ignore[arg-type]
                )
                self.handshake_status.append(result.status)
        return Created(f"sub-{len(self.calls)}", kw["expiration"])

    async def renew_subscription(
        self, subscription_id: str, expiration: datetime, **kw: Any
    ) -> Created:
        self.calls.append(("renew", {"id": subscription_id, "expiration": expiration, **kw}))
        if self.fail_renew:
            self.fail_renew -= 1
            raise GraphError(
                "Graph PATCH subscription failed", status_code=500, reason="graph_server_error"
            )
        return Created(subscription_id, expiration)

    async def delete_subscription(self, subscription_id: str, **kw: Any) -> bool:
        self.calls.append(("delete", {"id": subscription_id}))
        return True


async def _manager(
    **kw: Any,
) -> tuple[SubscriptionManager, FakeApi, MemoryStore, Clock, list[tuple[str, str, str]]]:
    clock = Clock()
    store = MemoryStore()
    await store.put_meeting(meeting_row())
    handshakes = PendingHandshakes()
    api = FakeApi(clock, handshakes)
    reconciled: list[tuple[str, str, str]] = []

    async def reconcile(org: str, external_id: str, reason: str) -> None:
        reconciled.append((org, external_id, reason))

    manager = SubscriptionManager(
        api,
        store,
        handshakes,
        notification_url="https://app.example/graph/notifications",
        lifecycle_url="https://app.example/graph/lifecycle",
        certificate=_CERTIFICATE,
        meetings=store,
        clock=clock,
        reconcile=reconcile,
        **kw,
    )
    return manager, api, store, clock, reconciled


def test_resource_double_encodes_the_join_url() -> None:
    resource = meeting_call_events_resource(JOIN_URL)
    assert resource.startswith(
        "communications/onlineMeetings(joinWebUrl='https%3A%2F%2Fteams.microsoft.com"
    )
    assert "%253a" in resource
    assert "%2540" in resource
    assert resource.endswith("')/meetingCallEvents")
    inner = resource.split("'")[1]
    assert unquote(inner) == JOIN_URL


async def test_subscribe_creates_a_rich_subscription_with_lifecycle_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    manager, api, store, clock, _ = await _manager()
    row = await manager.subscribe(meeting_row())
    [(name, kw)] = api.calls
    assert name == "create"
    assert isinstance(kw["resource"], SecretStr)
    assert kw["resource"].get_secret_value() == meeting_call_events_resource(JOIN_URL)
    assert kw["change_type"] == "updated"
    assert kw["include_resource_data"] is True
    assert kw["encryption_certificate"] == _CERTIFICATE.encryption_certificate
    assert kw["encryption_certificate_id"] == _CERTIFICATE.certificate_id
    assert kw["lifecycle_notification_url"] == "https://app.example/graph/lifecycle"
    assert kw["api_version"] == "beta"
    assert kw["expiration"] - clock() <= MAX_MEETING_SUBSCRIPTION_LIFETIME
    client_state = kw["client_state"].get_secret_value()
    assert len(client_state) >= 43  # 32 random bytes
    assert row.client_state == client_state
    assert row.state == "active"
    assert store.subscriptions[row.subscription_id] == row
    # the handshake was answerable on both paths during the POST, and not afterwards
    assert api.handshake_status == [200, 200]
    after = await handle_validation(
        {"validationToken": "t"}, handshakes=manager._handshakes, kind="notification", now=clock()
    )
    assert after.status == 404
    assert_no_leak(
        [JOIN_URL, "SECRETJOINCANARY", client_state], caplog.text, repr(row.subscription_id)
    )


async def test_client_state_is_fresh_per_subscription() -> None:
    manager, _api, *_ = await _manager()
    first = await manager.subscribe(meeting_row())
    second = await manager.subscribe(meeting_row(external_id="ext-2"))
    assert first.client_state != second.client_state


async def test_renew_due_at_two_thirds_of_the_lifetime() -> None:
    manager, api, store, clock, _ = await _manager()
    row = await manager.subscribe(meeting_row())
    lifetime = manager.lifetime
    clock.advance(seconds=(lifetime * 2 / 3).total_seconds() - 60)
    assert await manager.renew_due(clock()) == []
    clock.advance(seconds=120)
    [renewed] = await manager.renew_due(clock())
    assert renewed.subscription_id == row.subscription_id
    assert renewed.expires_at == clock() + lifetime
    assert store.subscriptions[row.subscription_id].expires_at == renewed.expires_at
    assert [c for c, _ in api.calls] == ["create", "renew"]


async def test_renewal_failure_alerts_and_retries(caplog: pytest.LogCaptureFixture) -> None:
    manager, api, _store, clock, _ = await _manager()
    await manager.subscribe(meeting_row())
    api.fail_renew = 1
    clock.advance(days=2, hours=12)
    assert await manager.renew_due(clock()) == []
    assert any(getattr(r, "alert", None) == "subscription_renewal_failed" for r in caplog.records)
    assert len(await manager.renew_due(clock())) == 1


async def test_expired_subscription_is_recreated_and_reconciled() -> None:
    manager, _api, store, clock, reconciled = await _manager()
    row = await manager.subscribe(meeting_row())
    clock.advance(days=3)
    [new] = await manager.renew_due(clock())
    assert new.subscription_id != row.subscription_id
    assert store.subscriptions[row.subscription_id].state == "removed"
    assert reconciled == [(ORG, EXTERNAL_ID, "subscription_removed")]


async def test_lifecycle_events() -> None:
    manager, api, store, clock, reconciled = await _manager()
    row = await manager.subscribe(meeting_row())

    def envelope(event: str, sub: str = row.subscription_id) -> LifecycleEnvelope:
        return LifecycleEnvelope(
            subscription_id=sub,
            org_id=ORG,
            external_id=EXTERNAL_ID,
            lifecycle_event=event,
            received_at=clock(),
        )

    await manager.handle_lifecycle(envelope("reauthorizationRequired"))
    assert api.calls[-1][0] == "renew"
    await manager.handle_lifecycle(envelope("missed"))
    assert reconciled == [(ORG, EXTERNAL_ID, "missed")]
    await manager.handle_lifecycle(envelope("subscriptionRemoved"))
    assert store.subscriptions[row.subscription_id].state == "removed"
    assert [c for c, _ in api.calls][-2:] == ["delete", "create"]
    assert reconciled[-1] == (ORG, EXTERNAL_ID, "subscription_removed")
    calls = len(api.calls)
    await manager.handle_lifecycle(
        envelope("subscriptionRemoved")
    )  # redelivered: no second recreate
    await manager.handle_lifecycle(envelope("somethingNew"))
    await manager.handle_lifecycle(envelope("missed", sub="unknown"))
    assert len(api.calls) == calls


async def test_misuse_and_configuration() -> None:
    manager, *_ = await _manager()
    with pytest.raises(UsageError):
        await manager.subscribe(meeting_row(state="cancelled"))
    with pytest.raises(ConfigurationError):
        await _manager(lifetime=timedelta(days=4))
    with pytest.raises(ConfigurationError):
        SubscriptionManager(
            FakeApi(Clock()),
            MemoryStore(),
            PendingHandshakes(),
            notification_url="http://app.example/n",
            lifecycle_url="https://app.example/l",
            certificate=_CERTIFICATE,
            meetings=MemoryStore(),
        )
