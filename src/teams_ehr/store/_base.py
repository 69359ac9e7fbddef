"""The storage semantics, once, for both engines (requirement C5; threats T16, T27, docs/security.md#delivery-invariants).

:class:`SqlStore` implements every method of :class:`~teams_ehr.store.protocol.Store` except the
lifecycle and the event bus as short lists of statements (:class:`Stmt`) that the engine runs in
**one transaction** (``_tx``): all of it commits or none of it does. Engines differ only in how
they run a transaction, encode times, and lock (PostgreSQL serializes audit appends per org with
an advisory lock; SQLite's ``BEGIN IMMEDIATE`` already serializes writers).

Secrets are sealed before the transaction and opened after it, so no cryptography runs while
the database write lock is held, and a value that fails to decrypt never rolls back a
single-use take.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Literal, Self, cast

from teams_ehr._types import Clock
from teams_ehr.errors import StorageConflictError, UsageError
from teams_ehr.store import _common as c
from teams_ehr.store import _sql as q
from teams_ehr.store.crypto import FieldCipher
from teams_ehr.store.protocol import (
    AttendanceFactRow,
    AuditEntry,
    IdentityLink,
    InboxItem,
    IssuerBinding,
    JoinLinkRow,
    JsonObject,
    MeetingRow,
    OrganizationRow,
    OutboxItem,
    OutboxState,
    PurgeCounts,
    SetupCounts,
    SubscriptionRow,
    SubscriptionSetup,
)

Mode = Literal["count", "one", "all", "many"]


@dataclass(frozen=True, slots=True)
class Stmt:
    """One statement: ``count`` → rows changed, ``one``/``all`` → rows, ``many`` → executemany
    (``args`` is a list of tuples) → rows changed."""

    sql: str
    args: Sequence[Any] = ()
    mode: Mode = "count"


class SqlStore(ABC):
    """Everything but the engine's connection handling and events, on top of :meth:`_tx`."""

    def __init__(self, *, cipher: FieldCipher, clock: Clock) -> None:
        self._sealer = c.Sealer(cipher)
        self._clock = clock
        self._writes = 0

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    @abstractmethod
    async def open(self) -> None:
        """Connect and, unless disabled, apply the migrations."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close every connection; the store can be opened again."""

    @abstractmethod
    async def _tx(
        self, stmts: Sequence[Stmt], *, write: bool = True, durable: bool = False
    ) -> list[Any]:
        """Run ``stmts`` in one transaction (``durable``: fsync before returning)."""

    @abstractmethod
    def _enc(self, value: datetime) -> Any:
        """A time as the engine stores it."""

    @abstractmethod
    def _dec(self, value: Any) -> datetime:
        """A stored time as an aware UTC datetime."""

    def _span(self, value: timedelta) -> Any:
        """A duration as the engine adds it to a stored time (an ``interval`` here)."""
        return value

    def _audit_guard(self, org_id: str) -> list[Stmt]:
        """Statements that serialize audit appends of one org (none needed on SQLite)."""
        return []

    async def _read(self, sql: str, args: Sequence[Any], mode: Mode = "all") -> Any:
        return (await self._tx([Stmt(sql, args, mode)], write=False))[0]

    async def _write(self, sql: str, args: Sequence[Any], mode: Mode, durable: bool) -> Any:
        return (await self._tx([Stmt(sql, args, mode)], durable=durable))[0]

    def _sweep_due(self) -> bool:
        self._writes += 1
        return self._writes % c.PURGE_EVERY == 0

    # -- organizations, issuers, audit --------------------------------------------------------

    async def put_organization(
        self, org_id: str, document: JsonObject, *, expected_version: int | None
    ) -> int:
        c.require_text(org_id=org_id)
        text = c.dump_json(document)
        if expected_version is None:
            if await self._write(q.ORG_INSERT, (org_id, text), "count", True) != 1:
                raise StorageConflictError("organization exists", reason="organization_exists")
            return 1
        args = (text, org_id, expected_version)
        if await self._write(q.ORG_UPDATE, args, "count", True) != 1:
            raise StorageConflictError("organization version mismatch", reason="version_mismatch")
        return expected_version + 1

    async def get_organization(self, org_id: str) -> OrganizationRow | None:
        row = await self._read(q.ORG_GET, (org_id,), "one")
        return None if row is None else OrganizationRow(row[0], int(row[1]), c.load_json(row[2]))

    async def list_organizations(self) -> Sequence[OrganizationRow]:
        rows = await self._read(q.ORG_LIST, ())
        return [OrganizationRow(r[0], int(r[1]), c.load_json(r[2])) for r in rows]

    async def claim_issuer(self, binding: IssuerBinding) -> None:
        """Same organization re-claiming is idempotent (and may move the environment)."""
        c.require_text(canonical_base=binding.canonical_base, org_id=binding.org_id)
        args = (binding.canonical_base, binding.org_id, binding.environment)
        if await self._write(q.ISSUER_CLAIM, args, "one", True) is None:
            raise StorageConflictError("FHIR base URL held by another org", reason="issuer_claimed")

    async def release_issuer(self, canonical_base: str, org_id: str) -> None:
        await self._write(q.ISSUER_RELEASE, (canonical_base, org_id), "count", True)

    async def resolve_issuer(self, canonical_base: str) -> IssuerBinding | None:
        row = await self._read(q.ISSUER_GET, (canonical_base,), "one")
        return None if row is None else IssuerBinding(row[0], row[1], row[2])

    async def append_audit(
        self, org_id: str, *, at: datetime, actor: str, action: str, detail: JsonObject
    ) -> AuditEntry:
        c.require_text(org_id=org_id, actor=actor, action=action)
        args = (org_id, self._enc(at), actor, action, c.dump_json(detail), org_id)
        stmts = [*self._audit_guard(org_id), Stmt(q.AUDIT_APPEND, args, "one")]
        row = (await self._tx(stmts, durable=True))[-1]
        return AuditEntry(org_id, int(row[0]), c.aware(at), actor, action, dict(detail))

    async def list_audit(self, org_id: str) -> Sequence[AuditEntry]:
        rows = await self._read(q.AUDIT_LIST, (org_id,))
        return [
            AuditEntry(r[0], int(r[1]), self._dec(r[2]), r[3], r[4], c.load_json(r[5]))
            for r in rows
        ]

    # -- launch state, replay cache, rate limits ----------------------------------------------

    async def put_pending(
        self, key: str, *, org_id: str, payload: bytes, expires_at: datetime
    ) -> None:
        c.require_text(key=key, org_id=org_id)
        table = "pending_authorizations"
        sealed = self._sealer.seal(payload, org_id=org_id, table=table, row_key=key)
        stmts = [Stmt(q.PENDING_INSERT, (key, org_id, sealed, self._enc(expires_at)))]
        if self._sweep_due():
            stmts.insert(0, Stmt(q.PENDING_SWEEP, (self._enc(self._clock()),)))
        if (await self._tx(stmts))[-1] != 1:
            raise StorageConflictError("duplicate pending key", reason="duplicate_key")

    async def take_pending(self, key: str, *, now: datetime) -> tuple[str, bytes] | None:
        cutoff = c.aware(now)
        row = await self._write(q.PENDING_TAKE, (key,), "one", False)
        if row is None or self._dec(row[2]) <= cutoff:
            return None
        org_id = str(row[0])
        table = "pending_authorizations"
        return org_id, self._sealer.open(row[1], org_id=org_id, table=table, row_key=key)

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
        c.require_text(key=key, org_id=org_id)
        table = "pending_authorizations"
        sealed = self._sealer.seal(payload, org_id=org_id, table=table, row_key=key)
        insert = Stmt(q.PENDING_INSERT, (key, org_id, sealed, self._enc(expires_at)))
        if not keep_live:
            if (await self._tx([Stmt(q.PENDING_DROP, (key, org_id)), insert]))[-1] != 1:
                raise StorageConflictError("pending key of another org", reason="duplicate_key")
            return payload
        stmts = [
            Stmt(q.PENDING_DROP_EXPIRED, (key, org_id, self._enc(c.aware(now)))),
            insert,
            Stmt(q.PENDING_SET_EXPIRY, (self._enc(expires_at), key, org_id)),
            Stmt(q.PENDING_GET, (key, org_id), "one"),
        ]
        row = (await self._tx(stmts))[-1]
        if row is None:  # the key is held by another organization's row
            raise StorageConflictError("pending key of another org", reason="duplicate_key")
        return self._sealer.open(row[0], org_id=org_id, table=table, row_key=key)

    async def remember_once(self, namespace: str, key: str, *, expires_at: datetime) -> bool:
        c.require_text(namespace=namespace, key=key)
        now = self._enc(self._clock())
        stmts = [
            Stmt(q.NONCE_DROP_EXPIRED, (namespace, key, now)),
            Stmt(q.NONCE_INSERT, (namespace, key, self._enc(expires_at))),
        ]
        if self._sweep_due():
            stmts.insert(0, Stmt(q.NONCE_SWEEP, (now,)))
        return bool((await self._tx(stmts, durable=True))[-1] == 1)

    async def count_hit(self, bucket: str, *, window_start: datetime) -> int:
        """Counters of earlier windows of the bucket are dropped; any counter older than a day
        is swept now and then."""
        c.require_text(bucket=bucket)
        start = self._enc(window_start)
        stmts = [Stmt(q.RATE_HIT, (bucket, start), "one"), Stmt(q.RATE_DROP_OLD, (bucket, start))]
        if self._sweep_due():
            stale = self._enc(self._clock() - timedelta(days=1))
            stmts.append(Stmt(q.RATE_SWEEP, (stale,)))
        return int((await self._tx(stmts))[0][0])

    # -- identity map -------------------------------------------------------------------------

    def _identity(self, r: Sequence[Any]) -> IdentityLink:
        return IdentityLink(r[0], r[1], r[2], r[3], r[4], self._dec(r[5]))

    async def get_identity(
        self, org_id: str, ehr_issuer: str, ehr_user_id: str
    ) -> IdentityLink | None:
        row = await self._read(q.IDENTITY_GET, (org_id, ehr_issuer, ehr_user_id), "one")
        return None if row is None else self._identity(row)

    async def bind_identity(self, link: IdentityLink) -> None:
        """Binding the same (tid, oid) again is a no-op; another one needs an unlink first."""
        key = (link.org_id, link.ehr_issuer, link.ehr_user_id)
        c.require_text(org_id=key[0], ehr_issuer=key[1], ehr_user_id=key[2])
        c.require_text(tenant_id=link.tenant_id, object_id=link.object_id)
        args = (*key, link.tenant_id, link.object_id, self._enc(link.linked_at))
        stmts = [Stmt(q.IDENTITY_INSERT, args), Stmt(q.IDENTITY_GET, key, "one")]
        inserted, row = await self._tx(stmts, durable=True)
        if inserted != 1 and (row[3], row[4]) != (link.tenant_id, link.object_id):
            raise StorageConflictError("EHR user is already bound", reason="identity_bound")

    async def unlink_identity(self, org_id: str, ehr_issuer: str, ehr_user_id: str) -> bool:
        args = (org_id, ehr_issuer, ehr_user_id)
        return bool(await self._write(q.IDENTITY_DELETE, args, "count", True) == 1)

    # -- meetings, join links, subscriptions --------------------------------------------------

    async def put_meeting(self, row: MeetingRow) -> None:
        c.require_text(org_id=row.org_id, external_id=row.external_id, meeting_id=row.meeting_id)
        sealed = self._sealer.seal_text(
            row.join_url, org_id=row.org_id, table="meetings", row_key=row.external_id
        )
        args = (
            *(row.org_id, row.external_id, row.organizer_oid, row.meeting_id, sealed),
            *(self._enc(row.start), self._enc(row.end), row.state, row.department),
        )
        await self._write(q.MEETING_UPSERT, args, "count", True)

    def _meeting(self, r: Sequence[Any]) -> MeetingRow:
        url = self._sealer.open_text(r[4], org_id=r[0], table="meetings", row_key=r[1])
        return MeetingRow(r[0], r[1], r[2], r[3], url, self._dec(r[5]), self._dec(r[6]), r[7], r[8])

    async def get_meeting(self, org_id: str, external_id: str) -> MeetingRow | None:
        row = await self._read(q.MEETING_GET, (org_id, external_id), "one")
        return None if row is None else self._meeting(row)

    async def find_meeting_by_id(self, meeting_id: str) -> MeetingRow | None:
        row = await self._read(q.MEETING_BY_ID, (meeting_id,), "one")
        return None if row is None else self._meeting(row)

    async def put_join_link(self, row: JoinLinkRow) -> None:
        c.require_text(token_hash=row.token_hash, org_id=row.org_id, external_id=row.external_id)
        args = (
            *(row.token_hash, row.org_id, row.external_id),
            *(self._enc(row.not_before), self._enc(row.not_after), bool(row.revoked)),
        )
        if await self._write(q.JOIN_INSERT, args, "count", True) != 1:
            raise StorageConflictError("duplicate join link", reason="duplicate_key")

    async def get_join_link(self, token_hash: str) -> JoinLinkRow | None:
        r = await self._read(q.JOIN_GET, (token_hash,), "one")
        if r is None:
            return None
        return JoinLinkRow(r[0], r[1], r[2], self._dec(r[3]), self._dec(r[4]), bool(r[5]))

    async def revoke_join_links(self, org_id: str, external_id: str) -> int:
        return int(await self._write(q.JOIN_REVOKE, (org_id, external_id), "count", True))

    async def put_subscription(self, row: SubscriptionRow) -> None:
        """Upsert by subscription id; a row of another organization is never overwritten."""
        c.require_text(subscription_id=row.subscription_id, org_id=row.org_id)
        sealed = self._sealer.seal_text(
            row.client_state, org_id=row.org_id, table="subscriptions", row_key=row.subscription_id
        )
        args = (
            *(row.subscription_id, row.org_id, row.external_id, sealed),
            self._enc(row.expires_at),
            row.state,
        )
        if await self._write(q.SUBSCRIPTION_UPSERT, args, "one", True) is None:
            raise StorageConflictError(
                "subscription of another org", reason="subscription_other_org"
            )

    def _subscription(self, r: Sequence[Any]) -> SubscriptionRow:
        secret = self._sealer.open_text(r[3], org_id=r[1], table="subscriptions", row_key=r[0])
        return SubscriptionRow(r[0], r[1], r[2], secret, self._dec(r[4]), r[5])

    async def get_subscription(self, subscription_id: str) -> SubscriptionRow | None:
        row = await self._read(q.SUBSCRIPTION_GET, (subscription_id,), "one")
        return None if row is None else self._subscription(row)

    async def list_subscriptions_expiring(self, before: datetime) -> Sequence[SubscriptionRow]:
        """Pending and active subscriptions expiring before ``before``, soonest first (removed
        subscriptions are not renewed, so not listed)."""
        rows = await self._read(q.SUBSCRIPTION_EXPIRING, (self._enc(before),))
        return [self._subscription(r) for r in rows]

    # -- validation handshakes, subscription setup ---------------------------------------------

    async def open_handshake(
        self, handshake_id: str, kinds: Sequence[str], *, expires_at: datetime
    ) -> None:
        """Not fsync'd: a window lost to a power cut only fails one subscription attempt,
        which its setup retries."""
        c.require_text(handshake_id=handshake_id)
        text = c.handshake_kinds(kinds)
        now = self._enc(self._clock())
        stmts = [
            Stmt(q.HANDSHAKE_SWEEP, (now,)),
            Stmt(q.HANDSHAKE_INSERT, (handshake_id, text, self._enc(expires_at))),
        ]
        await self._tx(stmts)

    async def close_handshake(self, handshake_id: str) -> None:
        await self._write(q.HANDSHAKE_DELETE, (handshake_id,), "count", False)

    async def handshake_pending(self, kind: str, *, now: datetime) -> bool:
        pattern = f"%{c.handshake_kinds([kind])}%"
        return await self._read(q.HANDSHAKE_PENDING, (self._enc(now), pattern), "one") is not None

    async def request_subscription_setup(
        self, org_id: str, external_id: str, *, now: datetime, keep_until: datetime
    ) -> bool:
        c.require_text(org_id=org_id, external_id=external_id)
        at = self._enc(now)
        args = (org_id, external_id, at, at, self._enc(keep_until))
        return bool(await self._write(q.SETUP_INSERT, args, "count", True) == 1)

    async def request_missing_subscription_setups(
        self, *, now: datetime, ended_after: datetime, keep_for: timedelta
    ) -> int:
        at = self._enc(now)
        args = (at, at, self._span(keep_for), self._enc(ended_after))
        return int(await self._write(q.SETUP_SWEEP_MISSING, args, "count", True))

    async def lease_subscription_setups(
        self, *, worker: str, limit: int, now: datetime, lease_until: datetime
    ) -> Sequence[SubscriptionSetup]:
        c.require_text(worker=worker)
        at = self._enc(now)
        args = (worker, self._enc(lease_until), at, at, c.check_limit(limit))
        rows = await self._write(q.SETUP_LEASE, args, "all", False)
        setups = [SubscriptionSetup(r[0], r[1], int(r[2]), self._dec(r[3]), r[4]) for r in rows]
        return sorted(setups, key=lambda s: (s.created_at, s.org_id, s.external_id))

    async def complete_subscription_setup(self, row: SubscriptionRow, *, worker: str) -> bool:
        """Durable: the subscription row is what every webhook checks notifications against."""
        c.require_text(subscription_id=row.subscription_id, org_id=row.org_id, worker=worker)
        sealed = self._sealer.seal_text(
            row.client_state, org_id=row.org_id, table="subscriptions", row_key=row.subscription_id
        )
        meeting = (row.org_id, row.external_id)
        sub = (row.subscription_id, *meeting, sealed, self._enc(row.expires_at), row.state)
        stmts = [
            Stmt(q.SETUP_DONE, (self._enc(self._clock()), *meeting, worker)),
            Stmt(q.SUBSCRIPTION_UPSERT_SET_UP, (*sub, *meeting, worker), "one"),
        ]
        done, stored = await self._tx(stmts, durable=True)
        if done != 1:
            return False
        if stored is None:
            raise StorageConflictError(
                "subscription of another org", reason="subscription_other_org"
            )
        return True

    async def retry_subscription_setup(
        self, org_id: str, external_id: str, *, worker: str, not_before: datetime, reason: str
    ) -> bool:
        c.require_text(reason=reason)
        args = (self._enc(not_before), reason, org_id, external_id, worker)
        return await self._mark(q.SETUP_RETRY, args)

    async def abandon_subscription_setup(
        self, org_id: str, external_id: str, *, worker: str, reason: str
    ) -> bool:
        c.require_text(reason=reason)
        args = (reason, self._enc(self._clock()), org_id, external_id, worker)
        return bool(await self._write(q.SETUP_ABANDON, args, "count", True) == 1)

    async def subscription_setup_counts(self) -> SetupCounts:
        counts: SetupCounts = dict.fromkeys((*c.SETUP_STATES, "retrying"), 0)
        for state, n, failed in await self._read(q.SETUP_COUNTS, ()):
            counts[str(state)] = int(n)
            if state in ("pending", "leased"):
                counts["retrying"] += int(failed or 0)
        return counts

    async def purge_subscription_setups(self, *, now: datetime, limit: int = 10_000) -> int:
        cutoff, limit = self._enc(now), c.check_limit(limit)
        purged = 0
        while purged < limit:
            batch = min(c.PURGE_BATCH_ROWS, limit - purged)
            deleted = int(await self._write(q.SETUP_PURGE, (cutoff, cutoff, batch), "count", False))
            purged += deleted
            if deleted < batch:
                break
        return purged

    # -- inbox --------------------------------------------------------------------------------

    async def append_inbox(self, items: Sequence[InboxItem]) -> int:
        """Committed durably (fsync'd) before returning (invariant I1), all or nothing for the batch."""
        if not items:
            return 0
        c.validate_inbox(items)
        seal = self._sealer.seal
        rows = [
            (
                i.org_id,
                i.dedupe_key,
                seal(i.payload, org_id=i.org_id, table="inbox", row_key=i.dedupe_key),
                self._enc(i.received_at),
            )
            for i in items
        ]
        return await self._insert_inbox(rows)

    async def _insert_inbox(self, rows: Sequence[tuple[Any, ...]]) -> int:
        """Insert sealed inbox rows durably; engines may coalesce concurrent calls."""
        return int(await self._write(q.INBOX_INSERT, rows, "many", True))

    async def claim_inbox(
        self, *, worker: str, limit: int, now: datetime, lease_until: datetime
    ) -> Sequence[InboxItem]:
        c.require_text(worker=worker)
        args = (worker, self._enc(lease_until), self._enc(now), c.check_limit(limit))
        rows = await self._write(q.INBOX_CLAIM, args, "all", False)
        return [
            InboxItem(
                org_id=r[1],
                dedupe_key=r[2],
                payload=self._sealer.open(r[3], org_id=r[1], table="inbox", row_key=r[2]),
                received_at=self._dec(r[4]),
                item_id=int(r[0]),
            )
            for r in sorted(rows, key=lambda r: int(r[0]))
        ]

    async def complete_inbox(self, item_ids: Sequence[int], *, worker: str) -> None:
        """Marks items processed (only while this worker holds them) and drops their payload."""
        if item_ids:
            now = self._enc(self._clock())
            rows = [(now, int(i), worker) for i in item_ids]
            await self._write(q.INBOX_COMPLETE, rows, "many", False)

    # -- outbox -------------------------------------------------------------------------------

    async def enqueue_outbox(self, items: Sequence[OutboxItem]) -> int:
        if not items:
            return 0
        c.validate_outbox(items)
        seal = self._sealer.seal
        rows = [
            (
                *(i.org_id, i.idempotency_key, i.kind),
                seal(i.payload, org_id=i.org_id, table="outbox", row_key=i.idempotency_key),
                *(self._enc(i.not_before), self._enc(i.created_at), i.attempts, i.last_reason),
            )
            for i in items
        ]
        return int(await self._write(q.OUTBOX_INSERT, rows, "many", True))

    def _outbox(self, rows: Sequence[Sequence[Any]]) -> list[OutboxItem]:
        return [c.outbox_item(self._sealer, r, decode_time=self._dec) for r in rows]

    async def lease_outbox(
        self, *, worker: str, limit: int, now: datetime, lease_until: datetime
    ) -> Sequence[OutboxItem]:
        """Lease due items, oldest first; ``attempts`` counts leases (a crash counts too)."""
        c.require_text(worker=worker)
        at = self._enc(now)
        args = (worker, self._enc(lease_until), at, at, c.check_limit(limit))
        items = self._outbox(await self._write(q.OUTBOX_LEASE, args, "all", False))
        return sorted(items, key=lambda i: (i.not_before, i.item_id or 0))

    async def _mark(self, sql: str, args: Sequence[Any]) -> bool:
        return bool(await self._write(sql, args, "count", False) == 1)

    async def mark_delivered(self, item_id: int, *, worker: str) -> bool:
        return await self._mark(q.OUTBOX_DELIVERED, (self._enc(self._clock()), item_id, worker))

    async def mark_retry(
        self, item_id: int, *, worker: str, not_before: datetime, reason: str
    ) -> bool:
        c.require_text(reason=reason)
        return await self._mark(q.OUTBOX_RETRY, (self._enc(not_before), reason, item_id, worker))

    async def mark_dead(self, item_id: int, *, worker: str, reason: str) -> bool:
        c.require_text(reason=reason)
        return await self._mark(q.OUTBOX_DEAD, (reason, self._enc(self._clock()), item_id, worker))

    async def outbox_counts(self) -> dict[OutboxState, int]:
        counts: dict[OutboxState, int] = dict.fromkeys(c.OUTBOX_STATES, 0)
        for state, n in await self._read(q.OUTBOX_COUNTS, ()):
            counts[cast(OutboxState, state)] = int(n)
        return counts

    async def list_dead(self, org_id: str | None = None) -> Sequence[OutboxItem]:
        if org_id is None:
            return self._outbox(await self._read(q.OUTBOX_DEAD_ALL, ()))
        return self._outbox(await self._read(q.OUTBOX_DEAD_ORG, (org_id,)))

    async def requeue_dead(self, item_id: int, *, now: datetime) -> bool:
        """Back to pending, due at ``now``, ``attempts`` reset (a fresh retry budget)."""
        return await self._mark(q.OUTBOX_REQUEUE, (self._enc(now), item_id))

    # -- attendance facts ---------------------------------------------------------------------

    async def record_facts(self, rows: Sequence[AttendanceFactRow]) -> int:
        if not rows:
            return 0
        c.validate_facts(rows)
        args = [
            (
                *(r.org_id, r.fact_key, r.external_id, r.kind, r.role, r.participant_key),
                *(self._enc(r.at), r.department),
            )
            for r in rows
        ]
        return int(await self._write(q.FACT_INSERT, args, "many", True))

    def _fact(self, r: Sequence[Any]) -> AttendanceFactRow:
        return AttendanceFactRow(r[0], r[2], r[1], r[3], r[4], r[5], self._dec(r[6]), r[7])

    async def list_facts(self, org_id: str, external_id: str) -> Sequence[AttendanceFactRow]:
        return [self._fact(r) for r in await self._read(q.FACTS_MEETING, (org_id, external_id))]

    async def list_org_facts(
        self, org_id: str, *, since: datetime, until: datetime
    ) -> Sequence[AttendanceFactRow]:
        args = (org_id, self._enc(since), self._enc(until))
        return [self._fact(r) for r in await self._read(q.FACTS_ORG, args)]

    # -- retention ----------------------------------------------------------------------------

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
        """See :meth:`~teams_ehr.store.protocol.RetentionStore.purge_expired`; each batch of at
        most ``PURGE_BATCH_ROWS`` rows is its own transaction."""
        at, limit = c.aware(now), c.check_limit(limit)
        keeps = {"inbox": inbox_keep, "outbox_delivered": outbox_keep, "outbox_dead": dead_keep}
        if any(keep < timedelta(0) for keep in keeps.values()):
            raise UsageError("retention windows must not be negative", reason="bad_store_argument")
        counts: PurgeCounts = {}
        for kind in q.PURGE_BATCH:
            cutoff = self._enc(at - keeps.get(kind, timedelta(0)))
            if dry_run:
                counts[kind] = int(
                    (await self._read(q.PURGE_COUNT[kind], (cutoff, limit), "one"))[0]
                )
                continue
            counts[kind] = 0
            while counts[kind] < limit:
                batch = min(c.PURGE_BATCH_ROWS, limit - counts[kind])
                args = (cutoff, cutoff, batch)
                deleted = int(await self._write(q.PURGE_BATCH[kind], args, "count", False))
                counts[kind] += deleted
                if deleted < batch:
                    break
        return counts
