"""Group commit: concurrent inbox appends share one transaction and one fsync (requirements D1, P4).

The webhook must not answer 2xx before its notifications are durably committed (invariant
I1), and on SQLite a durable commit costs one fsync (0.2–5 ms depending on the disk and its
load). Serializing one commit per webhook request caps throughput at one request per fsync.
Here the first caller becomes the *leader*: it takes every batch queued so far and commits them
together; callers arriving meanwhile queue up and the next of them leads the following commit.
Every caller still returns only after the commit that holds its rows — durability per caller is
unchanged, but N concurrent requests cost one fsync instead of N.

Each caller's rows run in their own savepoint (see ``SqliteStore``), so one caller's failure never
fails another's. A caller cancelled while waiting withdraws its rows unless a commit already
holds them (then they commit: at-least-once, the inbox dedupes redeliveries) and hands the
leadership on, so nobody hangs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio

from teams_ehr.errors import StorageError

Rows = Sequence[tuple[Any, ...]]
Flush = Callable[[list[Rows]], Awaitable[list[int | StorageError]]]


class _Waiter:
    __slots__ = ("_event", "outcome", "rows")

    def __init__(self, rows: Rows) -> None:
        self.rows = rows
        self.outcome: int | StorageError | None = None
        self._event = anyio.Event()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = anyio.Event()

    def wake(self) -> None:
        self._event.set()

    def finish(self, outcome: int | StorageError) -> None:
        self.outcome = outcome
        self._event.set()


class GroupCommit:
    """Coalesce concurrent :meth:`submit` calls into shared ``flush`` calls."""

    def __init__(self, flush: Flush) -> None:
        self._flush = flush
        self._queue: list[_Waiter] = []
        self._busy = False
        self.flushes = 0
        """How many shared transactions ran (observability and tests)."""

    async def submit(self, rows: Rows) -> int:
        """Queue ``rows``; returns once they are committed (the count of new rows)."""
        waiter = _Waiter(rows)
        self._queue.append(waiter)
        while waiter.outcome is None:
            if self._busy:
                try:
                    await waiter.wait()
                except BaseException:
                    self._abandon(waiter)
                    raise
                continue
            await self._lead()
        if isinstance(waiter.outcome, StorageError):
            raise StorageError(str(waiter.outcome), reason=waiter.outcome.reason) from None
        return waiter.outcome

    async def _lead(self) -> None:
        self._busy = True
        batch, self._queue = self._queue, []
        failed = StorageError("inbox commit failed")
        outcomes: list[int | StorageError] = [failed] * len(batch)
        try:
            with anyio.CancelScope(shield=True):  # finish the commit the others wait on
                try:
                    outcomes = await self._flush([w.rows for w in batch])
                except StorageError as exc:
                    outcomes = [exc] * len(batch)
                self.flushes += 1
        finally:
            self._busy = False
            for w, outcome in zip(batch, outcomes, strict=True):
                w.finish(outcome)
            self._promote()

    def _abandon(self, waiter: _Waiter) -> None:
        if waiter in self._queue:
            self._queue.remove(waiter)
        if not self._busy:
            self._promote()

    def _promote(self) -> None:
        if self._queue:
            self._queue[0].wake()
