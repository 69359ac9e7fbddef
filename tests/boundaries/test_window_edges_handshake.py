"""The Graph validation handshake window, at, just before and just after its edges (threat T21).

Graph docs, *Receive change notifications through webhooks*: a validation request is answered
within 10 seconds of the subscription request. Both registries keep the window half-open,
``[open, open + HANDSHAKE_WINDOW)``: at the closing instant the answer is ``404``
``validation_not_pending``, as it is for every nonce in the store (``expires_at <= now`` is gone).
:class:`SharedHandshakes` keeps one row per window holding its end only (so it has no opening
edge) and deletes it when the window closes early.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest

from clocks import Clock
from teams_ehr.attendance.handshake import (
    HANDSHAKE_WINDOW,
    HandshakeKind,
    HandshakeRegistry,
    PendingHandshakes,
    SharedHandshakes,
    handle_validation,
)
from teams_ehr.store.crypto import FieldCipher, new_encryption_key
from teams_ehr.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
TICK = timedelta(microseconds=1)
BOTH: frozenset[HandshakeKind] = frozenset({"notification", "lifecycle"})


@asynccontextmanager
async def registry(kind: str, clock: Clock) -> AsyncIterator[HandshakeRegistry]:
    if kind == "memory":
        yield PendingHandshakes()
        return
    cipher = FieldCipher(new_encryption_key())
    async with SqliteStore(":memory:", cipher=cipher, clock=clock) as store:
        yield SharedHandshakes(store)


async def answer(
    handshakes: HandshakeRegistry, clock: Clock, now: datetime
) -> tuple[int, tuple[str, ...]]:
    clock.now = now  # the store sweeps expired windows at its own clock: the same instant
    result = await handle_validation(
        {"validationToken": "tok"}, handshakes=handshakes, kind="notification", now=now
    )
    return result.status, result.rejected


REFUSED = (404, ("validation_not_pending",))
ANSWERED = (200, ())


def test_window_is_graphs_ten_seconds() -> None:
    assert timedelta(seconds=10) == HANDSHAKE_WINDOW


@pytest.mark.parametrize("kind", ["memory", "shared"])
@pytest.mark.parametrize("opened", [T0, T0 + timedelta(milliseconds=250)])
async def test_closing_edge(kind: str, opened: datetime, anyio_backend: str) -> None:
    clock = Clock(opened)
    async with registry(kind, clock) as handshakes:
        await handshakes.open(opened, BOTH)
        closes = opened + HANDSHAKE_WINDOW
        assert await answer(handshakes, clock, opened) == ANSWERED
        assert await answer(handshakes, clock, closes - TICK) == ANSWERED
        assert await answer(handshakes, clock, closes) == REFUSED
        assert await answer(handshakes, clock, closes + TICK) == REFUSED


async def test_shared_window_has_no_opening_edge(anyio_backend: str) -> None:
    """The row keeps the window's end only: an instance whose clock runs a little behind the
    opener's still answers (no rounding to the second, no refusal before the opening)."""
    opened = T0 + timedelta(milliseconds=250)
    clock = Clock(opened)
    async with registry("shared", clock) as handshakes:
        await handshakes.open(opened, BOTH)
        assert await answer(handshakes, clock, T0) == ANSWERED
        assert await answer(handshakes, clock, opened - TICK) == ANSWERED


async def test_a_shared_window_closed_early_refuses_at_once(anyio_backend: str) -> None:
    clock = Clock(T0)
    async with registry("shared", clock) as handshakes:
        handle = await handshakes.open(T0, BOTH)
        assert await answer(handshakes, clock, T0 + TICK) == ANSWERED
        await handshakes.close(handle)
        assert await answer(handshakes, clock, T0 + TICK) == REFUSED


async def test_a_window_closed_early_refuses_at_once(anyio_backend: str) -> None:
    handshakes = PendingHandshakes()
    clock = Clock(T0)
    handle = await handshakes.open(T0, BOTH)
    assert await answer(handshakes, clock, T0 + TICK) == ANSWERED
    await handshakes.close(handle)
    assert await answer(handshakes, clock, T0 + TICK) == REFUSED
