"""Property: the outbox follows a reference model of its state machine under random operations
(pending → leased → delivered | pending (retry) | dead → pending (requeue); leases expire)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from store_helpers import FakeClock, raw

from teams_ehr.store.crypto import FieldCipher
from teams_ehr.store.protocol import OutboxItem
from teams_ehr.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio
LEASE = timedelta(seconds=30)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Model:
    id: int
    key: str
    state: str
    not_before: datetime
    attempts: int = 0
    worker: str | None = None
    lease_until: datetime | None = None


workers = st.sampled_from(["w1", "w2"])
keys = st.integers(0, 2)  # few keys, so operations keep meeting the same rows
picks = st.integers(0, 3)  # 0-2: a leased (or dead, for requeue) row; 3: any row by key
delays = st.sampled_from([0, 0, 20])
ops = st.one_of(
    st.tuples(st.just("enqueue"), keys, delays),
    st.tuples(st.just("lease"), workers, st.integers(1, 2)),
    st.tuples(st.just("advance"), st.sampled_from([10, 30, 31])),
    st.tuples(st.just("delivered"), workers, picks),
    st.tuples(st.just("retry"), workers, picks, delays),
    st.tuples(st.just("dead"), workers, picks),
    st.tuples(st.just("requeue"), picks),
)


@settings(max_examples=100, deadline=None)
@given(steps=st.lists(ops, min_size=4, max_size=25))
async def test_outbox_matches_model(steps: list[tuple[object, ...]]) -> None:
    clock = FakeClock()
    model: dict[str, Model] = {}
    async with SqliteStore(":memory:", cipher=FieldCipher(bytes(32)), clock=clock) as store:
        for step in steps:
            await apply(store, model, clock, step)
            counts = {s: sum(m.state == s for m in model.values()) for s in ("pending", "leased")}
            counts |= {s: sum(m.state == s for m in model.values()) for s in ("delivered", "dead")}
            assert await store.outbox_counts() == counts


def pick(model: dict[str, Model], state: str, n: int) -> Model | None:
    candidates = [m for m in model.values() if m.state == state]
    if n < 3 and candidates:
        return candidates[n % len(candidates)]
    return model.get(f"k{n % 3}")


async def apply(
    store: SqliteStore, model: dict[str, Model], clock: FakeClock, step: tuple[object, ...]
) -> None:
    name, *args = step
    now = clock()
    if name == "enqueue":
        key, delay = f"k{args[0]}", timedelta(seconds=int(args[1]))  # type: ignore[call-overload]
        item = OutboxItem("org-a", key, "fhir", key.encode(), now + delay, now)
        new = await store.enqueue_outbox([item])
        assert new == (key not in model)
        if new:
            ids = dict(await raw(store, "SELECT idempotency_key, item_id FROM outbox"))
            model[key] = Model(int(ids[key]), key, "pending", now + delay)
    elif name == "lease":
        worker, limit = str(args[0]), int(args[1])  # type: ignore[call-overload]
        due = [
            m
            for m in model.values()
            if (m.state == "pending" and m.not_before <= now)
            or (m.state == "leased" and m.lease_until is not None and m.lease_until <= now)
        ]
        expected = sorted(due, key=lambda m: (m.not_before, m.id))[:limit]
        got = await store.lease_outbox(worker=worker, limit=limit, now=now, lease_until=now + LEASE)
        assert [(i.idempotency_key, i.payload) for i in got] == [
            (m.key, m.key.encode()) for m in expected
        ]
        for m in expected:
            m.state, m.worker, m.lease_until, m.attempts = (
                "leased",
                worker,
                now + LEASE,
                m.attempts + 1,
            )
        assert [i.attempts for i in got] == [m.attempts for m in expected]
    elif name == "advance":
        clock.advance(int(args[0]))  # type: ignore[call-overload]
    elif name == "requeue":
        m = pick(model, "dead", int(args[0]))  # type: ignore[call-overload]
        ok = await store.requeue_dead(m.id if m else 10_000, now=now)
        assert ok == (m is not None and m.state == "dead")
        if m and ok:
            m.state, m.not_before, m.attempts = "pending", now, 0
    else:
        worker, m = str(args[0]), pick(model, "leased", int(args[1]))  # type: ignore[call-overload]
        item_id = m.id if m else 10_000
        owned = m is not None and m.state == "leased" and m.worker == worker
        if name == "delivered":
            assert await store.mark_delivered(item_id, worker=worker) == owned
            new_state = "delivered"
        elif name == "retry":
            retry_at = now + timedelta(seconds=int(args[2]))  # type: ignore[call-overload]
            ok = await store.mark_retry(item_id, worker=worker, not_before=retry_at, reason="r")
            assert ok == owned
            new_state = "pending"
            if m and owned:
                m.not_before = retry_at
        else:
            assert await store.mark_dead(item_id, worker=worker, reason="poison") == owned
            new_state = "dead"
        if m and owned:
            m.state, m.worker, m.lease_until = new_state, None, None
