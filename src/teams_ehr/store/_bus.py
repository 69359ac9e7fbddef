"""In-process fan-out of live events (requirements C6, D3): the SQLite event bus, and the local half
of the PostgreSQL one (``LISTEN/NOTIFY`` delivers to this hub on each instance).

A subscriber receives the messages published on its channel after it subscribed, in order.
Publishers never wait: each subscription has a bounded buffer (``buffer_size`` messages). A
subscriber that falls that far behind is **disconnected**, not silently thinned: it first receives
what was buffered, then its iterator raises ``StorageError(reason="event_overflow")``. The live
roster treats any disconnect as "re-sync from the database" (docs/security.md#attendance-pipeline:
publish is best-effort, the UI re-syncs from the DB), which a silent drop-oldest policy would hide.

The hub keeps subscriptions through weak references: an abandoned iterator is collected and
stops receiving; ``async with store.subscribe(ch) as sub`` closes it deterministically.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType

import anyio

from teams_ehr.errors import StorageError, UsageError

__all__ = ["MAX_EVENT_BYTES", "LocalHub", "Subscription", "check_event"]

MAX_EVENT_BYTES = 7000
"""Largest message (UTF-8 bytes); PostgreSQL's NOTIFY payload limit is 8000 bytes."""

DEFAULT_BUFFER = 1000


def check_event(channel: str, message: str) -> bytes:
    """Validate a channel and message; returns the UTF-8 message."""
    if not isinstance(channel, str) or not channel or len(channel) > 500:
        raise UsageError("event channel must be a non-empty string", reason="bad_channel")
    data = message.encode("utf-8")
    if len(data) > MAX_EVENT_BYTES:
        raise StorageError("event message exceeds 7000 bytes", reason="event_too_large")
    return data


class Subscription:
    """An async iterator of the messages of one channel (and an async context manager)."""

    def __init__(
        self,
        hub: LocalHub,
        channel: str,
        buffer_size: int,
        ready: Callable[[], Awaitable[None]] | None,
    ) -> None:
        self.channel = channel
        self._hub = hub
        self._buffer: deque[str] = deque()
        self._buffer_size = buffer_size
        self._wakeup: anyio.Event | None = None
        self._ready = ready
        self._closed = False
        self._overflowed = False

    def __repr__(self) -> str:
        return f"<Subscription closed={self._closed} overflowed={self._overflowed}>"

    def offer(self, message: str) -> None:
        """Called by the hub; never blocks."""
        if self._closed:
            return
        if len(self._buffer) >= self._buffer_size:
            self._overflowed = True
            self._close()
        else:
            self._buffer.append(message)
        if self._wakeup is not None:
            self._wakeup.set()

    def end(self) -> None:
        """End the iteration (store closing); buffered messages are still delivered."""
        self._closed = True
        if self._wakeup is not None:
            self._wakeup.set()

    async def ready(self) -> None:
        """Wait until the subscription is active on the backend (PostgreSQL ``LISTEN`` done);
        messages published from then on are delivered. Immediate on SQLite."""
        if self._ready is not None:
            wait, self._ready = self._ready, None
            await wait()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> str:
        await self.ready()
        while not self._buffer:
            if self._closed:
                if self._overflowed:
                    raise StorageError("event subscriber fell behind", reason="event_overflow")
                raise StopAsyncIteration
            self._wakeup = anyio.Event()
            await self._wakeup.wait()
            self._wakeup = None
        return self._buffer.popleft()

    def _close(self) -> None:
        self._closed = True
        self._hub.discard(self)

    async def aclose(self) -> None:
        self._close()
        self._buffer.clear()
        if self._wakeup is not None:
            self._wakeup.set()

    async def __aenter__(self) -> Subscription:
        await self.ready()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class LocalHub:
    """Channel → live subscriptions, fanned out without blocking the publisher."""

    def __init__(self, buffer_size: int = DEFAULT_BUFFER) -> None:
        if buffer_size < 1:
            raise UsageError("buffer_size must be positive", reason="bad_store_argument")
        self._buffer_size = buffer_size
        self._channels: dict[str, weakref.WeakSet[Subscription]] = {}
        self._closed = False

    def subscribe(
        self, channel: str, ready: Callable[[], Awaitable[None]] | None = None
    ) -> Subscription:
        check_event(channel, "")
        if self._closed:
            raise UsageError("the store is closed", reason="store_closed")
        sub = Subscription(self, channel, self._buffer_size, ready)
        self._channels.setdefault(channel, weakref.WeakSet()).add(sub)
        return sub

    def deliver(self, channel: str, message: str) -> None:
        for sub in list(self._channels.get(channel, ())):
            sub.offer(message)

    def discard(self, sub: Subscription) -> None:
        subs = self._channels.get(sub.channel)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._channels[sub.channel]

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def buffer_size(self) -> int:
        return self._buffer_size

    def channels(self) -> set[str]:
        """Channels that have at least one live subscriber."""
        return {name for name, subs in self._channels.items() if len(subs)}

    def close(self) -> None:
        """End every subscription (their iterators stop)."""
        self._closed = True
        for subs in list(self._channels.values()):
            for sub in list(subs):
                sub.end()
        self._channels.clear()
