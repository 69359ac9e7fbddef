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

A launch only queues its meeting's subscription (:class:`SubscriptionSetupWorker`, one durable
row); a background worker creates it, retries a failure with backoff until the visit is over, and
counts what it had to abandon (docs/guides/attendance.md#subscription-setup).

The join URL is a bearer link into a PHI conversation: the resource string is passed to the
Graph client as a ``SecretStr`` and logged only as a hash. ``clientState`` is 32 random bytes
(base64url), stored by the store encrypted at rest, compared in constant time by the webhook.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol
from urllib.parse import quote

import anyio
from pydantic import SecretStr

from teams_ehr import metrics
from teams_ehr._redact import get_logger
from teams_ehr._types import Clock, utc_now
from teams_ehr.attendance.handshake import HandshakeRegistry
from teams_ehr.attendance.notification_crypto import NotificationCertificate
from teams_ehr.attendance.notifications import LifecycleEnvelope
from teams_ehr.errors import ConfigurationError, GraphError, TeamsEhrError, UsageError
from teams_ehr.store.protocol import (
    MeetingRow,
    MeetingStore,
    SubscriptionRow,
    SubscriptionSetup,
    SubscriptionSetupStore,
    SubscriptionStore,
)

__all__ = [
    "MAX_MEETING_SUBSCRIPTION_LIFETIME",
    "SETUP_KEEP",
    "CreatedSubscription",
    "SetupReport",
    "SubscriptionApi",
    "SubscriptionManager",
    "SubscriptionSetupWorker",
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
        row = await self.create(meeting)
        await self._store.put_subscription(row)
        return row

    async def create(self, meeting: MeetingRow) -> SubscriptionRow:
        """Create the subscription at Graph (the validation handshake runs meanwhile) and return
        the row to store; storing it is the caller's (:class:`SubscriptionSetupWorker`)."""
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
        _log.info("subscribed to meeting call events (resource #%s)", _resource_tag(resource))
        return row

    async def discard(self, row: SubscriptionRow) -> None:
        """Delete a subscription created at Graph but not stored (its setup was taken over)."""
        try:
            await self._graph.delete_subscription(
                row.subscription_id, api_version=self._api_version
            )
        except GraphError as exc:
            _log.info("unstored subscription not deleted (%s)", exc.reason)

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


# -- the durable setup queue (requirement D1) ----------------------------------------------------

SETUP_LEASE = timedelta(minutes=2)
"""How long a worker holds a setup: longer than a Graph create with its handshake (≤ 10 s)."""
SETUP_RETRY_FIRST = timedelta(seconds=2)
SETUP_RETRY_MAX = timedelta(minutes=5)
SETUP_KEEP = timedelta(days=1)
"""A finished setup is kept until the meeting's end plus this, so a repeat launch of the visit
does not subscribe again (Graph allows one subscription per app and meeting)."""


class SetupStore(SubscriptionSetupStore, MeetingStore, Protocol):
    """What the setup worker needs from the store."""


@dataclass(frozen=True, slots=True)
class SetupReport:
    """What one :meth:`SubscriptionSetupWorker.run_once` did."""

    leased: int = 0
    done: int = 0
    retried: int = 0
    abandoned: int = 0


Create = Callable[[MeetingRow], Awaitable[SubscriptionRow]]
Discard = Callable[[SubscriptionRow], Awaitable[None]]
VisitOver = Callable[[MeetingRow, datetime], Awaitable[bool]]
Abandoned = Callable[[MeetingRow, str], Awaitable[None]]
"""Called with the meeting and the reason once its setup is abandoned (the runtime reconciles a
visit that ended without a subscription from its attendance report)."""


class SubscriptionSetupWorker:
    """Creates the queued meeting subscriptions off the launch's path (requirement D1).

    A launch queues its meeting (:meth:`request`, one durable row, idempotent per meeting); this
    worker leases due setups (``SKIP LOCKED``: one instance per meeting), creates each at Graph and
    stores the subscription and "done" in one transaction. A failure is retried with exponential
    backoff (2 s doubling to 5 min, with jitter) until it succeeds or the visit is over, cancelled
    or unknown — then the setup is ``abandoned``: counted, alerted, never retried (and an ended
    visit is handed to ``abandoned``, which reconciles it from the report). A worker that
    dies mid-create loses its lease (:data:`SETUP_LEASE`) and another one retries.
    """

    def __init__(
        self,
        store: SetupStore,
        *,
        create: Create,
        discard: Discard,
        visit_over: VisitOver,
        worker_id: str,
        abandoned: Abandoned | None = None,
        clock: Clock = utc_now,
        batch: int = 64,
        concurrency: int = 16,
        retry_first: timedelta = SETUP_RETRY_FIRST,
        retry_max: timedelta = SETUP_RETRY_MAX,
        lease: timedelta = SETUP_LEASE,
    ) -> None:
        self._store = store
        self._create = create
        self._discard = discard
        self._visit_over = visit_over
        self._abandoned = abandoned
        self._worker = worker_id
        self._clock = clock
        self._batch = batch
        self._limiter = anyio.CapacityLimiter(concurrency)
        self.retry_first, self.retry_max, self.lease = retry_first, retry_max, lease

    async def request(self, meeting: MeetingRow) -> bool:
        """Queue ``meeting`` (durably, before the launch answers); ``False`` if it already is."""
        now = self._clock()
        keep = max(meeting.end, now) + SETUP_KEEP
        return await self._store.request_subscription_setup(
            meeting.org_id, meeting.external_id, now=now, keep_until=keep
        )

    def backoff(self, attempts: int) -> timedelta:
        """The wait before attempt ``attempts + 1``: doubling from ``retry_first``, at most
        ``retry_max``, minus up to a fifth (jitter, so a fleet of retries spreads out)."""
        base = min(self.retry_first * (1 << min(max(attempts - 1, 0), 20)), self.retry_max)
        return base - base * (secrets.randbelow(201) / 1000)

    async def run_once(self) -> SetupReport:
        """Lease due setups (one batch) and work on them concurrently."""
        now = self._clock()
        setups = await self._store.lease_subscription_setups(
            worker=self._worker, limit=self._batch, now=now, lease_until=now + self.lease
        )
        outcomes: list[str] = []

        async def one(setup: SubscriptionSetup) -> None:
            async with self._limiter:
                outcomes.append(await self._one(setup))

        async with anyio.create_task_group() as group:
            for setup in setups:
                group.start_soon(one, setup)
        return SetupReport(
            leased=len(setups),
            done=outcomes.count("done"),
            retried=outcomes.count("retry"),
            abandoned=outcomes.count("abandoned"),
        )

    async def _one(self, setup: SubscriptionSetup) -> str:
        """One leased setup; every failure ends in a retry, never in the other setups' way
        (if even the retry cannot be stored, the lease runs out and the setup comes back)."""
        try:
            return await self._attempt(setup)
        except TeamsEhrError as exc:
            try:
                return await self._retry(setup, exc.reason)
            except TeamsEhrError:
                return "lost"

    async def _attempt(self, setup: SubscriptionSetup) -> str:
        meeting = await self._store.get_meeting(setup.org_id, setup.external_id)
        if meeting is None:
            return await self._abandon(setup, "meeting_unknown")
        if meeting.state != "active":
            return await self._abandon(setup, "meeting_cancelled")
        if await self._visit_over(meeting, self._clock()):
            outcome = await self._abandon(setup, "visit_ended")
            if self._abandoned is not None:
                await self._abandoned(meeting, "visit_ended")
            return outcome
        try:
            row = await self._create(meeting)
        except TeamsEhrError as exc:
            return await self._retry(setup, exc.reason)
        try:
            stored = await self._store.complete_subscription_setup(row, worker=self._worker)
        except TeamsEhrError as exc:
            await self._discard(row)
            return await self._retry(setup, exc.reason)
        if not stored:  # the lease ran out and another worker owns the setup now
            await self._discard(row)
            return "lost"
        metrics.record_subscription_setup("done")
        return "done"

    async def _retry(self, setup: SubscriptionSetup, reason: str) -> str:
        wait = self.backoff(setup.attempts)
        _log.error(
            "attendance setup failed (%s); retry %d in %.1f s",
            reason,
            setup.attempts,
            wait.total_seconds(),
            extra={"alert": "attendance_setup"},
        )
        metrics.record_subscription_setup("retry", reason=reason)
        await self._store.retry_subscription_setup(
            setup.org_id,
            setup.external_id,
            worker=self._worker,
            not_before=self._clock() + wait,
            reason=reason,
        )
        return "retry"

    async def _abandon(self, setup: SubscriptionSetup, reason: str) -> str:
        if setup.attempts > 1 or reason == "visit_ended":
            _log.error(
                "attendance setup abandoned (%s) after %d attempts (last: %s)",
                reason,
                setup.attempts - 1,
                setup.last_reason or "none",
                extra={"alert": "attendance_setup_abandoned"},
            )
        metrics.record_subscription_setup("abandoned", reason=reason)
        await self._store.abandon_subscription_setup(
            setup.org_id, setup.external_id, worker=self._worker, reason=reason
        )
        return "abandoned"
