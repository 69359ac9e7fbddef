"""Worker-thread hops and pragmas of the SQLite store, counted (issue 11, "a launch near its
floor"): ``PRAGMA synchronous`` runs only when a commit needs another level than the connection
has, a read on an idle connection runs without a thread hop, a busy connection still serializes
reads through the worker thread, and ``replace_pending`` is one transaction on every engine."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anyio
import anyio.to_thread
import pytest
from store_helpers import FakeClock

from teams_ehr.errors import StorageConflictError
from teams_ehr.store import sqlite as sqlite_module
from teams_ehr.store._base import SqlStore
from teams_ehr.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio


class Hops:
    """Counts ``anyio.to_thread.run_sync`` calls made by the SQLite store."""

    def __init__(self) -> None:
        self.count = 0


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> Hops:
    counter = Hops()
    real = anyio.to_thread.run_sync

    async def counted(func: Callable[[], Any], *args: Any, **kwargs: Any) -> Any:
        counter.count += 1
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(sqlite_module.anyio.to_thread, "run_sync", counted)
    return counter


def _statements(store: SqliteStore) -> list[str]:
    seen: list[str] = []
    conn = store._require()
    conn.set_trace_callback(seen.append)
    return seen


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_pragma_synchronous_only_on_a_change_of_level(
    tmp_path: Any, clock: FakeClock, cipher: Any
) -> None:
    async with SqliteStore(str(tmp_path / "s.db"), cipher=cipher, clock=clock) as store:
        later = clock() + timedelta(minutes=5)
        await store.put_pending("k", org_id="org-a", payload=b"x", expires_at=later)
        seen = _statements(store)  # the connection is at NORMAL now (the migration was FULL)
        for n in range(3):  # NORMAL commits on a NORMAL connection: no pragma
            await store.put_pending(f"k{n}", org_id="org-a", payload=b"x", expires_at=later)
        assert [s for s in seen if "synchronous" in s] == []
        for n in range(3):  # durable commits: one switch to FULL, then none
            await store.remember_once("launch", f"n{n}", expires_at=later)
        assert [s for s in seen if "synchronous" in s] == ["PRAGMA synchronous = FULL"]
        await store.take_pending("k0", now=clock())
        assert [s for s in seen if "synchronous" in s][-1] == "PRAGMA synchronous = NORMAL"
        assert sum("synchronous" in s for s in seen) == 2
        assert sum(s == "BEGIN IMMEDIATE" for s in seen) == 7


async def test_a_read_on_an_idle_connection_takes_no_thread_hop(
    tmp_path: Any, clock: FakeClock, cipher: Any, hops: Hops
) -> None:
    async with SqliteStore(str(tmp_path / "s.db"), cipher=cipher, clock=clock) as store:
        await store.put_organization("org-a", {"org_id": "org-a"}, expected_version=None)
        before = hops.count
        row = await store.get_organization("org-a")
        assert row is not None
        assert hops.count == before
        await store.put_organization("org-b", {"org_id": "org-b"}, expected_version=None)
        assert hops.count == before + 1  # a write keeps its worker thread


async def test_a_read_waits_for_a_busy_connection_in_the_worker(
    tmp_path: Any, clock: FakeClock, cipher: Any, hops: Hops
) -> None:
    async with SqliteStore(str(tmp_path / "s.db"), cipher=cipher, clock=clock) as store:
        await store.put_organization("org-a", {"org_id": "org-a"}, expected_version=None)
        held, release = anyio.Event(), anyio.Event()
        got: list[Any] = []

        async def holder() -> None:
            async with store._limiter:  # another task is using the connection
                held.set()
                await release.wait()

        async def reader() -> None:
            await held.wait()
            got.append(await store.get_organization("org-a"))

        before = hops.count
        async with anyio.create_task_group() as tg:
            tg.start_soon(holder)
            tg.start_soon(reader)
            await held.wait()
            for _ in range(5):
                await anyio.lowlevel.checkpoint()
            assert got == []  # not read while the connection is held
            release.set()
        assert got
        assert got[0] is not None
        assert got[0].org_id == "org-a"
        assert hops.count == before + 1


async def test_a_failed_inline_read_is_a_storage_error_and_frees_the_connection(
    tmp_path: Any, clock: FakeClock, cipher: Any
) -> None:
    from teams_ehr.errors import StorageError
    from teams_ehr.store._base import Stmt

    async with SqliteStore(str(tmp_path / "s.db"), cipher=cipher, clock=clock) as store:
        with pytest.raises(StorageError):
            await store._tx([Stmt("SELECT * FROM no_such_table", (), "all")], write=False)
        assert store._limiter.borrowed_tokens == 0
        assert await store.get_organization("nobody") is None


# -- replace_pending, every engine ----------------------------------------------------------


async def test_replace_pending_is_one_transaction(store: SqlStore, clock: FakeClock) -> None:
    calls: list[int] = []
    real = store._tx

    async def counted(stmts: Any, **kwargs: Any) -> list[Any]:
        calls.append(len(stmts))
        return await real(stmts, **kwargs)

    store._tx = counted  # type: ignore[method-assign]
    later = clock() + timedelta(minutes=5)
    await store.replace_pending("k", org_id="org-a", payload=b"one", expires_at=later, now=clock())
    await store.replace_pending("k", org_id="org-a", payload=b"two", expires_at=later, now=clock())
    kept = await store.replace_pending(
        "k", org_id="org-a", payload=b"three", expires_at=later, now=clock(), keep_live=True
    )
    assert len(calls) == 3
    assert kept == b"two"
    assert await store.take_pending("k", now=clock()) == ("org-a", b"two")


async def test_replace_pending_keep_live_semantics(store: SqlStore, clock: FakeClock) -> None:
    now = clock()
    soon, later = now + timedelta(minutes=1), now + timedelta(hours=1)
    # nothing there: the new payload goes in
    got = await store.replace_pending(
        "k", org_id="org-a", payload=b"new", expires_at=soon, now=now, keep_live=True
    )
    assert got == b"new"
    # live: kept, with the new expiry
    got = await store.replace_pending(
        "k", org_id="org-a", payload=b"newer", expires_at=later, now=now, keep_live=True
    )
    assert got == b"new"
    clock.advance(120)  # past the first expiry, before the second
    assert await store.take_pending("k", now=clock()) == ("org-a", b"new")
    # expired: replaced
    await store.put_pending("k", org_id="org-a", payload=b"old", expires_at=soon)
    got = await store.replace_pending(
        "k", org_id="org-a", payload=b"fresh", expires_at=later, now=clock(), keep_live=True
    )
    assert got == b"fresh"
    assert await store.take_pending("k", now=clock()) == ("org-a", b"fresh")


async def test_replace_pending_never_touches_another_orgs_row(
    store: SqlStore, clock: FakeClock
) -> None:
    later = clock() + timedelta(minutes=5)
    await store.put_pending("k", org_id="org-b", payload=b"theirs", expires_at=later)
    for keep_live in (False, True):
        with pytest.raises(StorageConflictError):
            await store.replace_pending(
                "k",
                org_id="org-a",
                payload=b"ours",
                expires_at=later,
                now=clock(),
                keep_live=keep_live,
            )
    assert await store.take_pending("k", now=clock()) == ("org-b", b"theirs")
