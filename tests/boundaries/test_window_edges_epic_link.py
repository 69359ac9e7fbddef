"""Epic context-link timestamps, at, just before and just after each edge (requirement A10).

:func:`~teams_ehr.smart.epic_context_link.decrypt_context_link` accepts a link whose timestamp
is at most ``max_age`` old and at most ``link_format.max_skew`` in the future, both inclusive;
one microsecond further is ``stale_link`` / ``future_link``. The replay nonce lives until
``issued + max_age + max_skew`` (``now + …`` without a timestamp), exclusive like every nonce.
Timestamps are whole seconds (Unix seconds, or Epic's ``yyyyMMddHHmmss`` UTC); ``now`` moves by
one microsecond.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from clocks import Clock
from teams_ehr.errors import ContextLinkError
from teams_ehr.smart.epic_context_link import (
    DEFAULT_LINK_FORMAT,
    ContextLinkFormat,
    ContextLinkKey,
    decrypt_context_link,
    encrypt_context_link,
)
from teams_ehr.store.crypto import FieldCipher, new_encryption_key
from teams_ehr.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

ISSUED = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
TICK = timedelta(microseconds=1)
MAX_AGE = timedelta(minutes=5)
KEY = ContextLinkKey(bytes(range(32)))


@pytest.fixture
async def store(anyio_backend: str) -> AsyncIterator[tuple[SqliteStore, Clock]]:
    clock = Clock(ISSUED)
    cipher = FieldCipher(new_encryption_key())
    async with SqliteStore(":memory:", cipher=cipher, clock=clock) as opened:
        yield opened, clock


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


Stamp = Callable[[datetime], dict[str, str]]


def link(session: str, stamp: dict[str, str] | None = None) -> str:
    return encrypt_context_link({"SessionID": session, **(stamp or {})}, KEY)


def unix(at: datetime) -> dict[str, str]:
    """Vidyo's ``Timestamp``: Unix seconds."""
    return {"Timestamp": str(int(at.timestamp()))}


def epic(at: datetime) -> dict[str, str]:
    """Epic's ``epicTimestamp``: ``yyyyMMddHHmmss`` UTC."""
    return {"epicTimestamp": at.strftime("%Y%m%d%H%M%S")}


async def outcome(
    store: tuple[SqliteStore, Clock],
    encrypted: str,
    now: datetime,
    link_format: ContextLinkFormat = DEFAULT_LINK_FORMAT,
) -> str:
    nonces, clock = store
    clock.now = now
    try:
        await decrypt_context_link(
            encrypted, KEY, now=now, max_age=MAX_AGE, nonces=nonces, link_format=link_format
        )
    except ContextLinkError as exc:
        return exc.reason
    return "ok"


@pytest.mark.parametrize("stamp", [unix, epic])
async def test_max_age_edge(store: tuple[SqliteStore, Clock], stamp: Stamp) -> None:
    edge = ISSUED + MAX_AGE
    cases = [(edge - TICK, "ok"), (edge, "ok"), (edge + TICK, "stale_link")]
    for n, (now, expected) in enumerate(cases):
        assert await outcome(store, link(f"old-{n}", stamp(ISSUED)), now) == expected, now


@pytest.mark.parametrize("stamp", [unix, epic])
async def test_max_skew_edge(store: tuple[SqliteStore, Clock], stamp: Stamp) -> None:
    skew = DEFAULT_LINK_FORMAT.max_skew
    assert skew == timedelta(seconds=60)
    edge = ISSUED - skew  # the earliest ``now`` that still accepts a link issued at ISSUED
    cases = [(edge - TICK, "future_link"), (edge, "ok"), (edge + TICK, "ok")]
    for n, (now, expected) in enumerate(cases):
        assert await outcome(store, link(f"new-{n}", stamp(ISSUED)), now) == expected, now


async def test_zero_skew_and_zero_age_leave_one_instant(store: tuple[SqliteStore, Clock]) -> None:
    strict = ContextLinkFormat(max_skew=timedelta(0))
    stamp = unix(ISSUED)
    assert await outcome(store, link("a", stamp), ISSUED - TICK, strict) == "future_link"
    assert await outcome(store, link("b", stamp), ISSUED, strict) == "ok"
    with pytest.raises(ValidationError):
        ContextLinkFormat(max_skew=-TICK)


async def test_replay_is_refused_until_the_link_is_stale(store: tuple[SqliteStore, Clock]) -> None:
    encrypted = link("once", unix(ISSUED))
    assert await outcome(store, encrypted, ISSUED) == "ok"
    assert await outcome(store, encrypted, ISSUED + MAX_AGE) == "replayed"
    assert await outcome(store, encrypted, ISSUED + MAX_AGE + TICK) == "stale_link"


async def test_replay_window_without_timestamp(store: tuple[SqliteStore, Clock]) -> None:
    loose = ContextLinkFormat(require_timestamp=False)
    encrypted = link("no-stamp")
    first = ISSUED + timedelta(milliseconds=250)
    forgotten = first + MAX_AGE + loose.max_skew
    assert await outcome(store, encrypted, first, loose) == "ok"
    assert await outcome(store, encrypted, forgotten - TICK, loose) == "replayed"
    assert await outcome(store, encrypted, forgotten, loose) == "ok"
    assert await outcome(store, encrypted, forgotten + TICK, loose) == "replayed"
    assert await outcome(store, link("no-stamp-2"), first) == "missing_timestamp"
