"""In-memory JoinLinkStore + NonceStore with the protocol's semantics, and a SQLite factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any

from teams_ehr._types import Clock
from teams_ehr.errors import StorageConflictError
from teams_ehr.store.protocol import JoinLinkRow


class MemoryJoinStore:
    """Join links by hash and rate counters; counts store calls so tests can assert none."""

    def __init__(self) -> None:
        self.rows: dict[str, JoinLinkRow] = {}
        self.hits: dict[tuple[str, datetime], int] = {}
        self.calls = 0

    async def put_join_link(self, row: JoinLinkRow) -> None:
        self.calls += 1
        if row.token_hash in self.rows:
            raise StorageConflictError("duplicate join link", reason="duplicate_key")
        self.rows[row.token_hash] = row

    async def get_join_link(self, token_hash: str) -> JoinLinkRow | None:
        self.calls += 1
        return self.rows.get(token_hash)

    async def revoke_join_links(self, org_id: str, external_id: str) -> int:
        self.calls += 1
        hits = [
            h
            for h, r in self.rows.items()
            if r.org_id == org_id and r.external_id == external_id and not r.revoked
        ]
        for h in hits:
            self.rows[h] = replace(self.rows[h], revoked=True)
        return len(hits)

    async def remember_once(self, namespace: str, key: str, *, expires_at: datetime) -> bool:
        raise AssertionError("join links never use remember_once")

    async def count_hit(self, bucket: str, *, window_start: datetime) -> int:
        self.calls += 1
        slot = (bucket, window_start)
        self.hits[slot] = self.hits.get(slot, 0) + 1
        return self.hits[slot]

    def dump(self) -> str:
        """Everything stored, as text (to prove the plaintext token is not in it)."""
        return repr(list(self.rows.items())) + repr(self.hits)


class FakeClock:
    """A settable clock (aware UTC)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def dump_sqlite(store: Any) -> str:
    """Every row of every table of a ``SqliteStore``, as text."""
    conn = store._conn
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return repr({t: conn.execute(f'SELECT * FROM "{t}"').fetchall() for t in tables})


@asynccontextmanager
async def sqlite_store(clock: Clock) -> AsyncIterator[Any]:
    """A real ``SqliteStore`` in memory (H5), when that module is present."""
    from teams_ehr.store.crypto import FieldCipher, new_encryption_key
    from teams_ehr.store.sqlite import SqliteStore

    async with SqliteStore(":memory:", cipher=FieldCipher(new_encryption_key()), clock=clock) as s:
        yield s
