"""The storage contract (requirements C5, C6): records and one narrow protocol per consumer.

Every area states what it needs from storage here, and :class:`Store` is all of them together.
SQLite (``store.sqlite``, the zero-setup default) and PostgreSQL (``store.postgres``, for many
instances) implement :class:`Store`; one contract test suite runs on both.

Rules every implementation keeps:

* Every query is scoped to an organization, except the lookups whose key is itself an unguessable
  hash (state, join-link token) or the issuer registry.
* Fields named ``payload``, ``join_url`` and ``client_state`` are secrets or PHI-bearing: they are
  encrypted at rest with AES-GCM, the associated data bound to the organization and the row key.
* About people, only the EHR user id ↔ Microsoft identity mapping is stored; everything else is
  IDs of organizations, meetings and rows, hashes, times and role codes.
* All times are aware UTC datetimes; methods that depend on "now" take it as a parameter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, runtime_checkable

JsonObject = dict[str, Any]

# -- organizations (requirements C1, C2) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrganizationRow:
    """An organization's configuration document, owned and validated by ``teams_ehr.orgs``."""

    org_id: str
    version: int
    document: JsonObject


@dataclass(frozen=True, slots=True)
class IssuerBinding:
    """Which organization environment an approved canonical FHIR base belongs to (requirement A1)."""

    canonical_base: str
    org_id: str
    environment: Literal["test", "production"]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    org_id: str
    seq: int
    at: datetime
    actor: str
    action: str
    detail: JsonObject


class OrganizationStore(Protocol):
    async def put_organization(
        self, org_id: str, document: JsonObject, *, expected_version: int | None
    ) -> int:
        """Create (``expected_version=None``) or replace at that version; returns the new
        version. Raises ``StorageConflictError`` on a version mismatch or duplicate create."""
        ...

    async def get_organization(self, org_id: str) -> OrganizationRow | None: ...

    async def list_organizations(self) -> Sequence[OrganizationRow]: ...

    async def claim_issuer(self, binding: IssuerBinding) -> None:
        """Bind a canonical base to an org environment; ``StorageConflictError`` if another
        organization holds it (one active organization per canonical base URL)."""
        ...

    async def release_issuer(self, canonical_base: str, org_id: str) -> None: ...

    async def resolve_issuer(self, canonical_base: str) -> IssuerBinding | None: ...

    async def append_audit(
        self, org_id: str, *, at: datetime, actor: str, action: str, detail: JsonObject
    ) -> AuditEntry:
        """Append-only: there is no update or delete of audit entries."""
        ...

    async def list_audit(self, org_id: str) -> Sequence[AuditEntry]: ...


# -- launch state (requirements A3, A4, A10) -------------------------------------------------------


class PendingAuthorizationStore(Protocol):
    async def put_pending(
        self, key: str, *, org_id: str, payload: bytes, expires_at: datetime
    ) -> None:
        """Store a pending authorization under ``key`` (a hash of ``state``, never the state)."""
        ...

    async def take_pending(self, key: str, *, now: datetime) -> tuple[str, bytes] | None:
        """Atomically remove and return ``(org_id, payload)``; ``None`` if unknown or expired
        (an expired row is removed too). A second take of the same key returns ``None``."""
        ...

    async def replace_pending(
        self,
        key: str,
        *,
        org_id: str,
        payload: bytes,
        expires_at: datetime,
        now: datetime,
        keep_live: bool = False,
    ) -> bytes:
        """In one transaction, put ``payload`` under ``key`` in place of whatever is there; with
        ``keep_live`` a payload still live at ``now`` is kept instead (its expiry becomes
        ``expires_at``). Returns the payload the key now holds; a key held by another ``org_id``
        raises :class:`~teams_ehr.errors.StorageConflictError` and changes nothing."""
        ...


class NonceStore(Protocol):
    async def remember_once(self, namespace: str, key: str, *, expires_at: datetime) -> bool:
        """``True`` the first time ``(namespace, key)`` is seen before it expires, else
        ``False``. Keys are hashes (launch values, context links, jti)."""
        ...

    async def count_hit(self, bucket: str, *, window_start: datetime) -> int:
        """Increment and return the hit count of ``bucket`` in the window (rate limits)."""
        ...


