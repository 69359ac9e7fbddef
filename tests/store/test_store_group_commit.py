"""Group commit of inbox appends: shared transactions, per-caller outcomes, no hangs (D1, P4)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from store_helpers import FakeClock, raw

from teams_ehr.errors import StorageError
from teams_ehr.store._group_commit import GroupCommit, Rows
from teams_ehr.store.protocol import InboxItem
from teams_ehr.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio
ENGINES_USED = {"sqlite-file", "sqlite-memory"}  # for the tests that take a store


class ScriptedFlush:
    """Records the batches; the first flush waits for ``release``."""

    def __init__(self) -> None:
        self.batches: list[list[Rows]] = []
        self.started = anyio.Event()
        self.release = anyio.Event()

    async def __call__(self, parts: list[Rows]) -> list[int | StorageError]:
        self.batches.append(parts)
        self.started.set()
        if len(self.batches) == 1:
            await self.release.wait()
        return [
            StorageError("bad", reason="integrity") if r == [("bad",)] else len(r) for r in parts
        ]


async def test_waiting_callers_share_the_next_commit() -> None:
    flush = ScriptedFlush()
    commit = GroupCommit(flush)
    results: dict[int, Any] = {}

    async def submit(n: int, rows: list[tuple[Any, ...]]) -> None:
        try:
            results[n] = await commit.submit(rows)
        except StorageError as exc:
            results[n] = exc.reason

    async with anyio.create_task_group() as tg:
        tg.start_soon(submit, 0, [("a",)])
        await flush.started.wait()
        for n in range(1, 10):
            tg.start_soon(submit, n, [("bad",)] if n == 5 else [("x",)] * n)
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        flush.release.set()
    assert [len(b) for b in flush.batches] == [1, 9]
    assert commit.flushes == 2
    assert results == {0: 1, **{n: n for n in range(1, 10) if n != 5}, 5: "integrity"}


async def test_failed_flush_fails_its_batch_only() -> None:
    calls = 0

    async def flaky(parts: list[Rows]) -> list[int | StorageError]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StorageError("disk full", reason="storage")
        return [len(p) for p in parts]

    commit = GroupCommit(flaky)
    with pytest.raises(StorageError):
        await commit.submit([("a",)])
    assert await commit.submit([("a",), ("b",)]) == 2


async def test_cancelled_waiter_withdraws_and_nobody_hangs() -> None:
    flush = ScriptedFlush()
    commit = GroupCommit(flush)
    done: list[int] = []

    async def submit(rows: list[tuple[Any, ...]]) -> None:
        done.append(await commit.submit(rows))

    async with anyio.create_task_group() as tg:
        tg.start_soon(submit, [("leader",)])
        await flush.started.wait()
        with anyio.CancelScope() as scope:
            scope.cancel()
            await commit.submit([("cancelled",)])
        tg.start_soon(submit, [("x",), ("y",)])
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        flush.release.set()
    assert sorted(done) == [1, 2]
    assert [("cancelled",)] not in [p for batch in flush.batches for p in batch]


async def test_sqlite_savepoint_isolates_a_failing_caller(
    store: SqliteStore, clock: FakeClock
) -> None:
    at = store._enc(clock())
    parts: list[Rows] = [
        [("org-a", "n1", b"sealed", at)],
        [("org-a", "n2", b"sealed", at), (None, "n3", b"sealed", at)],
        [("org-a", "n4", b"sealed", at), ("org-a", "n1", b"sealed", at)],
    ]
    outcomes = await store._flush_inbox(parts)
    assert outcomes[0] == 1
    assert isinstance(outcomes[1], StorageError)
    assert outcomes[2] == 1
    keys = [k for (k,) in await raw(store, "SELECT dedupe_key FROM inbox ORDER BY dedupe_key")]
    assert keys == ["n1", "n4"]


async def test_sqlite_concurrent_appends_are_coalesced(
    store: SqliteStore, clock: FakeClock
) -> None:
    counts: list[int] = []

    async def append(n: int) -> None:
        item = InboxItem("org-a", f"n{n % 30}", b"p", clock())
        counts.append(await store.append_inbox([item]))

    async with anyio.create_task_group() as tg:
        for n in range(60):
            tg.start_soon(append, n)
    assert sum(counts) == 30
    assert store._inbox_commit.flushes < 60
