"""Helpers shared by the SQLite and PostgreSQL stores (requirement C5): times, JSON, sealing, rules.

The encrypted columns and the associated data they are bound to (threat T16):

============================  ===============  ==================
table                         column           row key in the AAD
============================  ===============  ==================
``pending_authorizations``    ``payload``      ``state_key``
``meetings``                  ``join_url``     ``external_id``
``subscriptions``             ``client_state`` ``subscription_id``
``inbox``                     ``payload``      ``dedupe_key``
``outbox``                    ``payload``      ``idempotency_key``
============================  ===============  ==================

Row keys are the natural keys (known before the insert), so a value sealed for one row or one
organization never opens in another.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from teams_ehr.errors import UsageError
from teams_ehr.store.crypto import FieldCipher
from teams_ehr.store.protocol import (
    AttendanceFactRow,
    InboxItem,
    JsonObject,
    OutboxItem,
    OutboxState,
)

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
OUTBOX_STATES: Final[tuple[OutboxState, ...]] = ("pending", "leased", "delivered", "dead")
SETUP_STATES: Final = ("pending", "leased", "done", "abandoned")
_KIND = re.compile(r"^[a-z]{1,32}$")
PURGE_EVERY: Final = 64
"""Expired nonces and pending authorizations are swept every this many writes of that kind."""
PURGE_BATCH_ROWS: Final = 500
"""Rows one retention transaction deletes at most (``SqlStore.purge_expired``)."""


def aware(value: datetime) -> datetime:
    """``value`` in UTC; naive datetimes are refused (every stored time is aware UTC)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise UsageError("naive datetime given to the store", reason="naive_datetime")
    return value.astimezone(UTC)


def to_micros(value: datetime) -> int:
    """Integer microseconds since the Unix epoch (how SQLite stores times)."""
    return (aware(value) - EPOCH) // timedelta(microseconds=1)


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def dump_json(document: JsonObject) -> str:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def load_json(text: str) -> JsonObject:
    loaded = json.loads(text)
    if not isinstance(loaded, dict):
        raise UsageError("stored document is not a JSON object", reason="bad_document")
    return loaded


def require_text(**values: str) -> None:
    """Keys and ids must be non-empty strings (the AAD and the unique indexes rely on it)."""
    for name, value in values.items():
        if not isinstance(value, str) or not value:
            raise UsageError(f"{name} must be a non-empty string", reason="bad_store_argument")


def handshake_kinds(kinds: Sequence[str]) -> str:
    """``,kind,…,`` (sorted, deduplicated): matched with ``LIKE '%,kind,%'``, so each kind must
    be a short word of lower-case letters (no ``LIKE`` wildcards such as ``_``)."""
    if not kinds or not all(isinstance(k, str) and _KIND.match(k) for k in kinds):
        raise UsageError("handshake kinds must be lower-case words", reason="bad_store_argument")
    return "," + ",".join(sorted(set(kinds))) + ","


def check_limit(limit: int) -> int:
    if not isinstance(limit, int) or limit < 1:
        raise UsageError("limit must be a positive integer", reason="bad_store_argument")
    return limit


class Sealer:
    """Encrypts and decrypts the secret columns with their table and row key as AAD."""

    __slots__ = ("_cipher",)

    def __init__(self, cipher: FieldCipher) -> None:
        self._cipher = cipher

    def seal(self, data: bytes, *, org_id: str, table: str, row_key: str) -> bytes:
        return self._cipher.encrypt(bytes(data), org_id=org_id, table=table, row_key=row_key)

    def open(self, data: bytes, *, org_id: str, table: str, row_key: str) -> bytes:
        return self._cipher.decrypt(bytes(data), org_id=org_id, table=table, row_key=row_key)

    def seal_text(self, text: str, *, org_id: str, table: str, row_key: str) -> bytes:
        return self.seal(text.encode("utf-8"), org_id=org_id, table=table, row_key=row_key)

    def open_text(self, data: bytes, *, org_id: str, table: str, row_key: str) -> str:
        return self.open(data, org_id=org_id, table=table, row_key=row_key).decode("utf-8")


def validate_inbox(items: Sequence[InboxItem]) -> None:
    for item in items:
        require_text(org_id=item.org_id, dedupe_key=item.dedupe_key)
        aware(item.received_at)


def validate_outbox(items: Sequence[OutboxItem]) -> None:
    for item in items:
        require_text(org_id=item.org_id, idempotency_key=item.idempotency_key, kind=item.kind)
        aware(item.not_before)
        aware(item.created_at)


def validate_facts(rows: Sequence[AttendanceFactRow]) -> None:
    for row in rows:
        require_text(org_id=row.org_id, fact_key=row.fact_key, external_id=row.external_id)
        aware(row.at)


def outbox_item(
    sealer: Sealer, row: Sequence[Any], *, decode_time: Callable[[Any], datetime]
) -> OutboxItem:
    """Build an :class:`OutboxItem` from ``(item_id, org_id, idempotency_key, kind, payload,
    not_before, created_at, attempts, last_reason)``; delivered rows have no payload."""
    item_id, org_id, key, kind, payload, not_before, created_at, attempts, reason = row
    return OutboxItem(
        org_id=org_id,
        idempotency_key=key,
        kind=kind,
        payload=b""
        if payload is None
        else sealer.open(payload, org_id=org_id, table="outbox", row_key=key),
        not_before=decode_time(not_before),
        created_at=decode_time(created_at),
        item_id=int(item_id),
        attempts=int(attempts),
        last_reason=reason,
    )
