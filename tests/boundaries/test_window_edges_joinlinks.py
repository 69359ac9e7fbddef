"""The join link validity window, at, just before and just after both edges (threat T20).

:class:`~teams_ehr.visits.joinlinks.JoinLinkService` keeps the window half-open: valid from
``start − before`` inclusive until ``end + after`` exclusive. tests/joinlinks pins the default
window on the in-memory store and SQLite; here every edge is probed one microsecond either side,
with the default and with zero margins, on SQLite and PostgreSQL (both keep microseconds).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from clocks import Clock
from teams_ehr.errors import JoinLinkInvalidError
from teams_ehr.store.crypto import FieldCipher, new_encryption_key
from teams_ehr.store.postgres import PostgresStore
from teams_ehr.store.sqlite import SqliteStore
from teams_ehr.visits.joinlinks import JoinLinkService

pytestmark = pytest.mark.anyio

START = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
END = START + timedelta(minutes=30)
TICK = timedelta(microseconds=1)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # psycopg's async pool runs on asyncio


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def open_store(
    engine: str, clock: Clock, request: pytest.FixtureRequest
) -> AsyncIterator[Any]:
    cipher = FieldCipher(new_encryption_key())
    if engine == "sqlite":
        async with SqliteStore(":memory:", cipher=cipher, clock=clock) as store:
            yield store
        return
    dsn = request.getfixturevalue("postgres_dsn")
    async with PostgresStore(dsn, cipher=cipher, clock=clock) as store:
        yield store


async def outcome(svc: JoinLinkService, clock: Clock, token: str, now: datetime) -> str:
    clock.now = now
    try:
        await svc.resolve(token, client_key=f"client-{now.isoformat()}")
    except JoinLinkInvalidError as exc:
        return exc.reason
    return "valid"


@pytest.mark.parametrize(
    ("before", "after"),
    [(timedelta(minutes=30), timedelta(minutes=60)), (timedelta(0), timedelta(0))],
)
async def test_both_edges(
    engine: str, before: timedelta, after: timedelta, request: pytest.FixtureRequest
) -> None:
    clock = Clock(START - timedelta(hours=2))
    async with open_store(engine, clock, request) as store:
        svc = JoinLinkService(store, store, clock=clock, before=before, after=after)
        token = await svc.issue("org-a", "meeting-1", START, END)
        opens, closes = START - before, END + after
        observed = [await outcome(svc, clock, token, now) for now in _around(opens, closes)]
        assert observed == [
            "not_yet_valid",  # opens − 1 µs
            "valid",  # opens
            "valid",  # opens + 1 µs
            "valid",  # closes − 1 µs
            "expired",  # closes
            "expired",  # closes + 1 µs
        ]


def _around(opens: datetime, closes: datetime) -> list[datetime]:
    return [opens - TICK, opens, opens + TICK, closes - TICK, closes, closes + TICK]


async def test_a_zero_length_meeting_with_zero_margins_is_never_valid(
    engine: str, request: pytest.FixtureRequest
) -> None:
    clock = Clock(START - timedelta(hours=1))
    async with open_store(engine, clock, request) as store:
        svc = JoinLinkService(store, store, clock=clock, before=timedelta(0), after=timedelta(0))
        token = await svc.issue("org-a", "meeting-0", START, START)
        assert await outcome(svc, clock, token, START - TICK) == "not_yet_valid"
        assert await outcome(svc, clock, token, START) == "expired"
