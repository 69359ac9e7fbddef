"""The shared concurrency helpers: keyed locks (async and threads) and single-flight calls."""

from __future__ import annotations

import threading
import time

import anyio
import pytest

from teams_ehr._concurrency import KeyedLocks, KeyedThreadLocks, SingleFlight


@pytest.mark.anyio
async def test_keyed_locks_serialize_one_key_and_are_dropped_when_unused() -> None:
    locks = KeyedLocks()
    inside: list[str] = []
    overlap: list[bool] = []

    async def work(key: tuple[str, str]) -> None:
        async with locks.hold(key):
            overlap.append(key[0] in inside)
            inside.append(key[0])
            await anyio.sleep(0.001)
            inside.remove(key[0])

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(work, ("a" if i % 2 else "b", "x"))
    assert overlap == [False] * 20
    assert len(locks) == 0


@pytest.mark.anyio
async def test_keyed_locks_let_other_keys_through() -> None:
    locks = KeyedLocks()
    async with locks.hold("a"):
        with anyio.fail_after(30):
            async with locks.hold("b"):
                assert len(locks) == 2
    assert len(locks) == 0


def test_keyed_thread_locks_serialize_one_key() -> None:
    locks = KeyedThreadLocks()
    active = 0
    peak = 0
    guard = threading.Lock()

    def work() -> None:
        nonlocal active, peak
        with locks.hold(("issuer", None)):
            with guard:
                active += 1
                peak = max(peak, active)
            time.sleep(0.001)
            with guard:
                active -= 1

    threads = [threading.Thread(target=work) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == 1
    assert len(locks) == 0


@pytest.mark.anyio
async def test_single_flight_shares_one_call_and_its_result() -> None:
    flights: SingleFlight[int] = SingleFlight()
    calls: list[int] = []
    results: list[int] = []

    async def call() -> int:
        calls.append(1)
        await anyio.sleep(0.01)
        return 42

    async def caller() -> None:
        results.append(await flights.run("grant-1", call))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(caller)
    assert calls == [1]
    assert results == [42] * 10
    assert len(flights) == 0
    assert await flights.run("grant-1", call) == 42  # nothing cached: a later call runs again
    assert calls == [1, 1]


@pytest.mark.anyio
async def test_single_flight_shares_the_error() -> None:
    flights: SingleFlight[int] = SingleFlight()
    errors: list[BaseException] = []

    async def call() -> int:
        await anyio.sleep(0.01)
        raise ValueError("spent")

    async def caller() -> None:
        try:
            await flights.run("grant-1", call)
        except ValueError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(caller)
    assert len(errors) == 5
    assert len({id(e) for e in errors}) == 1
    assert len(flights) == 0
