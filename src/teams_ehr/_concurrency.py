"""Concurrency helpers shared by every cache and writer that single-flights work per key.

* :class:`KeyedLocks` — one :class:`anyio.Lock` per key (asyncio or trio), dropped when unused;
* :class:`KeyedThreadLocks` — the same for threads (the synchronous drivers' callers);
* :class:`SingleFlight` — concurrent callers for one key share one call *and its outcome* (the
  ``singleflight`` pattern): the first runs it, the others wait for its result or its error.

Locks are removed when their last holder leaves, so a process serving many organizations,
issuers or visits does not grow a lock per key it ever saw.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio

__all__ = ["KeyedLocks", "KeyedThreadLocks", "SingleFlight"]

V = TypeVar("V")


class KeyedLocks:
    """Per-key :class:`anyio.Lock` s that disappear when unused (no growth per visit, requirement P5)."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[anyio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = anyio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class KeyedThreadLocks:
    """Per-key :class:`threading.Lock` s that disappear when unused (thread-safe bookkeeping)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[Hashable, tuple[threading.Lock, int]] = {}

    def __len__(self) -> int:
        with self._guard:
            return len(self._locks)

    @contextmanager
    def hold(self, key: Hashable) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (None, 0))
            if lock is None:
                lock = threading.Lock()
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users <= 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


@dataclass
class _Call(Generic[V]):
    done: anyio.Event = field(default_factory=anyio.Event)
    error: BaseException | None = None
    result: V = field(init=False)  # set before ``done`` unless ``error`` is


class SingleFlight(Generic[V]):
    """Concurrent :meth:`run` calls for one key share one execution and its outcome.

    Unlike :class:`KeyedLocks` (callers take turns, each re-checking a cache), waiters never run
    ``call`` themselves: they receive the first caller's result, or its exception re-raised. Use
    it where running twice is harmful, e.g. spending a single-use refresh token (RFC 6749 §10.4).
    Nothing is cached: a call that starts after the previous one finished runs again.
    """

    def __init__(self) -> None:
        self._running: dict[Hashable, _Call[V]] = {}

    def __len__(self) -> int:
        return len(self._running)

    async def run(self, key: Hashable, call: Callable[[], Awaitable[V]]) -> V:
        running = self._running.get(key)
        if running is not None:
            await running.done.wait()
            if running.error is not None:
                raise running.error
            return running.result
        running = self._running[key] = _Call()
        try:
            value = await call()
        except BaseException as exc:
            running.error = exc
            raise
        else:
            running.result = value
            return value
        finally:
            del self._running[key]
            running.done.set()
