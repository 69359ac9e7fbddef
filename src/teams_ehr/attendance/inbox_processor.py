"""From the durable inbox to attendance events, facts, the live roster and the outbox.

Requirements D1–D3; the worker half of docs/security.md#attendance-pipeline: claim inbox items
(leased, so several workers and crashed workers are safe), turn each stored call event into
:class:`AttendanceEvent` objects (role mapping needs the meeting's organizer, hashed), infer
``admitted`` from the stored facts, then

1. record the facts (idempotent by ``fact_key``),
2. hand the events to the ``sink`` (:class:`~.reconcile.OutboxSink`; idempotent by ``fact_key``),
3. publish them on the visit's roster channel — best effort, the UI resyncs from the facts,

and only then complete the item. An exception leaves the item leased; it returns when the lease
expires (at-least-once; every step above is idempotent, so redoing it is harmless). Lifecycle
envelopes go to the ``lifecycle`` handler (``SubscriptionManager.handle_lifecycle``). Sealed
envelopes (the webhook deferred decryption) are HMAC-checked, decrypted and parsed here first
(``security``); a forged one is dropped with a ``security_event`` log line.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import anyio

from teams_ehr._redact import get_logger
from teams_ehr._types import Clock, utc_now
from teams_ehr.attendance.events import (
    AttendanceEvent,
    Role,
    RoleMapper,
    events_from_envelope,
    infer_admissions,
)
from teams_ehr.attendance.notifications import (
    CallEventEnvelope,
    LifecycleEnvelope,
    ParticipantKeyer,
    SealedCallEventEnvelope,
    join_url_fingerprint,
    parse_inbox_envelope,
)
from teams_ehr.attendance.roster import roster_channel, roster_message
from teams_ehr.attendance.webhook import WebhookSecurity, unseal
from teams_ehr.errors import ConfigurationError, WebhookRejectedError
from teams_ehr.store.protocol import (
    AttendanceFactStore,
    EventBus,
    InboxItem,
    InboxStore,
    MeetingStore,
)

__all__ = ["EventSink", "InboxProcessor", "LifecycleHandler", "ProcessingReport"]

_log = get_logger(__name__)

EventSink = Callable[[Sequence[AttendanceEvent]], Awaitable[None]]
LifecycleHandler = Callable[[LifecycleEnvelope], Awaitable[None]]


@dataclass(frozen=True)
class ProcessingReport:
    claimed: int = 0
    completed: int = 0
    failed: int = 0
    events: int = 0
    new_facts: int = 0


class InboxProcessor:
    """One inbox worker; call :meth:`run_once` in a loop (or from a scheduler)."""

    def __init__(
        self,
        *,
        inbox: InboxStore,
        facts: AttendanceFactStore,
        meetings: MeetingStore,
        bus: EventBus,
        keyer: ParticipantKeyer,
        worker: str,
        sink: EventSink | None = None,
        lifecycle: LifecycleHandler | None = None,
        clock: Clock = utc_now,
        lease: timedelta = timedelta(minutes=2),
        tenant_user_role: Role = "provider",
        phone_role: Role = "other",
        security: WebhookSecurity | None = None,
    ) -> None:
        self._inbox = inbox
        self._facts = facts
        self._meetings = meetings
        self._bus = bus
        self._keyer = keyer
        self._worker = worker
        self._sink = sink
        self._lifecycle = lifecycle
        self._clock = clock
        self._lease = lease
        self._tenant_user_role: Role = tenant_user_role
        self._phone_role: Role = phone_role
        self._security = security

    async def run(self, *, stop: anyio.Event, poll_seconds: float = 1.0, limit: int = 100) -> None:
        """Process until ``stop`` is set: back to back while there is work, otherwise every
        ``poll_seconds``. A failing store is logged and retried at the next poll."""
        while not stop.is_set():
            try:
                report = await self.run_once(limit)
            except Exception as exc:
                _log.warning("inbox poll failed (%s)", getattr(exc, "reason", type(exc).__name__))
                report = ProcessingReport()
            if report.claimed < limit:
                with anyio.move_on_after(poll_seconds):
                    await stop.wait()

    async def run_once(self, limit: int = 100) -> ProcessingReport:
        """Claim up to ``limit`` items and process them; returns what happened."""
        now = self._clock()
        items = await self._inbox.claim_inbox(
            worker=self._worker, limit=limit, now=now, lease_until=now + self._lease
        )
        completed: list[int] = []
        failed = events = new_facts = 0
        for item in items:
            try:
                produced, recorded = await self._process(item)
            except Exception as exc:
                failed += 1
                reason = getattr(exc, "reason", type(exc).__name__)
                _log.warning("inbox item %s not processed (%s); will retry", item.item_id, reason)
                continue
            events += produced
            new_facts += recorded
            if item.item_id is not None:
                completed.append(item.item_id)
        if completed:
            await self._inbox.complete_inbox(completed, worker=self._worker)
        return ProcessingReport(len(items), len(completed), failed, events, new_facts)

    async def _process(self, item: InboxItem) -> tuple[int, int]:
        try:
            envelope = parse_inbox_envelope(item.payload)
        except ValueError:
            _log.error("inbox item %s is not an envelope; dropped", item.item_id)
            return 0, 0
        if envelope.org_id != item.org_id:
            _log.error("inbox item %s belongs to another organization; dropped", item.item_id)
            return 0, 0
        if isinstance(envelope, LifecycleEnvelope):
            if self._lifecycle is not None:
                await self._lifecycle(envelope)
            return 0, 0
        if isinstance(envelope, SealedCallEventEnvelope):
            if self._security is None:
                raise ConfigurationError("sealed inbox items need the webhook security settings")
            try:
                envelope = unseal(envelope, self._security)
            except WebhookRejectedError as exc:
                _log.warning(
                    "inbox item %s dropped: %s",
                    item.item_id,
                    exc.reason,
                    extra={"security_event": exc.reason},
                )
                return 0, 0
        return await self._call_event(envelope)

    async def _call_event(self, envelope: CallEventEnvelope) -> tuple[int, int]:
        meeting = await self._meetings.get_meeting(envelope.org_id, envelope.external_id)
        if meeting is not None and envelope.resource_fingerprint != join_url_fingerprint(
            meeting.join_url
        ):
            # threat T24: the notification must name the subscription's own meeting
            _log.warning(
                "call event for another meeting dropped",
                extra={"security_event": "resource_mismatch"},
            )
            return 0, 0
        organizer_key = (
            self._keyer.key(envelope.org_id, meeting.organizer_oid) if meeting is not None else None
        )
        mapper = RoleMapper(
            org_tenant_id=envelope.tenant_id,
            organizer_key=organizer_key,
            tenant_user_role=self._tenant_user_role,
            phone_role=self._phone_role,
        )
        events = events_from_envelope(envelope, mapper)
        if not events:
            if envelope.event_type not in ("rosterUpdated",):
                _log.info("call event type %r ignored", envelope.event_type[:64])
            return 0, 0
        prior = await self._facts.list_facts(envelope.org_id, envelope.external_id)
        events = infer_admissions(events, prior)
        department = meeting.department if meeting is not None else None
        recorded = await self._facts.record_facts([e.to_fact_row(department) for e in events])
        if self._sink is not None:
            await self._sink(events)
        channel = roster_channel(envelope.org_id, envelope.external_id)
        for event in events:
            try:
                await self._bus.publish(channel, roster_message(event))
            except Exception:
                _log.warning("roster publish failed; viewers resync from stored facts")
                break
        return len(events), recorded
