"""Validation handshake answered by any instance (C6): windows shared through the store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from attendance_in_support import Clock

from teams_ehr.attendance.handshake import SharedHandshakes, handle_validation
from teams_ehr.store.crypto import FieldCipher, new_encryption_key
from teams_ehr.store.postgres import PostgresStore
from teams_ehr.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio
T = datetime(2026, 3, 2, 15, 0, 0, 500_000, tzinfo=UTC)
BOTH = frozenset({"notification", "lifecycle"})


@pytest.fixture
def anyio_backend() -> str:
    """asyncio only: SqliteStore's worker threads need trio ≥ 0.32 on this anyio."""
    return "asyncio"


async def _status(registry: SharedHandshakes, kind: str, now: datetime) -> int:
    result = await handle_validation(
        {"validationToken": "tok"},
        handshakes=registry,
        kind=kind,
        now=now,  # type: ignore[arg-type]
    )
    return result.status


async def test_window_opened_on_one_instance_is_seen_by_another(tmp_path: Path) -> None:
    clock = Clock(T)
    key = new_encryption_key()
    path = str(tmp_path / "shared.sqlite")
    async with (
        SqliteStore(path, cipher=FieldCipher(key), clock=clock) as instance_a,
        SqliteStore(path, cipher=FieldCipher(key), clock=clock) as instance_b,
    ):
        a, b = SharedHandshakes(instance_a), SharedHandshakes(instance_b)
        # probes (e.g. an attacker's validation requests) never open a window
        for _ in range(3):
            assert await _status(b, "notification", clock()) == 404
        handle = await a.open(clock(), BOTH)  # type: ignore[arg-type]
        for seconds in (0, 4.2, 9.4):
            clock.now = T + timedelta(seconds=seconds)
            assert await _status(b, "notification", clock()) == 200
            assert await _status(b, "lifecycle", clock()) == 200
        clock.now = T + timedelta(seconds=10.1)
        assert await _status(b, "notification", clock()) == 404
        await a.close(handle)


async def test_window_is_per_path(tmp_path: Path) -> None:
    clock = Clock(T)
    async with SqliteStore(
        ":memory:", cipher=FieldCipher(new_encryption_key()), clock=clock
    ) as store:
        shared = SharedHandshakes(store)
        await shared.open(clock(), frozenset({"notification"}))
        assert await _status(shared, "notification", clock()) == 200
        assert await _status(shared, "lifecycle", clock()) == 404


async def test_window_closes_early_and_probes_write_nothing(tmp_path: Path) -> None:
    clock = Clock(T)
    key = new_encryption_key()
    path = str(tmp_path / "shared.sqlite")
    async with (
        SqliteStore(path, cipher=FieldCipher(key), clock=clock) as instance_a,
        SqliteStore(path, cipher=FieldCipher(key), clock=clock) as instance_b,
    ):
        a, b = SharedHandshakes(instance_a), SharedHandshakes(instance_b)
        handle = await a.open(clock(), BOTH)  # type: ignore[arg-type]
        for _ in range(20):  # Graph's two validation requests, and any number of probes
            assert await _status(b, "notification", clock()) == 200
        rows = await instance_b._read("SELECT handshake_id FROM handshakes", ())
        assert rows == [(handle,)]  # one row, however many seconds and requests
        await a.close(handle)  # the subscription request returned: the window closes now
        assert await _status(b, "notification", clock()) == 404
        assert await _status(b, "lifecycle", clock()) == 404


@pytest.mark.postgres
async def test_window_shared_through_postgresql(postgres_dsn: str) -> None:
    clock = Clock(T)
    key = new_encryption_key()
    async with (
        PostgresStore(postgres_dsn, cipher=FieldCipher(key), clock=clock) as instance_a,
        PostgresStore(postgres_dsn, cipher=FieldCipher(key), clock=clock) as instance_b,
    ):
        a, b = SharedHandshakes(instance_a), SharedHandshakes(instance_b)
        assert await _status(b, "notification", clock()) == 404
        handle = await a.open(clock(), frozenset({"lifecycle"}))
        assert await _status(b, "lifecycle", clock()) == 200
        assert await _status(b, "notification", clock()) == 404
        clock.now = T + timedelta(seconds=10)
        assert await _status(b, "lifecycle", clock()) == 404  # expired, even unclosed
        clock.now = T
        await a.close(handle)
        assert await _status(b, "lifecycle", clock()) == 404