# -- identity map (requirement B6) -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdentityLink:
    org_id: str
    ehr_issuer: str
    ehr_user_id: str
    tenant_id: str
    object_id: str
    linked_at: datetime


class IdentityMapStore(Protocol):
    async def get_identity(
        self, org_id: str, ehr_issuer: str, ehr_user_id: str
    ) -> IdentityLink | None: ...

    async def bind_identity(self, link: IdentityLink) -> None:
        """``StorageConflictError`` if the EHR user is already bound (re-binding needs unlink)."""
        ...

    async def unlink_identity(self, org_id: str, ehr_issuer: str, ehr_user_id: str) -> bool: ...


# -- meetings and join links (requirements B2, B5, C4) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class MeetingRow:
    org_id: str
    external_id: str
    organizer_oid: str
    meeting_id: str
    join_url: str = field(repr=False)
    start: datetime
    end: datetime
    state: Literal["active", "cancelled"]
    department: str | None = None


class MeetingStore(Protocol):
    async def put_meeting(self, row: MeetingRow) -> None:
        """Insert or replace by ``(org_id, external_id)``."""
        ...

    async def get_meeting(self, org_id: str, external_id: str) -> MeetingRow | None: ...

    async def find_meeting_by_id(self, meeting_id: str) -> MeetingRow | None:
        """Lookup by Graph meeting id (webhooks); the caller checks the organization."""
        ...


@dataclass(frozen=True, slots=True)
class JoinLinkRow:
    token_hash: str
    org_id: str
    external_id: str
    not_before: datetime
    not_after: datetime
    revoked: bool = False


class JoinLinkStore(Protocol):
    async def put_join_link(self, row: JoinLinkRow) -> None: ...

    async def get_join_link(self, token_hash: str) -> JoinLinkRow | None: ...

    async def revoke_join_links(self, org_id: str, external_id: str) -> int: ...


# -- attendance: subscriptions, inbox, outbox, facts (requirements D1–D7) --------------------------


@dataclass(frozen=True, slots=True)
class SubscriptionRow:
    subscription_id: str
    org_id: str
    external_id: str
    client_state: str = field(repr=False)
    expires_at: datetime
    state: Literal["pending", "active", "removed"]


class SubscriptionStore(Protocol):
    async def put_subscription(self, row: SubscriptionRow) -> None: ...

    async def get_subscription(self, subscription_id: str) -> SubscriptionRow | None: ...

    async def list_subscriptions_expiring(self, before: datetime) -> Sequence[SubscriptionRow]: ...


class HandshakeStore(Protocol):
    """Webhook validation windows shared by every instance (requirement C6; threat T21): one
    row per window, however long it lasts."""

    async def open_handshake(
        self, handshake_id: str, kinds: Sequence[str], *, expires_at: datetime
    ) -> None:
        """Record a window for ``kinds`` (lower-case words) until ``expires_at``; windows that
        have expired are deleted in the same transaction."""
        ...

    async def close_handshake(self, handshake_id: str) -> None:
        """Delete the window (closing early; unknown ids are ignored)."""
        ...

    async def handshake_pending(self, kind: str, *, now: datetime) -> bool:
        """Whether a window for ``kind`` is open at ``now`` (a read: probes write nothing)."""
        ...


SetupState = Literal["pending", "leased", "done", "abandoned"]
SetupCounts = dict[str, int]
"""Subscription setups per state (``pending``, ``leased``, ``done``, ``abandoned``) and
``retrying``: pending or leased setups that failed at least once."""


@dataclass(frozen=True, slots=True)
class SubscriptionSetup:
    """A meeting whose call-event subscription is still to be created (or was)."""

    org_id: str
    external_id: str
    attempts: int
    created_at: datetime
    last_reason: str | None = None


