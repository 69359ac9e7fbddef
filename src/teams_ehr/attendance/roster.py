"""The live roster: per-visit state and its Server-Sent Events stream (requirements D3, C6;
threat T25).

Events travel on the :class:`~teams_ehr.store.protocol.EventBus` (PostgreSQL ``LISTEN/NOTIFY``
across instances, in-process on SQLite) on a channel derived from a hash of (organization,
meeting), so any instance can serve the clinician's stream. Payloads carry an opaque participant
handle, the role, the kind and the UTC time — never names, identities or join URLs.

:func:`stream` checks authorization (organization, meeting, clinician) **before** returning the
iterator, so a refusal becomes a 403 before any byte is sent; it then sends a ``snapshot`` built
from the stored facts (a reconnect resyncs), each ``attendance`` event as it arrives, and a
comment heartbeat when idle, at which point authorization is checked again (a revoked or expired
session ends the stream). Frame format: WHATWG HTML, *Server-sent events*, §9.2.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass

import anyio

from teams_ehr._redact import get_logger
from teams_ehr.attendance.events import AttendanceEvent
from teams_ehr.errors import CrossTenantDeniedError, StorageError
from teams_ehr.store.protocol import AttendanceFactRow, AttendanceFactStore, EventBus

__all__ = [
    "LiveRoster",
    "RosterEntry",
    "encode_sse",
    "roster_channel",
    "roster_message",
    "stream",
]

_log = get_logger(__name__)
_ALLOWED = ("participant", "role", "kind", "at")
_PARTICIPANT_KINDS = frozenset({"connected", "disconnected", "lobby_entered", "admitted"})

Authorize = Callable[[str, str, str], Awaitable[bool]]


def roster_channel(org_id: str, external_id: str) -> str:
    """Bus channel of one visit: a hash, valid as a PostgreSQL identifier (≤ 63 chars)."""
    return "roster_" + hashlib.sha256(f"{org_id}\x1f{external_id}".encode()).hexdigest()[:40]


def roster_message(event: AttendanceEvent) -> str:
    """The bus message for one event (JSON; role, kind, time and an opaque handle only)."""
    return json.dumps({**event.roster_payload(), "id": event.fact_key[:16]}, separators=(",", ":"))


@dataclass(frozen=True)
class RosterEntry:
    participant: str
    role: str
    kind: str
    at: str


class LiveRoster:
    """Current state of one visit: each participant's latest kind, plus the call state."""

    def __init__(self) -> None:
        self._participants: dict[str, RosterEntry] = {}
        self.call_state: str | None = None
        self.call_at: str | None = None

    @classmethod
    def from_facts(cls, rows: Iterable[AttendanceFactRow]) -> LiveRoster:
        roster = cls()
        for row in sorted(rows, key=lambda r: r.at):
            roster.apply_payload(
                {
                    "participant": row.participant_key[:12],
                    "role": row.role,
                    "kind": row.kind,
                    "at": row.at.isoformat().replace("+00:00", "Z"),
                }
            )
        return roster

    def apply(self, event: AttendanceEvent) -> None:
        self.apply_payload(event.roster_payload())

    def apply_payload(self, payload: dict[str, str]) -> None:
        kind, at = payload["kind"], payload["at"]
        if kind in ("call_started", "call_ended"):
            if self.call_at is None or at >= self.call_at:
                self.call_state, self.call_at = kind, at
            return
        if kind not in _PARTICIPANT_KINDS:
            return
        current = self._participants.get(payload["participant"])
        if current is None or at >= current.at:
            self._participants[payload["participant"]] = RosterEntry(
                payload["participant"], payload["role"], kind, at
            )

    def snapshot(self) -> dict[str, object]:
        return {
            "call": {"kind": self.call_state, "at": self.call_at},
            "participants": [
                {"participant": e.participant, "role": e.role, "kind": e.kind, "at": e.at}
                for e in sorted(self._participants.values(), key=lambda e: e.at)
            ],
        }


def encode_sse(data: str, *, event: str | None = None, event_id: str | None = None) -> bytes:
    """One SSE frame; ``data`` is split on newlines so it cannot inject fields."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {_one_line(event_id)}")
    if event is not None:
        lines.append(f"event: {_one_line(event)}")
    lines.extend(f"data: {line}" for line in data.splitlines() or [""])
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def _one_line(value: str) -> str:
    return value.replace("\r", " ").replace("\n", " ")


def _sanitize(message: str) -> str | None:
    try:
        payload = json.loads(message)
    except ValueError:
        return None
    if not isinstance(payload, dict) or not all(isinstance(payload.get(k), str) for k in _ALLOWED):
        return None
    return json.dumps({k: payload[k] for k in _ALLOWED}, separators=(",", ":"))


async def stream(
    bus: EventBus,
    *,
    org_id: str,
    external_id: str,
    viewer_oid: str,
    authorize: Authorize,
    facts: AttendanceFactStore | None = None,
    heartbeat_seconds: float = 15.0,
) -> AsyncIterator[bytes]:
    """Authorize, then return the SSE byte stream of one visit's roster.

    Raises :class:`CrossTenantDeniedError` (nothing streamed) when ``authorize(org_id,
    external_id, viewer_oid)`` is false: the organization, meeting and clinician must match.
    """
    if not await authorize(org_id, external_id, viewer_oid):
        raise CrossTenantDeniedError("viewer may not watch this visit", reason="roster_forbidden")
    subscription = bus.subscribe(roster_channel(org_id, external_id))
    ready = getattr(subscription, "ready", None)
    if ready is not None:  # PostgreSQL: LISTEN is active before the snapshot is read (no gap)
        await ready()
    snapshot = LiveRoster.from_facts(await facts.list_facts(org_id, external_id) if facts else ())
    return _frames(
        subscription,
        snapshot,
        recheck=lambda: authorize(org_id, external_id, viewer_oid),
        heartbeat_seconds=heartbeat_seconds,
    )


async def _frames(
    subscription: AsyncIterator[str],
    snapshot: LiveRoster,
    *,
    recheck: Callable[[], Awaitable[bool]],
    heartbeat_seconds: float,
) -> AsyncIterator[bytes]:
    try:
        yield b"retry: 3000\n\n"
        yield encode_sse(json.dumps(snapshot.snapshot(), separators=(",", ":")), event="snapshot")
        while True:
            message: str | None = None
            with anyio.move_on_after(heartbeat_seconds):
                try:
                    message = await subscription.__anext__()
                except StopAsyncIteration:
                    return
                except StorageError:  # the bus dropped a slow viewer: tell it to resync
                    yield encode_sse("{}", event="resync")
                    return
            if message is None:
                if not await recheck():
                    yield encode_sse("{}", event="closed")
                    return
                yield b": keep-alive\n\n"
                continue
            data = _sanitize(message)
            if data is None:
                _log.warning("roster: dropped a malformed bus message")
                continue
            event_id = json.loads(message).get("id")
            yield encode_sse(
                data, event="attendance", event_id=event_id if isinstance(event_id, str) else None
            )
    finally:
        close = getattr(subscription, "aclose", None)
        if close is not None:
            with anyio.CancelScope(shield=True):
                await close()
