"""Contract: live events (C6, D3) — in-process on SQLite, LISTEN/NOTIFY on PostgreSQL."""

from __future__ import annotations

import anyio
import pytest
from store_helpers import EVENT_BUFFER

from teams_ehr.errors import StorageError, UsageError
from teams_ehr.store._base import SqlStore
from teams_ehr.store._bus import MAX_EVENT_BYTES

pytestmark = pytest.mark.anyio


async def test_subscriber_gets_messages_after_subscribing(
    store: SqlStore, other_instance: SqlStore, engine: str
) -> None:
    # SQLite's bus is in-process per store; PostgreSQL's reaches every instance.
    publisher = other_instance if engine == "postgres" else store
    await store.publish("visit/1", "before")
    async with store.subscribe("visit/1") as sub, store.subscribe("visit/1") as twin:
        await publisher.publish("visit/1", "one")
        await publisher.publish("visit/2", "elsewhere")
        await store.publish("visit/1", "two")
        with anyio.fail_after(30):
            assert [await sub.__anext__(), await sub.__anext__()] == ["one", "two"]
            assert [await twin.__anext__(), await twin.__anext__()] == ["one", "two"]


async def test_channel_names_need_no_escaping(store: SqlStore) -> None:
    channel = "org 'a'; DROP TABLE x; -- ☃/visit/" + "z" * 200
    async with store.subscribe(channel) as sub:
        await store.publish(channel, "ok ✓")
        with anyio.fail_after(30):
            assert await sub.__anext__() == "ok ✓"


async def test_oversized_message_refused(store: SqlStore) -> None:
    with pytest.raises(StorageError) as err:
        await store.publish("visit/1", "x" * (MAX_EVENT_BYTES + 1))
    assert err.value.reason == "event_too_large"
    await store.publish("visit/1", "é" * (MAX_EVENT_BYTES // 2))
    with pytest.raises(UsageError):
        await store.publish("", "m")


async def test_slow_subscriber_is_disconnected_not_blocking(store: SqlStore) -> None:
    async with store.subscribe("visit/9") as slow, store.subscribe("visit/9") as fast:
        received: list[str] = []
        for n in range(EVENT_BUFFER + 1):
            await store.publish("visit/9", str(n))
            with anyio.fail_after(30):
                received.append(await fast.__anext__())
        assert received == [str(n) for n in range(EVENT_BUFFER + 1)]
        got = [await slow.__anext__() for _ in range(EVENT_BUFFER)]
        assert got == [str(n) for n in range(EVENT_BUFFER)]
        with pytest.raises(StorageError) as err:
            await slow.__anext__()
        assert err.value.reason == "event_overflow"


async def test_iteration_ends_when_store_closes(maker: object) -> None:
    from store_helpers import StoreMaker

    assert isinstance(maker, StoreMaker)
    store = maker.make()
    await store.open()
    sub = store.subscribe("visit/3")
    await sub.ready()
    await store.publish("visit/3", "last")
    with anyio.fail_after(30):
        first = await sub.__anext__()
    await store.aclose()
    assert first == "last"
    assert [m async for m in sub] == []
    with pytest.raises(UsageError):
        store.subscribe("visit/3")
    async with store, store.subscribe("visit/3") as again:  # reopened: a fresh bus
        await store.publish("visit/3", "reopened")
        with anyio.fail_after(30):
            assert await again.__anext__() == "reopened"


async def test_cancelled_waits_lose_no_message(store: SqlStore) -> None:
    """Viewers wait with a timeout (SSE heartbeats); a cancelled wait must not eat a message."""
    got: list[str] = []
    async with store.subscribe("visit/5") as sub:

        async def publish_all() -> None:
            for n in range(EVENT_BUFFER * 4):
                await store.publish("visit/5", str(n))
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(publish_all)
            with anyio.fail_after(60):
                while len(got) < EVENT_BUFFER * 4:
                    with anyio.move_on_after(0):
                        got.append(await sub.__anext__())
                    await anyio.lowlevel.checkpoint()
    assert got == [str(n) for n in range(EVENT_BUFFER * 4)]
