"""Live events across instances on PostgreSQL ``LISTEN/NOTIFY`` (requirements C6, D3).

One dedicated connection per store listens; the local :class:`~teams_ehr.store._bus.LocalHub`
fans each notification out to this instance's subscribers. Facts from the PostgreSQL docs (SQL
commands NOTIFY and LISTEN) this module relies on:

* channel names are identifiers (≤ 63 bytes) and are database-wide, not per schema: ours are
  ``te_`` + the SHA-256 of ``schema ␟ channel`` (40 hex digits), so any application channel maps
  to a valid name and two deployments (or test runs) in other schemas of one database never hear
  each other;
* the payload must be shorter than 8000 bytes: :func:`~teams_ehr.store._bus.check_event` caps
  messages at 7000 bytes and raises ``StorageError(reason="event_too_large")``;
* notifications are delivered only to sessions already listening, and only when the sending
  transaction commits (publish runs in autocommit, so at once).

The listener waits in ``notifies(stop_after=1)`` (psycopg 3.2+: one packet, then return) and
between packets brings its ``LISTEN`` set in line with the hub's live channels. A subscriber
that needs a new channel wakes it with a NOTIFY on a private wake channel, then waits until the
``LISTEN`` is done (:meth:`Subscription.ready`). If the connection is lost the listener
reconnects with capped exponential backoff and listens again; messages published while it was
disconnected are not replayed (subscribers re-sync from the database,
docs/security.md#attendance-pipeline). Asyncio only, like psycopg's async connections.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Awaitable, Callable

import psycopg
from psycopg import sql

from teams_ehr._redact import get_logger
from teams_ehr.store._bus import LocalHub

log = get_logger(__name__)

KEEPALIVE_SECONDS = 10.0
_BACKOFF_MIN, _BACKOFF_MAX = 0.05, 5.0


def channel_name(schema: str, channel: str) -> str:
    """The PostgreSQL channel (a valid identifier) for an application channel in a schema."""
    digest = hashlib.sha256(f"{schema}\x1f{channel}".encode()).hexdigest()
    return f"te_{digest[:40]}"


class PgListener:
    """Owns the LISTEN connection and the asyncio task that reads it."""

    def __init__(
        self,
        dsn: str,
        schema: str,
        hub: LocalHub,
        notify: Callable[[str, str], Awaitable[None]],
    ) -> None:
        self._dsn = dsn
        self._schema = schema
        self._hub = hub
        self._notify = notify
        self._wake = f"te_wake_{secrets.token_hex(12)}"
        self._listening: dict[str, str] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.generation = 0
        """How many times a connection was established (tests watch it across reconnects)."""
        self.backend_pid: int | None = None

    def name(self, channel: str) -> str:
        return channel_name(self._schema, channel)

    def _start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def ensure(self, channel: str) -> None:
        """Return once this instance is listening on ``channel``."""
        self._start()
        name = self.name(channel)
        while name not in self._listening:
            if self._closed:
                return
            changed = self._changed
            await self._notify(self._wake, "")
            try:
                await asyncio.wait_for(changed.wait(), KEEPALIVE_SECONDS)
            except TimeoutError:
                continue

    async def wait_generation(self, generation: int) -> None:
        """Wait until the listener has (re)connected ``generation`` times and synced."""
        self._start()
        while self.generation < generation:
            await self._changed.wait()

    async def aclose(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    def _signal(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _sync(self, conn: psycopg.AsyncConnection[object]) -> None:
        wanted = {self.name(ch): ch for ch in self._hub.channels()}
        for name in set(self._listening) - set(wanted):
            await conn.execute(sql.SQL("UNLISTEN {}").format(sql.Identifier(name)))
            del self._listening[name]
        for name in set(wanted) - set(self._listening):
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(name)))
            self._listening[name] = wanted[name]
        self._signal()

    async def _serve(self, conn: psycopg.AsyncConnection[object]) -> None:
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._wake)))
        self._listening.clear()
        self.backend_pid = conn.info.backend_pid
        await self._sync(conn)
        self.generation += 1
        self._signal()
        while True:
            received = 0
            async for note in conn.notifies(timeout=KEEPALIVE_SECONDS, stop_after=1):
                received += 1
                channel = self._listening.get(note.channel)
                if channel is not None:
                    self._hub.deliver(channel, note.payload)
            if not received:
                await conn.execute("SELECT 1")
            await self._sync(conn)

    async def _run(self) -> None:
        backoff = _BACKOFF_MIN
        while not self._closed:
            try:
                conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
                async with conn:
                    backoff = _BACKOFF_MIN
                    await self._serve(conn)
            except psycopg.Error as exc:
                log.warning("event listener connection lost: %s", type(exc).__name__)
                self._listening.clear()
                self._signal()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
