"""Meeting call-event subscriptions: create, renew at ⅔ of the lifetime, lifecycle (requirement D1).

Graph docs, *Get change notifications for Microsoft Teams meeting call updates* (beta): the
resource is ``communications/onlineMeetings(joinWebUrl='{URL-encoded joinWebUrl}')/
meetingCallEvents``, ``changeType: updated``, application permission only, at most **3 days**
per subscription and one subscription per app per meeting; rich notifications
(``includeResourceData`` + ``encryptionCertificate`` + ``encryptionCertificateId``) are the only
useful kind. *Lifecycle notifications*: ``lifecycleNotificationUrl`` can only be set at creation;
``reauthorizationRequired`` → reauthorize (a PATCH of ``expirationDateTime`` counts);
``subscriptionRemoved`` → create again and resynchronise; ``missed`` → resynchronise
(reconciliation from the attendance report, :mod:`.reconcile`).

The join URL is a bearer link into a PHI conversation: the resource string is passed to the
Graph client as a ``SecretStr`` and logged only as a hash. ``clientState`` is 32 random bytes
(base64url), stored by the store encrypted at rest, compared in constant time by the webhook.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol
from urllib.parse import quote

from pydantic import SecretStr

from teams_ehr._redact import get_logger
from teams_ehr._types import Clock, utc_now
from teams_ehr.attendance.handshake import HandshakeRegistry
from teams_ehr.attendance.notification_crypto import NotificationCertificate
from teams_ehr.attendance.notifications import LifecycleEnvelope
from teams_ehr.errors import ConfigurationError, GraphError, TeamsEhrError, UsageError
from teams_ehr.store.protocol import MeetingRow, MeetingStore, SubscriptionRow, SubscriptionStore

__all__ = [
    "MAX_MEETING_SUBSCRIPTION_LIFETIME",
    "CreatedSubscription",
    "SubscriptionApi",
    "SubscriptionManager",
    "meeting_call_events_resource",
]

_log = get_logger(__name__)

MAX_MEETING_SUBSCRIPTION_LIFETIME = timedelta(days=3)
_SAFETY = timedelta(minutes=5)
_TICK = timedelta(microseconds=1)  # the stores keep microseconds
Reconcile = Callable[[str, str, str], Awaitable[None]]
"""``(org_id, external_id, reason)`` → schedule a reconciliation (the runtime's reconciler)."""


class CreatedSubscription(Protocol):
    """The fields of Graph's ``subscription`` the manager reads (the Graph client's
    ``Subscription`` fits)."""

    @property
    def id(self) -> str: ...

    @property
    def expiration_date_time(self) -> datetime: ...


class SubscriptionApi(Protocol):
    """What the manager needs from :class:`teams_ehr.teams.graph_client.GraphClient`."""

    async def create_subscription(
        self,
        *,
        resource: SecretStr | str,
        change_type: str,
        notification_url: str,
        expiration: datetime,
        client_state: SecretStr,
        lifecycle_notification_url: str | None = None,
        include_resource_data: bool = False,
        encryption_certificate: str | None = None,
        encryption_certificate_id: str | None = None,
        api_version: str | None = None,
    ) -> CreatedSubscription: ...

    async def renew_subscription(
        self, subscription_id: str, expiration: datetime, *, api_version: str | None = None
    ) -> CreatedSubscription: ...

    async def delete_subscription(
        self, subscription_id: str, *, api_version: str | None = None
    ) -> bool: ...


def meeting_call_events_resource(join_web_url: str) -> str:
    """The subscription resource for a meeting: the join URL percent-encoded once more (its
    own ``%3a`` becomes ``%253a``), as in the Graph doc's example."""
    return f"communications/onlineMeetings(joinWebUrl='{quote(join_web_url, safe='')}')/meetingCallEvents"


def _resource_tag(resource: str) -> str:
    return hashlib.sha256(resource.encode()).hexdigest()[:12]


class SubscriptionManager:
    """Creates and maintains one meeting call-event subscription per visit."""

    def __init__(
        self,
        graph: SubscriptionApi,
        store: SubscriptionStore,
        handshakes: HandshakeRegistry,
        *,
        notification_url: str,
        lifecycle_url: str,
        certificate: NotificationCertificate,
        meetings: MeetingStore,
        clock: Clock = utc_now,
        lifetime: timedelta = MAX_MEETING_SUBSCRIPTION_LIFETIME - _SAFETY,
        reconcile: Reconcile | None = None,
        api_version: str = "beta",
        client_state_factory: Callable[[], str] | None = None,
    ) -> None:
        if not timedelta(minutes=5) <= lifetime <= MAX_MEETING_SUBSCRIPTION_LIFETIME:
            raise ConfigurationError("subscription lifetime must be 5 min – 3 days")
        for url in (notification_url, lifecycle_url):
            if not url.startswith("https://") and not url.startswith("http://127.0.0.1"):
                raise ConfigurationError("webhook URLs must be https")
        self._graph = graph
        self._store = store
        self._handshakes = handshakes
        self._notification_url = notification_url
        self._lifecycle_url = lifecycle_url
        self._certificate = certificate
        self._meetings = meetings
        self._clock = clock
        self._lifetime = lifetime
        self._reconcile = reconcile
        self._api_version = api_version
        self._client_state = client_state_factory or (
            lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        )

    @property
    def lifetime(self) -> timedelta:
        return self._lifetime

    async def subscribe(self, meeting: MeetingRow) -> SubscriptionRow:
        """Create the rich call-event subscription of ``meeting`` and store it as active."""
        if meeting.state != "active":
            raise UsageError("cannot subscribe to a cancelled meeting", reason="meeting_cancelled")
        resource = meeting_call_events_resource(meeting.join_url)
        client_state = self._client_state()
        now = self._clock()
        handle = await self._handshakes.open(now, frozenset({"notification", "lifecycle"}))
        try:
            created = await self._graph.create_subscription(
                resource=SecretStr(resource),
                change_type="updated",
                notification_url=self._notification_url,
                lifecycle_notification_url=self._lifecycle_url,
                expiration=now + self._lifetime,
                client_state=SecretStr(client_state),
                include_resource_data=True,
                encryption_certificate=self._certificate.encryption_certificate,
                encryption_certificate_id=self._certificate.certificate_id,
                api_version=self._api_version,
            )
        finally:
            await self._handshakes.close(handle)
        row = SubscriptionRow(
            subscription_id=created.id,
            org_id=meeting.org_id,
            external_id=meeting.external_id,
            client_state=client_state,
            expires_at=created.expiration_date_time,
            state="active",
        )
        await self._store.put_subscription(row)
        _log.info("subscribed to meeting call events (resource #%s)", _resource_tag(resource))
        return row

    async def renew(self, row: SubscriptionRow) -> SubscriptionRow:
        """Extend ``row`` by a full lifetime (also how Graph accepts reauthorization)."""
        renewed = await self._graph.renew_subscription(
            row.subscription_id, self._clock() + self._lifetime, api_version=self._api_version
        )
        new_row = SubscriptionRow(
            row.subscription_id,
            row.org_id,
            row.external_id,
            row.client_state,
            renewed.expiration_date_time,
            "active",
        )
        await self._store.put_subscription(new_row)
        return new_row

    async def renew_due(self, now: datetime) -> Sequence[SubscriptionRow]:
        """Renew every active subscription past ⅔ of its lifetime (reliability case R19); a
        renewal that fails is logged as an alert and retried on the next call. Returns the
        renewed rows."""
        # ⅔ passed ⇔ expires_at <= now + lifetime/3; the store lists ``expires_at < before``
        due = await self._store.list_subscriptions_expiring(now + self._lifetime / 3 + _TICK)
        renewed: list[SubscriptionRow] = []
        for row in due:
            if row.state != "active":
                continue
            try:
                if row.expires_at <= now:
                    renewed.append(await self.recreate(row))
                else:
                    renewed.append(await self.renew(row))
            except TeamsEhrError as exc:
                _log.error(
                    "subscription renewal failed (%s); will retry",
                    exc.reason,
                    extra={"alert": "subscription_renewal_failed"},
                )
        return renewed

    async def reauthorize(self, subscription_id: str) -> SubscriptionRow | None:
        row = await self._store.get_subscription(subscription_id)
        if row is None or row.state != "active":
            return None
        return await self.renew(row)

    async def recreate(self, row: SubscriptionRow) -> SubscriptionRow:
        """Mark ``row`` removed, subscribe again, schedule a reconciliation."""
        await self._store.put_subscription(
            SubscriptionRow(
                row.subscription_id,
                row.org_id,
                row.external_id,
                row.client_state,
                row.expires_at,
                "removed",
            )
        )
        try:
            await self._graph.delete_subscription(
                row.subscription_id, api_version=self._api_version
            )
        except GraphError as exc:
            _log.info("old subscription not deleted (%s)", exc.reason)
        meeting = await self._meetings.get_meeting(row.org_id, row.external_id)
        if meeting is None:
            raise UsageError("the subscription's meeting is unknown", reason="meeting_unknown")
        new_row = await self.subscribe(meeting)
        await self._schedule_reconcile(row, "subscription_removed")
        return new_row

    async def handle_lifecycle(self, envelope: LifecycleEnvelope) -> None:
        """Act on a stored lifecycle notification (called by the inbox processor)."""
        event = envelope.lifecycle_event
        row = await self._store.get_subscription(envelope.subscription_id)
        if row is None:
            return
        if event == "reauthorizationRequired":
            await self.reauthorize(row.subscription_id)
        elif event == "subscriptionRemoved":
            if row.state == "active":
                await self.recreate(row)
        elif event == "missed":
            await self._schedule_reconcile(row, "missed")
        else:
            _log.warning("unknown lifecycle event %r ignored", event[:64])

    async def _schedule_reconcile(self, row: SubscriptionRow, reason: str) -> None:
        if self._reconcile is not None:
            await self._reconcile(row.org_id, row.external_id, reason)
