"""SQLite specifics (WAL, per-write durability, lifecycle) and ``open_store`` URLs (C5)."""

from __future__ import annotations

from pathlib import Path

import pytest
from store_helpers import FakeClock, raw

from teams_ehr.errors import ConfigurationError, StorageError, UsageError
from teams_ehr.store.crypto import FieldCipher
from teams_ehr.store.factory import open_store, sqlite_path
from teams_ehr.store.postgres import PostgresStore
from teams_ehr.store.protocol import InboxItem, Store
from teams_ehr.store.sqlite import SqliteStore

KEY = bytes(range(32))


@pytest.fixture
def anyio_backend() -> str:
    """SQLite specifics are engine behaviour; the contract suite covers trio."""
    return "asyncio"


@pytest.mark.anyio
async def test_wal_and_inbox_commits_are_fsynced(tmp_path: Path, clock: FakeClock) -> None:
    async with SqliteStore(str(tmp_path / "s.db"), cipher=FieldCipher(KEY), clock=clock) as store:
        assert await raw(store, "PRAGMA journal_mode") == [("wal",)]
        await store.append_inbox([InboxItem("org-a", "n1", b"p", clock())])
        assert await raw(store, "PRAGMA synchronous") == [(2,)]  # FULL for the inbox commit
        await store.claim_inbox(worker="w", limit=1, now=clock(), lease_until=clock())
        assert await raw(store, "PRAGMA synchronous") == [(1,)]  # NORMAL for a lease
        assert await raw(store, "PRAGMA busy_timeout") == [(5000,)]


@pytest.mark.anyio
async def test_closed_store_refuses_calls(clock: FakeClock) -> None:
    store = SqliteStore(":memory:", cipher=FieldCipher(KEY), clock=clock)
    with pytest.raises(UsageError) as err:
        await store.get_organization("org-a")
    assert err.value.reason == "store_closed"
    async with store:
        assert await store.get_organization("org-a") is None
    with pytest.raises(UsageError):
        await store.publish("c", "m")


@pytest.mark.anyio
async def test_unopenable_file_is_a_storage_error(tmp_path: Path, clock: FakeClock) -> None:
    store = SqliteStore(str(tmp_path / "missing" / "s.db"), cipher=FieldCipher(KEY), clock=clock)
    with pytest.raises(StorageError):
        await store.open()


@pytest.mark.anyio
async def test_open_store_memory_url_works(clock: FakeClock) -> None:
    async with open_store("sqlite://:memory:", encryption_key=KEY, clock=clock) as store:
        assert isinstance(store, Store)
        assert await store.append_inbox([InboxItem("o", "n", b"p", clock())]) == 1


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite://:memory:", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),
        ("sqlite:///data/teams.db", "data/teams.db"),
        ("sqlite:////var/lib/teams.db", "/var/lib/teams.db"),
    ],
)
def test_sqlite_urls(url: str, path: str) -> None:
    assert sqlite_path(url) == path
    store = open_store(url, encryption_key=KEY)
    assert isinstance(store, SqliteStore)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite://host/x.db", "sqlite:///x?y"])
def test_bad_sqlite_urls(url: str) -> None:
    with pytest.raises(ConfigurationError):
        sqlite_path(url)


def test_postgres_and_unknown_urls() -> None:
    for url in ("postgresql://u@127.0.0.1/db", "postgres://u@127.0.0.1/db"):
        assert isinstance(open_store(url, encryption_key=KEY), PostgresStore)
    with pytest.raises(ConfigurationError) as err:
        open_store("mysql://user:secret-pw@host/db", encryption_key=KEY)
    assert "secret-pw" not in str(err.value)
    rotated = open_store(
        "sqlite://:memory:", encryption_key={"a": KEY, "b": bytes(32)}, active_key_id="b"
    )
    assert isinstance(rotated, SqliteStore)
    with pytest.raises(ConfigurationError):
        open_store("sqlite://:memory:", encryption_key=b"short")
