"""The embedded default store: SQLite (requirement C5), zero setup, one process (or a few on one host).

Runs the stdlib ``sqlite3`` module in worker threads through ``anyio.to_thread.run_sync`` with one
connection and a capacity limiter of one, so it works on asyncio and trio. Every write is one
``BEGIN IMMEDIATE`` transaction: the write lock is taken up front, so two processes on one file
serialize (``busy_timeout`` waits for the lock) and never lease one row twice.

Durability (SQLite docs "Write-Ahead Logging" and "PRAGMA synchronous"): the file runs in WAL mode
with ``synchronous=NORMAL``. A commit then survives a process crash (``kill -9``) because its WAL
frames are written before COMMIT returns; a power loss can roll back only a *suffix* of the last
commits, never one in the middle, so the file stays consistent. Writes that must also survive a
power loss — the webhook inbox (invariant I1: "committed, fsync'd" before Graph gets a
2xx), outbox enqueues, attendance facts, organizations, issuers, audit, identities, meetings,
join links, subscriptions, subscription setup requests, completions and abandonments, and the
replay cache — commit with ``synchronous=FULL``: the WAL is fsync'd before COMMIT returns, which
also makes every earlier commit durable. Leases, outbox marks, setup retries, handshake windows,
pending authorizations and rate counters stay NORMAL: losing one costs a redelivery (made
idempotent by the outbox, invariant I3), a retried subscription attempt or a re-launch. ``append_inbox`` writes a batch with one
``executemany``, and concurrent appends share one transaction and one fsync (group commit,
:mod:`teams_ehr.store._group_commit`), each caller returning only once its rows are durable.

Live events are in-process (:mod:`teams_ehr.store._bus`); several instances need PostgreSQL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

from teams_ehr._redact import get_logger
from teams_ehr._types import Clock, utc_now
from teams_ehr.errors import StorageError, UsageError
from teams_ehr.store import _common as c
from teams_ehr.store import _sql as q
from teams_ehr.store._base import SqlStore, Stmt
from teams_ehr.store._bus import LocalHub, Subscription, check_event
from teams_ehr.store._group_commit import GroupCommit
from teams_ehr.store.crypto import FieldCipher
from teams_ehr.store.migrations import SCHEMA_MIGRATIONS_DDL, pending_migrations

__all__ = ["SqliteStore"]

log = get_logger(__name__)
T = TypeVar("T")


class _Connection(sqlite3.Connection):
    """A connection that remembers its ``PRAGMA synchronous`` level (set once, then on change)."""

    synchronous: str = ""


class SqliteStore(SqlStore):
    """:class:`~teams_ehr.store.protocol.Store` on one SQLite file (or ``":memory:"``)."""

    def __init__(
        self,
        path: str,
        *,
        cipher: FieldCipher,
        clock: Clock = utc_now,
        busy_timeout_ms: int = 5000,
        event_buffer: int = 1000,
        auto_migrate: bool = True,
    ) -> None:
        super().__init__(cipher=cipher, clock=clock)
        self._path = path
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._auto_migrate = auto_migrate
        self._hub = LocalHub(event_buffer)
        self._conn: _Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)
        self._inbox_commit = GroupCommit(self._flush_inbox)

    def __repr__(self) -> str:
        return f"<SqliteStore open={self._conn is not None}>"

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect (WAL, busy timeout) and, unless disabled, apply the migrations."""
        if self._hub.closed:  # reopened after aclose()
            self._hub = LocalHub(self._hub.buffer_size)
        if self._conn is None:
            try:
                self._conn = await anyio.to_thread.run_sync(self._connect, limiter=self._limiter)
            except sqlite3.Error as exc:
                raise StorageError(f"cannot open SQLite ({type(exc).__name__})") from None
        if self._auto_migrate:
            await self.migrate()

    def _connect(self) -> _Connection:
        conn = sqlite3.connect(
            self._path,
            factory=_Connection,
            isolation_level=None,
            check_same_thread=False,
            timeout=self._busy_timeout_ms / 1000,
        )
        conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        if self._path != ":memory:":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.synchronous = "NORMAL"
        return conn

    async def aclose(self) -> None:
        self._hub.close()
        conn, self._conn = self._conn, None
        if conn is not None:
            await anyio.to_thread.run_sync(conn.close, limiter=self._limiter)

    async def migrate(self) -> None:
        """Apply pending migrations under the write lock (idempotent)."""
        conn = self._require()

        def run() -> None:
            conn.execute(SCHEMA_MIGRATIONS_DDL["sqlite"])
            applied = {int(r[0]) for r in conn.execute("SELECT version FROM schema_migrations")}
            for migration in pending_migrations(applied):
                for statement in migration.sqlite:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, c.to_micros(self._clock())),
                )

        try:
            await self._in_thread(lambda: self._transaction(conn, run, durable=True))
        except StorageError as exc:
            raise StorageError("schema migration failed", reason="migration_failed") from exc

    # -- engine -------------------------------------------------------------------------------

    def _require(self) -> _Connection:
        if self._conn is None:
            raise UsageError("the store is not open (use `async with`)", reason="store_closed")
        return self._conn

    def _enc(self, value: datetime) -> int:
        return c.to_micros(value)

    def _dec(self, value: Any) -> datetime:
        return c.from_micros(int(value))

    def _span(self, value: timedelta) -> int:
        return value // timedelta(microseconds=1)

    @staticmethod
    def _transaction(conn: _Connection, run: Callable[[], T], *, durable: bool) -> T:
        """One ``BEGIN IMMEDIATE`` transaction; ``PRAGMA synchronous`` runs only when this commit
        needs another level than the connection is at (SQLite docs "PRAGMA synchronous")."""
        wanted = "FULL" if durable else "NORMAL"
        if conn.synchronous != wanted:
            conn.synchronous = ""  # unknown until the pragma has run
            conn.execute(f"PRAGMA synchronous = {wanted}")
            conn.synchronous = wanted
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = run()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    async def _in_thread(self, call: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(lambda: self._guarded(call), limiter=self._limiter)

    async def _tx(
        self, stmts: Sequence[Stmt], *, write: bool = True, durable: bool = False
    ) -> list[Any]:
        conn = self._require()

        def run() -> list[Any]:
            results: list[Any] = []
            for stmt in stmts:
                if stmt.mode == "many":
                    before = conn.total_changes
                    conn.executemany(stmt.sql, stmt.args)
                    results.append(conn.total_changes - before)
                    continue
                cur = conn.execute(stmt.sql, stmt.args)
                if stmt.mode == "one":
                    results.append(cur.fetchone())
                elif stmt.mode == "all":
                    results.append(cur.fetchall())
                else:
                    results.append(cur.rowcount)
            return results

        if not write:
            return await self._read_inline(run)
        return await self._in_thread(lambda: self._transaction(conn, run, durable=durable))

    async def _read_inline(self, run: Callable[[], T]) -> T:
        """A read on the event loop when the connection is idle, else in the worker thread.

        A WAL reader never waits for a writer (SQLite docs "Write-Ahead Logging" §2.2), so a
        short read costs less inline than the thread hop around it; when another task holds the
        connection (or is queued for it) the read waits its turn in the thread as before."""
        try:
            self._limiter.acquire_nowait()
        except anyio.WouldBlock:
            return await self._in_thread(run)
        try:
            result = self._guarded(run)
        finally:
            self._limiter.release()
        await anyio.lowlevel.checkpoint()
        return result

    @staticmethod
    def _guarded(call: Callable[[], T]) -> T:
        try:
            return call()
        except sqlite3.IntegrityError:
            raise StorageError("the database refused the write", reason="integrity") from None
        except sqlite3.Error as exc:
            log.warning("sqlite operation failed: %s", type(exc).__name__)
            raise StorageError(f"SQLite failed ({type(exc).__name__})") from None

    async def _insert_inbox(self, rows: Sequence[tuple[Any, ...]]) -> int:
        return await self._inbox_commit.submit(rows)

    async def _flush_inbox(
        self, parts: list[Sequence[tuple[Any, ...]]]
    ) -> list[int | StorageError]:
        """One durable transaction for the queued appends, a savepoint per caller."""
        conn = self._require()

        def run() -> list[int | StorageError]:
            outcomes: list[int | StorageError] = []
            for rows in parts:
                conn.execute("SAVEPOINT inbox_part")
                before = conn.total_changes
                try:
                    conn.executemany(q.INBOX_INSERT, rows)
                except sqlite3.Error as exc:
                    conn.execute("ROLLBACK TO inbox_part")
                    reason = "integrity" if isinstance(exc, sqlite3.IntegrityError) else None
                    outcomes.append(StorageError("the database refused the write", reason=reason))
                else:
                    outcomes.append(conn.total_changes - before)
                conn.execute("RELEASE inbox_part")
            return outcomes

        return await self._in_thread(lambda: self._transaction(conn, run, durable=True))

    # -- live events (in-process) -------------------------------------------------------------

    async def publish(self, channel: str, message: str) -> None:
        check_event(channel, message)
        self._require()
        self._hub.deliver(channel, message)
        await anyio.lowlevel.checkpoint()

    def subscribe(self, channel: str) -> Subscription:
        return self._hub.subscribe(channel)
