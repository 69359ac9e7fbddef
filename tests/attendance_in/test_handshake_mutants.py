"""T21 validation-handshake edges that ``nox -s mutants -- attendance/handshake.py`` left open.

Window ends at exactly ``open + window`` (and 1 µs before), overlapping windows closed one at a
time, the one row a shared window writes, reads and deletes, query parsing limits at their edge
(20 fields, 1,024 characters, blank values, raw bytes as Latin-1) and every refusal's status,
body, reason and ``security_event`` record.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from teams_ehr.attendance.handshake import (
    MAX_VALIDATION_TOKEN_CHARS,
    PendingHandshakes,
    SharedHandshakes,
    handle_validation,
)
from teams_ehr.store.crypto import FieldCipher, new_encryption_key
from teams_ehr.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio
NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
T = datetime(2026, 3, 2, 15, 0, 0, 500_000, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # SqliteStore's worker threads


async def _answer(query: Any, handshakes: Any, kind: str = "notification", now: datetime = NOW):
    return await handle_validation(query, handshakes=handshakes, kind=kind, now=now)  # type: ignore[arg-type]


async def _pending(**kw: Any) -> PendingHandshakes:
    handshakes = PendingHandshakes(**kw)
    await handshakes.open(NOW, frozenset({"notification"}))
    return handshakes


# -- process-local windows ------------------------------------------------------------------------


async def test_window_ends_exactly_at_open_plus_window() -> None:
    handshakes = await _pending()
    assert await handshakes.is_pending("notification", NOW + timedelta(seconds=10) - ONE_US)
    assert not await handshakes.is_pending("notification", NOW + timedelta(seconds=10))
    short = await _pending(window=timedelta(seconds=3))
    assert await short.is_pending("notification", NOW + timedelta(seconds=3) - ONE_US)
    assert not await short.is_pending("notification", NOW + timedelta(seconds=3))


async def test_overlapping_windows_close_one_at_a_time() -> None:
    handshakes = PendingHandshakes()
    first = await handshakes.open(NOW, frozenset({"notification"}))
    second = await handshakes.open(NOW, frozenset({"notification"}))
    assert first != second
    await handshakes.close(first)
    assert await handshakes.is_pending("notification", NOW)
    await handshakes.close(first)  # closing twice is harmless
    await handshakes.close("not-a-handle")
    assert await handshakes.is_pending("notification", NOW)
    await handshakes.close(second)
    assert not await handshakes.is_pending("notification", NOW)


async def test_an_expired_window_does_not_hide_a_live_one() -> None:
    handshakes = PendingHandshakes()
    await handshakes.open(NOW, frozenset({"lifecycle"}))
    await handshakes.open(NOW + timedelta(seconds=5), frozenset({"notification"}))
    later = NOW + timedelta(seconds=12)
    assert not await handshakes.is_pending("lifecycle", later)
    assert await handshakes.is_pending("notification", later)


# -- shared windows: one row each -----------------------------------------------------------------


class RecordingHandshakes:
    """A real SqliteStore's handshake table, with every call recorded."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.calls: list[tuple[Any, ...]] = []

    async def open_handshake(self, handshake_id: str, kinds: Any, *, expires_at: datetime) -> None:
        self.calls.append(("open", handshake_id, tuple(kinds), expires_at))
        await self.store.open_handshake(handshake_id, kinds, expires_at=expires_at)

    async def close_handshake(self, handshake_id: str) -> None:
        self.calls.append(("close", handshake_id))
        await self.store.close_handshake(handshake_id)

    async def handshake_pending(self, kind: str, *, now: datetime) -> bool:
        pending = await self.store.handshake_pending(kind, now=now)
        self.calls.append(("pending", kind, now, pending))
        return pending


class _Clock:
    def __init__(self) -> None:
        self.now = T

    def __call__(self) -> datetime:
        return self.now