class SubscriptionSetupStore(Protocol):
    """The durable queue of meeting subscriptions to create (requirement D1): one row per
    meeting, leased like the outbox (``SKIP LOCKED``), so one instance at a time works on it."""

    async def request_subscription_setup(
        self, org_id: str, external_id: str, *, now: datetime, keep_until: datetime
    ) -> bool:
        """Queue the meeting, due ``now``; ``False`` if it is already queued or done (the row is
        kept until ``keep_until`` once finished, so a repeat launch does not subscribe again)."""
        ...

    async def request_missing_subscription_setups(
        self, *, now: datetime, ended_after: datetime, keep_for: timedelta
    ) -> int:
        """Queue every active meeting ending after ``ended_after`` that has neither a setup row
        nor a live subscription (a launch that died between storing its meeting and queueing
        it); finished rows are kept ``keep_for`` after the meeting's end. Returns how many."""
        ...

    async def lease_subscription_setups(
        self, *, worker: str, limit: int, now: datetime, lease_until: datetime
    ) -> Sequence[SubscriptionSetup]:
        """Lease due setups (expired leases return); ``attempts`` counts leases."""
        ...

    async def complete_subscription_setup(self, row: SubscriptionRow, *, worker: str) -> bool:
        """Store ``row`` (as :meth:`SubscriptionStore.put_subscription`) and mark the setup of
        its meeting done, in one transaction; ``False`` (and nothing stored) if the lease was
        lost."""
        ...

    async def retry_subscription_setup(
        self, org_id: str, external_id: str, *, worker: str, not_before: datetime, reason: str
    ) -> bool: ...

    async def abandon_subscription_setup(
        self, org_id: str, external_id: str, *, worker: str, reason: str
    ) -> bool:
        """Stop trying (the visit is over or cancelled); the row stays, counted ``abandoned``."""
        ...

    async def subscription_setup_counts(self) -> SetupCounts: ...

    async def purge_subscription_setups(self, *, now: datetime, limit: int = 10_000) -> int:
        """Delete finished setups whose ``keep_until`` has passed; returns how many."""
        ...


@dataclass(frozen=True, slots=True)
class InboxItem:
    org_id: str
    dedupe_key: str
    payload: bytes = field(repr=False)
    received_at: datetime
    item_id: int | None = None


class InboxStore(Protocol):
    async def append_inbox(self, items: Sequence[InboxItem]) -> int:
        """Commit items durably in one transaction; duplicates (same org and dedupe key) are
        skipped. Returns how many were new. Raises ``StorageError`` if nothing could commit."""
        ...

    async def claim_inbox(
        self, *, worker: str, limit: int, now: datetime, lease_until: datetime
    ) -> Sequence[InboxItem]:
        """Lease unprocessed items (``SKIP LOCKED`` on PostgreSQL); expired leases return."""
        ...

    async def complete_inbox(self, item_ids: Sequence[int], *, worker: str) -> None: ...


@dataclass(frozen=True, slots=True)
class OutboxItem:
    org_id: str
    idempotency_key: str
    kind: str
    payload: bytes = field(repr=False)
    not_before: datetime
    created_at: datetime
    item_id: int | None = None
    attempts: int = 0
    last_reason: str | None = None


OutboxState = Literal["pending", "leased", "delivered", "dead"]


class OutboxStore(Protocol):
    async def enqueue_outbox(self, items: Sequence[OutboxItem]) -> int:
        """Enqueue; an existing ``(org_id, idempotency_key)`` is skipped. Returns new count."""
        ...

    async def lease_outbox(
        self, *, worker: str, limit: int, now: datetime, lease_until: datetime
    ) -> Sequence[OutboxItem]:
        """Lease due items; no item is leased to two workers at once (``SKIP LOCKED``)."""
        ...

    async def mark_delivered(self, item_id: int, *, worker: str) -> bool:
        """Delivered items drop their payload (purged on delivery). ``False`` if the lease was
        lost (another worker now owns it)."""
        ...

    async def mark_retry(
        self, item_id: int, *, worker: str, not_before: datetime, reason: str
    ) -> bool: ...

    async def mark_dead(self, item_id: int, *, worker: str, reason: str) -> bool: ...

    async def outbox_counts(self) -> dict[OutboxState, int]: ...

    async def list_dead(self, org_id: str | None = None) -> Sequence[OutboxItem]: ...

    async def requeue_dead(self, item_id: int, *, now: datetime) -> bool: ...


