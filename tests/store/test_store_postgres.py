"""PostgreSQL only: concurrent migrations, LISTEN reconnect, channel names, asyncio only (C6)."""

from __future__ import annotations

import re

import anyio
import psycopg
import pytest
import trio
from store_helpers import PG_BASE, FakeClock, raw

from teams_ehr.errors import ConfigurationError, StorageError
from teams_ehr.store._pg_events import channel_name
from teams_ehr.store.crypto import FieldCipher
from teams_ehr.store.migrations import MIGRATIONS
from teams_ehr.store.postgres import PostgresStore

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


@pytest.fixture
def anyio_backend() -> str:
    """psycopg's async connections run on asyncio only."""
    return "asyncio"


async def test_two_instances_migrate_at_once(
    pg_dsn: str, cipher: FieldCipher, clock: FakeClock
) -> None:
    stores = [
        PostgresStore(pg_dsn, cipher=cipher, clock=clock, auto_migrate=False) for _ in range(3)
    ]
    try:
        async with anyio.create_task_group() as tg:
            for store in stores:
                await store.open()
                tg.start_soon(store.migrate)
        rows = await raw(stores[0], "SELECT version FROM schema_migrations")
        assert sorted(v for (v,) in rows) == [m.version for m in MIGRATIONS]
    finally:
        for store in stores:
            await store.aclose()


async def test_listener_reconnects_after_connection_loss(
    pg_dsn: str, cipher: FieldCipher, clock: FakeClock
) -> None:
    store = PostgresStore(pg_dsn, cipher=cipher, clock=clock)
    async with store, store.subscribe("visit/7") as sub:
        listener = store._listener
        assert listener is not None
        assert listener.generation == 1
        async with await psycopg.AsyncConnection.connect(PG_BASE, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", (listener.backend_pid,))
        with anyio.fail_after(60):
            await listener.wait_generation(2)
            await store.publish("visit/7", "after reconnect")
            assert await sub.__anext__() == "after reconnect"


async def test_unsubscribed_channels_are_unlistened(
    pg_dsn: str, cipher: FieldCipher, clock: FakeClock
) -> None:
    async with PostgresStore(pg_dsn, cipher=cipher, clock=clock) as store:
        listener = store._listener
        assert listener is not None
        async with store.subscribe("visit/a"), store.subscribe("visit/b"):
            assert set(listener._listening.values()) == {"visit/a", "visit/b"}
        async with store.subscribe("visit/c") as c:
            await store.publish("visit/c", "x")
            with anyio.fail_after(30):
                assert await c.__anext__() == "x"
            assert set(listener._listening.values()) == {"visit/c"}


async def test_pool_replaces_connections_the_server_dropped(
    pg_dsn: str, cipher: FieldCipher, clock: FakeClock
) -> None:
    async with PostgresStore(pg_dsn, cipher=cipher, clock=clock, max_size=1) as store:
        await store.put_organization("org-a", {}, expected_version=None)
        ((pid,),) = await raw(store, "SELECT pg_backend_pid()")
        async with await psycopg.AsyncConnection.connect(PG_BASE, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert await store.get_organization("org-a") is not None
        assert await raw(store, "SELECT pg_backend_pid()") != [(pid,)]


def test_channel_names_are_valid_identifiers_per_schema() -> None:
    names = {channel_name("s1", f"visit/{n}") for n in range(200)}
    assert len(names) == 200
    for name in names:
        assert re.fullmatch(r"te_[0-9a-f]{40}", name)
    assert channel_name("s1", "visit/1") != channel_name("s2", "visit/1")


def test_refuses_trio(pg_dsn: str, cipher: FieldCipher) -> None:
    store = PostgresStore(pg_dsn, cipher=cipher)
    with pytest.raises(ConfigurationError) as err:
        trio.run(store.open)
    assert err.value.reason == "asyncio_required"


async def test_unreachable_server_is_a_storage_error(cipher: FieldCipher) -> None:
    dsn = "postgresql://postgres@127.0.0.1:1/test?connect_timeout=1"
    store = PostgresStore(dsn, cipher=cipher, pool_timeout=0.5)
    with pytest.raises(StorageError):
        await store.open()
