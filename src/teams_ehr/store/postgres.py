"""The store for several app instances: PostgreSQL through psycopg 3 (requirements C5, C6).

Any instance can serve any step: all state is in the database, work is leased with
``SELECT … FOR UPDATE SKIP LOCKED`` (two workers, in one process or in two instances, never lease
one row), and live events fan out with ``LISTEN/NOTIFY`` (:mod:`teams_ehr.store._pg_events`).

Connections come from a ``psycopg_pool.AsyncConnectionPool`` in autocommit mode; each store
operation is one explicit transaction (READ COMMITTED). Commits are durable with the server's
default ``synchronous_commit=on`` (the WAL is flushed before COMMIT returns; PostgreSQL docs
§30.4 "Asynchronous Commit"), which is what the inbox needs before a webhook answers 2xx.
Migrations and audit appends take transaction-scoped advisory locks keyed by the current schema
(and organization), so instances starting together migrate once and audit ``seq`` never collides.

psycopg's async connections run on **asyncio only** (not trio): opening this store on another
event loop raises ``ConfigurationError(reason="asyncio_required")``.

The schema is the connection's ``search_path`` (e.g. ``?options=-csearch_path%3Dteams_ehr`` in
the DSN); channel names include it, so deployments in separate schemas never cross-talk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
import psycopg_pool

from teams_ehr._redact import get_logger
from teams_ehr._types import Clock, utc_now
from teams_ehr.errors import ConfigurationError, StorageError, UsageError
from teams_ehr.store import _common as c
from teams_ehr.store import _sql as q
from teams_ehr.store._base import SqlStore, Stmt
from teams_ehr.store._bus import LocalHub, Subscription, check_event
from teams_ehr.store._pg_events import PgListener
from teams_ehr.store.crypto import FieldCipher
from teams_ehr.store.migrations import SCHEMA_MIGRATIONS_DDL, pending_migrations

__all__ = ["PostgresStore"]

log = get_logger(__name__)
_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(?, 0))"


class PostgresStore(SqlStore):
    """:class:`~teams_ehr.store.protocol.Store` on PostgreSQL (asyncio)."""

    def __init__(
        self,
        dsn: str,
        *,
        cipher: FieldCipher,
        clock: Clock = utc_now,
        min_size: int = 1,
        max_size: int = 10,
        event_buffer: int = 1000,
        auto_migrate: bool = True,
        pool_timeout: float = 30.0,
    ) -> None:
        super().__init__(cipher=cipher, clock=clock)
        self._dsn = dsn
        self._min_size, self._max_size = min_size, max_size
        self._pool_timeout = pool_timeout
        self._auto_migrate = auto_migrate
        self._hub = LocalHub(event_buffer)
        self._pool: psycopg_pool.AsyncConnectionPool | None = None
        self._listener: PgListener | None = None
        self._schema = "public"

    def __repr__(self) -> str:
        return f"<PostgresStore open={self._pool is not None}>"

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the pool, learn the schema and, unless disabled, apply the migrations."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise ConfigurationError(
                "the PostgreSQL store runs on asyncio only", reason="asyncio_required"
            ) from None
        if self._hub.closed:  # reopened after aclose()
            self._hub = LocalHub(self._hub.buffer_size)
        if self._pool is None:
            pool = psycopg_pool.AsyncConnectionPool(
                self._dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                kwargs={"autocommit": True},
                open=False,
                timeout=self._pool_timeout,
                name="teams_ehr",
                # a connection the server dropped (restart, failover) is replaced on checkout
                check=psycopg_pool.AsyncConnectionPool.check_connection,
            )
            try:
                await pool.open(wait=True, timeout=self._pool_timeout)
            except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
                await pool.close()
                raise StorageError(f"cannot connect to PostgreSQL ({type(exc).__name__})") from None
            self._pool = pool
            row = (await self._tx([Stmt("SELECT current_schema()", (), "one")], write=False))[0]
            self._schema = str(row[0] or "public")
            self._listener = PgListener(self._dsn, self._schema, self._hub, self._notify)
        if self._auto_migrate:
            await self.migrate()

    async def aclose(self) -> None:
        self._hub.close()
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.aclose()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def migrate(self) -> None:
        """Apply pending migrations once, even when several instances start together."""
        pool = self._require()
        try:
            async with pool.connection() as conn, conn.transaction():
                lock = q.postgres(_LOCK)
                await conn.execute(lock, (f"teams_ehr.migrate\x1f{self._schema}",))
                await conn.execute(SCHEMA_MIGRATIONS_DDL["postgres"])
                cur = await conn.execute("SELECT version FROM schema_migrations")
                applied = {int(r[0]) for r in await cur.fetchall()}
                for migration in pending_migrations(applied):
                    for statement in migration.postgres:
                        await conn.execute(statement)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, applied_at) "
                        "VALUES (%s, %s, %s)",
                        (migration.version, migration.name, c.aware(self._clock())),
                    )
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            log.warning("migration failed: %s", type(exc).__name__)
            raise StorageError("schema migration failed", reason="migration_failed") from None

    # -- engine -------------------------------------------------------------------------------

    def _require(self) -> psycopg_pool.AsyncConnectionPool:
        if self._pool is None:
            raise UsageError("the store is not open (use `async with`)", reason="store_closed")
        return self._pool

    def _enc(self, value: datetime) -> datetime:
        return c.aware(value)

    def _dec(self, value: Any) -> datetime:
        if not isinstance(value, datetime):
            raise StorageError("stored time has the wrong type", reason="integrity")
        return value.astimezone(UTC)

    def _audit_guard(self, org_id: str) -> list[Stmt]:
        return [Stmt(_LOCK, (f"teams_ehr.audit\x1f{self._schema}\x1f{org_id}",), "one")]

    async def _run(self, cur: psycopg.AsyncCursor[Any], stmts: Sequence[Stmt]) -> list[Any]:
        results: list[Any] = []
        for stmt in stmts:
            text = q.postgres(stmt.sql)
            if stmt.mode == "many":
                await cur.executemany(text, stmt.args)
                results.append(cur.rowcount)
                continue
            await cur.execute(text, stmt.args)
            if stmt.mode == "one":
                results.append(await cur.fetchone())
            elif stmt.mode == "all":
                results.append(await cur.fetchall())
            else:
                results.append(cur.rowcount)
        return results

    async def _tx(
        self, stmts: Sequence[Stmt], *, write: bool = True, durable: bool = False
    ) -> list[Any]:
        pool = self._require()
        try:
            async with pool.connection() as conn, conn.cursor() as cur:
                if not write:
                    return await self._run(cur, stmts)
                async with conn.transaction():
                    return await self._run(cur, stmts)
        except psycopg.errors.IntegrityError:
            raise StorageError("the database refused the write", reason="integrity") from None
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            log.warning("postgres operation failed: %s", type(exc).__name__)
            raise StorageError(f"PostgreSQL failed ({type(exc).__name__})") from None

    # -- live events (LISTEN/NOTIFY) ----------------------------------------------------------

    async def _notify(self, pg_channel: str, message: str) -> None:
        await self._tx([Stmt("SELECT pg_notify(?, ?)", (pg_channel, message), "one")], write=False)

    async def publish(self, channel: str, message: str) -> None:
        """Deliver to the subscribers of ``channel`` on every instance (≤ 7000 bytes)."""
        check_event(channel, message)
        listener = self._listener
        if listener is None:
            raise UsageError("the store is not open (use `async with`)", reason="store_closed")
        await self._notify(listener.name(channel), message)

    def subscribe(self, channel: str) -> Subscription:
        """Messages of ``channel`` from every instance; ``await sub.ready()`` (or ``async with``)
        waits until ``LISTEN`` is active, the first ``__anext__`` does too."""
        listener = self._listener
        if listener is None:
            raise UsageError("the store is not open (use `async with`)", reason="store_closed")
        return self._hub.subscribe(channel, ready=lambda: listener.ensure(channel))
