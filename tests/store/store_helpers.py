"""Raw database access for the store tests (the SQL uses ``?``; PostgreSQL gets ``%s``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pg import POSTGRES_BASE
from teams_ehr.store._base import SqlStore, Stmt
from teams_ehr.store.crypto import FieldCipher
from teams_ehr.store.postgres import PostgresStore
from teams_ehr.store.sqlite import SqliteStore

PG_BASE = POSTGRES_BASE
EVENT_BUFFER = 16


async def raw(store: SqlStore, sql: str, args: Sequence[Any] = ()) -> list[Any]:
    """Rows of a raw query, bypassing the store API."""
    result = await store._tx([Stmt(sql, args, "all")], write=False)
    return list(result[0])


async def raw_write(store: SqlStore, sql: str, args: Sequence[Any] = ()) -> int:
    """Run a raw statement in its own transaction; returns the rows changed."""
    return int((await store._tx([Stmt(sql, args, "count")]))[0])


def canary(label: str) -> str:
    return f"CANARY-{label}-7f3c9a"


class FakeClock:
    """A settable clock (aware UTC)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


class StoreMaker:
    """Builds stores of one engine that share one database (two "instances")."""

    def __init__(
        self, engine: str, path: Path, cipher: FieldCipher, clock: FakeClock, dsn: str | None
    ) -> None:
        self.engine, self.path, self.cipher, self.clock, self.dsn = engine, path, cipher, clock, dsn
        self._memory: SqliteStore | None = None

    @property
    def shares_database(self) -> bool:
        """Whether :meth:`make` returns separate instances over one database."""
        return self.engine != "sqlite-memory"

    def make(
        self, *, cipher: FieldCipher | None = None, **kwargs: object
    ) -> SqliteStore | PostgresStore:
        cipher = cipher or self.cipher
        if self.engine == "postgres":
            assert self.dsn is not None
            return PostgresStore(self.dsn, cipher=cipher, clock=self.clock, **kwargs)  # type: ignore[arg-type]
        if self.engine == "sqlite-file":
            return SqliteStore(str(self.path), cipher=cipher, clock=self.clock, **kwargs)  # type: ignore[arg-type]
        return SqliteStore(":memory:", cipher=cipher, clock=self.clock, **kwargs)  # type: ignore[arg-type]
