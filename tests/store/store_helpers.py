"""Raw database access for the store tests (the SQL uses ``?``; PostgreSQL gets ``%s``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from teams_ehr.store._base import SqlStore, Stmt


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