async def test_shared_window_is_one_row_closed_early() -> None:
    clock = _Clock()
    async with SqliteStore(":memory:", cipher=FieldCipher(new_encryption_key()), clock=clock) as s:
        recorded = RecordingHandshakes(s)
        shared = SharedHandshakes(recorded, window=timedelta(seconds=2))
        handle = await shared.open(T, frozenset({"notification", "lifecycle"}))
        until = T + timedelta(seconds=2)
        assert recorded.calls == [("open", handle, ("lifecycle", "notification"), until)]
        assert isinstance(handle, str)
        assert len(handle) == 32
        assert await s._read("SELECT kinds FROM handshakes", ()) == [(",lifecycle,notification,",)]
        recorded.calls.clear()
        assert await shared.is_pending("notification", T)  # the opener answers from memory
        assert recorded.calls == []
        other = SharedHandshakes(recorded, window=timedelta(seconds=2))  # another instance
        clock.now = until - ONE_US
        assert await other.is_pending("lifecycle", clock.now)
        assert not await other.is_pending("lifecycle", until)  # ends exactly at open + window
        assert not await shared.is_pending("lifecycle", until)
        assert recorded.calls == [
            ("pending", "lifecycle", until - ONE_US, True),
            ("pending", "lifecycle", until, False),
            ("pending", "lifecycle", until, False),
        ]
        await shared.close(handle)
        assert not await shared.is_pending("lifecycle", T)  # closed before it expired
        assert not await other.is_pending("lifecycle", T)
        assert await s._read("SELECT kinds FROM handshakes", ()) == []
        await shared.close(handle)  # closing twice is harmless
        await shared.close(("not", "a", "handle"))


# -- handle_validation ----------------------------------------------------------------------------


async def test_raw_bytes_are_latin1_and_percent_escapes_utf8() -> None:
    handshakes = await _pending()
    assert (await _answer(b"validationToken=caf\xe9", handshakes)).body == "café".encode()
    assert (await _answer(b"validationToken=caf%C3%A9", handshakes)).body == "café".encode()


async def test_blank_token_is_echoed_blank() -> None:
    result = await _answer("validationToken=&other=1", await _pending())
    assert (result.status, result.body, result.accepted) == (200, b"", 1)


async def test_twenty_query_fields_parse_twenty_one_do_not() -> None:
    handshakes = await _pending()
    fields = [f"f{i}=1" for i in range(19)]
    ok = await _answer("&".join(["validationToken=t", *fields]), handshakes)
    assert (ok.status, ok.body) == (200, b"t")
    too_many = await _answer("&".join(["validationToken=t", *fields, "f19=1"]), handshakes)
    assert (too_many.status, too_many.body, too_many.rejected) == (
        400,
        b"bad request",
        ("malformed_query",),
    )


async def test_token_length_edge() -> None:
    handshakes = await _pending()
    longest = "x" * MAX_VALIDATION_TOKEN_CHARS
    ok = await _answer({"validationToken": longest}, handshakes)
    assert (ok.status, ok.body) == (200, longest.encode())
    refused = await _answer({"validationToken": longest + "x"}, handshakes)
    assert (refused.status, refused.body, refused.rejected) == (
        400,
        b"bad request",
        ("validation_token_too_long",),
    )


@pytest.mark.parametrize(
    ("query", "reason"),
    [({}, "no_validation_token"), ({"validationToken": "a\ud800"}, "malformed_query")],
)
async def test_refusals_are_exact(query: dict[str, str], reason: str) -> None:
    result = await _answer(query, await _pending())
    assert (result.status, result.body, result.rejected, result.accepted) == (
        400,
        b"bad request",
        (reason,),
        0,
    )


async def test_not_pending_is_a_404_security_event(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="teams_ehr")
    result = await _answer({"validationToken": "tok"}, PendingHandshakes())
    assert (result.status, result.body, result.rejected) == (
        404,
        b"not found",
        ("validation_not_pending",),
    )
    records = [
        (r.levelno, r.getMessage(), getattr(r, "security_event", None))
        for r in caplog.records
        if r.name == "teams_ehr.attendance.handshake"
    ]
    assert records == [
        (
            logging.WARNING,
            "webhook validation refused: no pending subscription",
            "validation_not_pending",
        )
    ]
