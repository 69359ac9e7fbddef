"""The Graph webhook, framework-free: validation handshake and change notifications
(requirement D1).

Integrations translate a request into :func:`handle_notifications`
and the returned :class:`WebhookResult` back into a response (design rule 11).

The validation handshake lives in :mod:`teams_ehr.attendance.handshake`.

**Notifications** (threats T22–T24, T34; invariant I1): size and depth caps, then per item: the
subscription must be ours and active, ``clientState`` equal (:func:`hmac.compare_digest`), the
item's tenant the organization's tenant; every ``validationTokens`` JWT is verified and must cover
each rich item's tenant; ``encryptedContent`` is HMAC-checked and decrypted; the event time must
be plausible (not > 5 min ahead, not older than Graph's 4 h retry window). Accepted items are
reduced to name-free envelopes and **committed to the inbox before the 2xx**; if that commit fails
the answer is ``503`` so Graph redelivers. Status policy, following Graph's guidance ("respond
202 … even if validation later fails … prevents rogue actors from finding out if they passed"):
a well-formed collection always gets ``202`` — forged or invalid items are dropped with a
``security_event`` log line and never stored; a body that is not a change-notification collection
gets ``400``/``413``; a key server we cannot reach (JWKS down) gets ``503`` so Graph retries.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from teams_ehr._redact import get_logger
from teams_ehr.attendance.notification_crypto import decrypt_encrypted_content
from teams_ehr.attendance.notifications import (
    CallEventEnvelope,
    ChangeNotification,
    ChangeNotificationCollection,
    EncryptedContent,
    LifecycleEnvelope,
    ParticipantKeyer,
    SealedCallEventEnvelope,
    parse_call_event,
    resource_fingerprint,
)
from teams_ehr.errors import RemoteError, TokenInvalidError, WebhookRejectedError
from teams_ehr.store.protocol import InboxItem, InboxStore, SubscriptionRow, SubscriptionStore

__all__ = [
    "MAX_BODY_BYTES",
    "ValidationTokenVerifier",
    "WebhookResult",
    "WebhookSecurity",
    "handle_notifications",
    "open_call_event",
    "unseal",
]

_log = get_logger(__name__)

MAX_BODY_BYTES = 1_048_576
MAX_JSON_DEPTH = 32
_TEXT = "text/plain; charset=utf-8"
_NOSNIFF = (("X-Content-Type-Options", "nosniff"), ("Cache-Control", "no-store"))


@dataclass(frozen=True)
class WebhookResult:
    """The response to send, plus what happened (for logs, metrics and tests; not sent)."""

    status: int
    body: bytes = b""
    content_type: str = _TEXT
    headers: tuple[tuple[str, str], ...] = _NOSNIFF
    accepted: int = 0
    rejected: tuple[str, ...] = ()


class ValidationTokenVerifier(Protocol):
    """Verifies one ``validationTokens`` JWT (Graph docs, *rich notifications*, "How to
    validate"); returns the token's tenant id. Raises :class:`TokenInvalidError` when the token is
    bad and :class:`RemoteError` when the keys cannot be fetched."""

    async def __call__(self, token: str, *, tenant_ids: frozenset[str], now: datetime) -> str: ...


@dataclass(frozen=True)
class WebhookSecurity:
    """Everything the notification handler needs to authenticate a delivery."""

    token_verifier: ValidationTokenVerifier
    decryption_keys: Mapping[str, rsa.RSAPrivateKey] = field(repr=False)
    org_tenant: Callable[[str], Awaitable[str | None]]
    keyer: ParticipantKeyer
    max_future_skew: timedelta = timedelta(minutes=5)
    max_event_age: timedelta = timedelta(hours=4, minutes=15)
    subscription_grace: timedelta = timedelta(minutes=5)
    decrypt_before_ack: bool = True
    """``True`` (default): decrypt and parse before the inbox commit, so nothing forged is ever
    stored. ``False``: store the still-encrypted content after the cheap checks (subscription,
    clientState, tenant, validation tokens) and decrypt in the worker (:func:`unseal`), as in
    docs/security.md#attendance-pipeline, for throughput (RSA-OAEP costs ~1.5 ms per
    notification)."""


def _json_depth(document: object, limit: int) -> bool:
    """Whether parsed JSON nests at most ``limit`` levels (iterative: no recursion to exhaust)."""
    stack: list[tuple[object, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > limit:
                return False
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return True


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


class _RejectedError(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


async def handle_notifications(
    body: bytes,
    *,
    security: WebhookSecurity,
    inbox: InboxStore,
    subscriptions: SubscriptionStore,
    now: datetime,
) -> WebhookResult:
    """Authenticate a change-notification POST and commit what is genuine to the inbox."""
    if len(body) > MAX_BODY_BYTES:
        return WebhookResult(status=413, body=b"too large", rejected=("body_too_large",))
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return WebhookResult(status=400, body=b"bad request", rejected=("malformed_body",))
    if not _json_depth(document, MAX_JSON_DEPTH):
        return WebhookResult(status=400, body=b"bad request", rejected=("json_too_deep",))
    try:
        collection = ChangeNotificationCollection.model_validate(document)
    except ValidationError:
        return WebhookResult(status=400, body=b"bad request", rejected=("malformed_body",))

    rejected: list[str] = []
    candidates: list[tuple[ChangeNotification, SubscriptionRow, str]] = []
    lookups = _BatchLookups(subscriptions, security)
    for item in collection.value:
        try:
            row, tenant = await _authenticate_item(item, security, lookups, now)
        except _RejectedError as exc:
            rejected.append(exc.reason)
            continue
        candidates.append((item, row, tenant))

    try:
        verified_tenants = await _verify_tokens(collection, candidates, security, now)
    except RemoteError:
        _log.warning("webhook: validation keys unavailable; asking Graph to redeliver")
        return WebhookResult(status=503, body=b"unavailable", rejected=("keys_unavailable",))
    except _RejectedError as exc:
        _security_event(exc.reason, count=len(collection.value))
        return WebhookResult(status=202, rejected=(exc.reason,) * len(collection.value))

    items: list[InboxItem] = []
    for item, row, tenant in candidates:
        try:
            items.append(_inbox_item(item, row, tenant, verified_tenants, security, now))
        except _RejectedError as exc:
            rejected.append(exc.reason)
    for reason in rejected:
        _security_event(reason, count=1)
    if items:
        try:
            await inbox.append_inbox(items)
        except Exception:
            _log.exception("webhook: inbox commit failed; answering 503 so Graph redelivers")
            return WebhookResult(status=503, body=b"unavailable", rejected=("inbox_unavailable",))
    return WebhookResult(status=202, accepted=len(items), rejected=tuple(rejected))


def _security_event(reason: str, *, count: int) -> None:
    _log.warning(
        "webhook notification dropped: %s (%d)", reason, count, extra={"security_event": reason}
    )


class _BatchLookups:
    """Subscription rows and organization tenants, read once per delivery (Graph batches)."""

    def __init__(self, subscriptions: SubscriptionStore, security: WebhookSecurity) -> None:
        self._subscriptions = subscriptions
        self._security = security
        self._rows: dict[str, SubscriptionRow | None] = {}
        self._tenants: dict[str, str | None] = {}

    async def subscription(self, subscription_id: str) -> SubscriptionRow | None:
        if subscription_id not in self._rows:
            self._rows[subscription_id] = await self._subscriptions.get_subscription(
                subscription_id
            )
        return self._rows[subscription_id]

    async def tenant(self, org_id: str) -> str | None:
        if org_id not in self._tenants:
            self._tenants[org_id] = await self._security.org_tenant(org_id)
        return self._tenants[org_id]


async def _authenticate_item(
    item: ChangeNotification,
    security: WebhookSecurity,
    lookups: _BatchLookups,
    now: datetime,
) -> tuple[SubscriptionRow, str]:
    row = await lookups.subscription(item.subscription_id)
    if row is None:
        raise _RejectedError("unknown_subscription")
    if row.state != "active" or row.expires_at + security.subscription_grace < now:
        raise _RejectedError("subscription_inactive")
    sent = item.client_state.get_secret_value() if item.client_state is not None else ""
    if not hmac.compare_digest(sent.encode(), row.client_state.encode()):
        raise _RejectedError("client_state_mismatch")
    tenant = await lookups.tenant(row.org_id)
    item_tenant = item.effective_tenant
    if tenant is None or item_tenant is None or item_tenant.lower() != tenant.lower():
        raise _RejectedError("cross_tenant")
    return row, tenant.lower()


async def _verify_tokens(
    collection: ChangeNotificationCollection,
    candidates: list[tuple[ChangeNotification, SubscriptionRow, str]],
    security: WebhookSecurity,
    now: datetime,
) -> frozenset[str]:
    """Verify every token (any failure rejects the whole batch, threat T23); the tenants they cover.

    Nothing to store, nothing to verify: forged batches cost no key fetch."""
    if not candidates:
        return frozenset()
    tenants = frozenset(
        t.lower() for t in (i.effective_tenant for i in collection.value) if t is not None
    )
    verified: set[str] = set()
    for token in collection.validation_tokens:
        try:
            verified.add(
                (await security.token_verifier(token, tenant_ids=tenants, now=now)).lower()
            )
        except TokenInvalidError as exc:
            raise _RejectedError(f"validation_token_{exc.reason}") from None
    return frozenset(verified)


def _inbox_item(
    item: ChangeNotification,
    row: SubscriptionRow,
    tenant: str,
    verified_tenants: frozenset[str],
    security: WebhookSecurity,
    now: datetime,
) -> InboxItem:
    if item.lifecycle_event is not None:
        envelope_json = LifecycleEnvelope(
            subscription_id=row.subscription_id,
            org_id=row.org_id,
            external_id=row.external_id,
            lifecycle_event=item.lifecycle_event,
            received_at=now,
        ).model_dump_json()
        expiry = item.subscription_expiration_date_time
        dedupe = _digest(
            "lifecycle",
            row.subscription_id,
            item.lifecycle_event,
            expiry.isoformat() if expiry else "",
            item.id or "",
        )
        return InboxItem(row.org_id, dedupe, envelope_json.encode(), now)
    if item.encrypted_content is None:
        raise _RejectedError("not_rich")
    if tenant not in verified_tenants:
        raise _RejectedError("validation_token_missing")
    resource_digest = hashlib.sha256((item.resource or "").encode()).hexdigest()
    if not security.decrypt_before_ack:
        encrypted = item.encrypted_content
        sealed = SealedCallEventEnvelope(
            subscription_id=row.subscription_id,
            org_id=row.org_id,
            external_id=row.external_id,
            tenant_id=tenant,
            encrypted=encrypted,
            received_at=now,
            resource_fingerprint=resource_fingerprint(item.resource),
        )
        content = hashlib.sha256(f"{encrypted.data_key}.{encrypted.data}".encode()).hexdigest()
        dedupe = _digest(row.subscription_id, resource_digest, item.change_type or "", content)
        return InboxItem(row.org_id, dedupe, sealed.model_dump_json().encode(), now)
    try:
        envelope = open_call_event(
            item.encrypted_content,
            subscription=row,
            tenant_id=tenant,
            security=security,
            received_at=now,
        ).model_copy(update={"resource_fingerprint": resource_fingerprint(item.resource)})
    except WebhookRejectedError as exc:
        raise _RejectedError(exc.reason) from None
    payload = envelope.model_dump_json().encode()
    dedupe = _digest(
        row.subscription_id,
        resource_digest,
        item.change_type or "",
        hashlib.sha256(payload).hexdigest(),
    )
    return InboxItem(row.org_id, dedupe, payload, now)


def open_call_event(
    encrypted: EncryptedContent,
    *,
    subscription: SubscriptionRow,
    tenant_id: str,
    security: WebhookSecurity,
    received_at: datetime,
) -> CallEventEnvelope:
    """HMAC-check, decrypt and parse one call event into its name-free envelope; the event time
    must be plausible relative to ``received_at``. Raises :class:`WebhookRejectedError`."""
    try:
        document = json.loads(decrypt_encrypted_content(encrypted, security.decryption_keys))
    except (ValueError, RecursionError):
        raise WebhookRejectedError("not JSON", reason="malformed_call_event") from None
    if not isinstance(document, dict):
        raise WebhookRejectedError("not an object", reason="malformed_call_event")
    event_type, at, changes = parse_call_event(
        document, org_id=subscription.org_id, keyer=security.keyer
    )
    if at > received_at + security.max_future_skew:
        raise WebhookRejectedError("event time in the future", reason="event_in_future")
    if at < received_at - security.max_event_age:
        raise WebhookRejectedError("event time too old", reason="event_stale")
    return CallEventEnvelope(
        subscription_id=subscription.subscription_id,
        org_id=subscription.org_id,
        external_id=subscription.external_id,
        tenant_id=tenant_id,
        event_type=event_type,
        at=at,
        changes=changes,
    )


def unseal(envelope: SealedCallEventEnvelope, security: WebhookSecurity) -> CallEventEnvelope:
    """The worker half of deferred decryption (docs/security.md#attendance-pipeline): the same
    checks as the webhook."""
    row = SubscriptionRow(
        envelope.subscription_id,
        envelope.org_id,
        envelope.external_id,
        "",
        envelope.received_at,
        "active",
    )
    return open_call_event(
        envelope.encrypted,
        subscription=row,
        tenant_id=envelope.tenant_id,
        security=security,
        received_at=envelope.received_at,
    ).model_copy(update={"resource_fingerprint": envelope.resource_fingerprint})
