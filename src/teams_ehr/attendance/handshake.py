"""The webhook validation handshake, and who may answer it (requirements D1, C6; threat T21).

Graph docs, *Receive change notifications through webhooks*, "notificationUrl validation": when
a subscription is created Graph POSTs ``{notificationUrl}?validationToken=…`` (and the same to
``lifecycleNotificationUrl``) and expects, within 10 seconds, ``200 OK``, ``Content-Type:
text/plain`` and the URL-decoded token as the body; it says to escape the token because "malicious
actors can use the notification endpoint for cross-site scripting". We answer only while one of
our own subscription requests is pending on that path, the token at most 1 KiB, as plain text with
``X-Content-Type-Options: nosniff``, never logging it; otherwise ``404``.

"Pending" is a :class:`HandshakeRegistry`:

* :class:`PendingHandshakes` — in process memory, no database on the path. Enough when the
  instance that POSTs ``/subscriptions`` also receives Graph's validation request (one instance,
  or a load balancer that routes the webhook path to it).
* :class:`SharedHandshakes` — through the store's :class:`~teams_ehr.store.protocol.HandshakeStore`,
  so any instance may answer (requirement C6: no sticky sessions). A window is one row (its kinds
  and end), written once, deleted when the subscription request returns; a validation request is
  answered from the opening instance's memory or with one read, so probes write nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Hashable, Mapping
from datetime import datetime, timedelta
from typing import Literal, Protocol
from urllib.parse import parse_qsl

from teams_ehr._redact import get_logger
from teams_ehr.attendance.webhook import WebhookResult
from teams_ehr.store.protocol import HandshakeStore

__all__ = [
    "HANDSHAKE_WINDOW",
    "MAX_VALIDATION_TOKEN_CHARS",
    "HandshakeKind",
    "HandshakeRegistry",
    "PendingHandshakes",
    "SharedHandshakes",
    "handle_validation",
]

_log = get_logger(__name__)

HANDSHAKE_WINDOW = timedelta(seconds=10)
MAX_VALIDATION_TOKEN_CHARS = 1024
HandshakeKind = Literal["notification", "lifecycle"]


class HandshakeRegistry(Protocol):
    """Windows during which a validation request may be answered."""

    async def open(self, now: datetime, kinds: frozenset[HandshakeKind]) -> Hashable: ...

    async def close(self, handle: Hashable) -> None: ...

    async def is_pending(self, kind: HandshakeKind, now: datetime) -> bool: ...


class PendingHandshakes:
    """Process-local windows; several may overlap (concurrent subscription creations)."""

    def __init__(self, window: timedelta = HANDSHAKE_WINDOW) -> None:
        self._window = window
        self._open: dict[int, tuple[frozenset[HandshakeKind], datetime]] = {}
        self._next = 0

    async def open(self, now: datetime, kinds: frozenset[HandshakeKind]) -> Hashable:
        self._next += 1
        self._open[self._next] = (kinds, now + self._window)
        return self._next

    async def close(self, handle: Hashable) -> None:
        if isinstance(handle, int):
            self._open.pop(handle, None)

    async def is_pending(self, kind: HandshakeKind, now: datetime) -> bool:
        for handle, (kinds, until) in list(self._open.items()):
            if until <= now:
                del self._open[handle]
            elif kind in kinds:
                return True
        return False


class SharedHandshakes:
    """Windows shared by every instance through the store: one row per window, closed (deleted)
    as soon as Graph has answered the subscription request, and never outliving ``window``
    (10 s, Graph's own limit for the answer); expired rows are swept when a window opens.

    The instance that opened a window also keeps it in memory and answers from there first, so
    the common case (Graph's validation request reaches the instance that is subscribing) never
    waits for a busy store; any other instance reads the row.
    """

    def __init__(self, handshakes: HandshakeStore, window: timedelta = HANDSHAKE_WINDOW) -> None:
        self._handshakes = handshakes
        self._window = window
        self._local = PendingHandshakes(window)
        self._handles: dict[str, Hashable] = {}

    async def open(self, now: datetime, kinds: frozenset[HandshakeKind]) -> Hashable:
        handle = secrets.token_hex(16)
        await self._handshakes.open_handshake(handle, sorted(kinds), expires_at=now + self._window)
        self._handles[handle] = await self._local.open(now, kinds)
        return handle

    async def close(self, handle: Hashable) -> None:
        if isinstance(handle, str):
            local = self._handles.pop(handle, None)
            if local is not None:
                await self._local.close(local)
            await self._handshakes.close_handshake(handle)

    async def is_pending(self, kind: HandshakeKind, now: datetime) -> bool:
        if await self._local.is_pending(kind, now):
            return True
        return await self._handshakes.handshake_pending(kind, now=now)


async def handle_validation(
    query: Mapping[str, str] | str | bytes,
    *,
    handshakes: HandshakeRegistry,
    kind: HandshakeKind,
    now: datetime,
) -> WebhookResult:
    """Answer Graph's validation request on the ``kind`` path.

    ``query`` is either the raw query string (decoded here, exactly once) or the mapping a
    framework already decoded. The token is opaque: echoed byte-exact, never logged.
    """
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    if isinstance(query, str):
        try:
            query = dict(parse_qsl(query, keep_blank_values=True, max_num_fields=20))
        except ValueError:
            return WebhookResult(status=400, body=b"bad request", rejected=("malformed_query",))
    token = query.get("validationToken")
    if token is None:
        return WebhookResult(status=400, body=b"bad request", rejected=("no_validation_token",))
    if len(token) > MAX_VALIDATION_TOKEN_CHARS:
        return WebhookResult(
            status=400, body=b"bad request", rejected=("validation_token_too_long",)
        )
    try:
        echoed = token.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a framework's decoder: not a token
        return WebhookResult(status=400, body=b"bad request", rejected=("malformed_query",))
    if not await handshakes.is_pending(kind, now):
        _log.warning(
            "webhook validation refused: no pending subscription",
            extra={"security_event": "validation_not_pending"},
        )
        return WebhookResult(status=404, body=b"not found", rejected=("validation_not_pending",))
    return WebhookResult(status=200, body=echoed, accepted=1)