@dataclass(frozen=True, slots=True)
class AttendanceFactRow:
    """One attendance fact without identities: role codes, kinds and source times only."""

    org_id: str
    external_id: str
    fact_key: str
    kind: str
    role: str
    participant_key: str
    at: datetime
    department: str | None = None


class AttendanceFactStore(Protocol):
    async def record_facts(self, rows: Sequence[AttendanceFactRow]) -> int:
        """Insert; an existing ``(org_id, fact_key)`` is skipped. Returns new count."""
        ...

    async def list_facts(self, org_id: str, external_id: str) -> Sequence[AttendanceFactRow]: ...

    async def list_org_facts(
        self, org_id: str, *, since: datetime, until: datetime
    ) -> Sequence[AttendanceFactRow]: ...


# -- retention (requirements C5, D5; invariants I1, I6) --------------------------------------------

PurgeCounts = dict[str, int]
"""Rows purged (or, on a dry run, purgeable) per kind: ``inbox``, ``outbox_delivered``,
``outbox_dead``, ``pending_authorizations``, ``nonces``."""


class RetentionStore(Protocol):
    async def purge_expired(
        self,
        *,
        now: datetime,
        inbox_keep: timedelta,
        outbox_keep: timedelta,
        dead_keep: timedelta,
        limit: int = 10_000,
        dry_run: bool = False,
    ) -> PurgeCounts:
        """Delete rows whose purpose is over, at most ``limit`` per kind, in small batches
        (one short transaction each, so a large purge never holds the write lock for long):

        * ``inbox``: **processed** rows whose ``processed_at`` is older than ``inbox_keep``. The
          row is the dedupe record of a Graph notification, so keep it longer than Graph
          redelivers (up to 4 h, invariant I1). Unprocessed or leased rows stay.
        * ``outbox_delivered``: **delivered** rows delivered more than ``outbox_keep`` ago
          (invariant I6: ≤ 24 h after delivery). Pending and leased rows stay.
        * ``outbox_dead``: dead letters dead-lettered more than ``dead_keep`` ago (invariant I6:
          ``T_retain``). A requeued letter is pending again and stays.
        * ``pending_authorizations`` and ``nonces``: rows expired at ``now`` (any age; expired
          rows are already refused by ``take_pending`` and ``remember_once``).

        Organizations, issuer bindings, audit, identity links, meetings, join links,
        subscriptions and attendance facts are never touched (they have their own lifecycles).
        ``dry_run`` counts what would go (capped at ``limit``) and deletes nothing."""
        ...


# -- live events across instances (requirements C6, D3) --------------------------------------------


class EventBus(Protocol):
    async def publish(self, channel: str, message: str) -> None:
        """Deliver ``message`` (≤ 7,000 bytes) to every subscriber of ``channel`` on every
        instance (PostgreSQL ``LISTEN/NOTIFY``; in-process on SQLite)."""
        ...

    def subscribe(self, channel: str) -> AsyncIterator[str]:
        """Messages published on ``channel`` after the subscription started."""
        ...


@runtime_checkable
class Store(
    OrganizationStore,
    PendingAuthorizationStore,
    NonceStore,
    IdentityMapStore,
    MeetingStore,
    JoinLinkStore,
    SubscriptionStore,
    HandshakeStore,
    SubscriptionSetupStore,
    InboxStore,
    OutboxStore,
    AttendanceFactStore,
    RetentionStore,
    EventBus,
    Protocol,
):
    """Everything above, plus lifecycle. Open with ``async with``; ``migrate()`` is idempotent."""

    async def migrate(self) -> None: ...

    async def aclose(self) -> None: ...
