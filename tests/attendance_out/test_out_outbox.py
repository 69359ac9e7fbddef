"""D5: the durable outbox — reliability catalogue R09–R16, crash points (I5), expiry (I4)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from attendance_out_support import (
    FHIR_BASE,
    PATIENT_CANARY,
    T0,
    TARGET,
    TOKEN_CANARY,
    FakeClock,
    Harness,
    MemoryStore,
    audit_tags,
    event,
    mock_client,
    visit_events,
)

from leaks import assert_no_leak
from teams_ehr.attendance.fhir_resources import FhirTarget
from teams_ehr.attendance.outbox import (
    CRASH_POINTS,
    Backoff,
    DeadLetter,
    OrgRoute,
    enqueue_attendance,
    enqueue_visit_note,
)
from teams_ehr.attendance.writers import (
    AuditEventWriter,
    EpicClinicalNoteWriter,
    WriterStrategy,
)
from teams_ehr.store.crypto import FieldCipher
from teams_ehr.store.postgres import PostgresStore
from teams_ehr.store.protocol import OutboxItem
from teams_ehr.store.sqlite import SqliteStore
from teams_ehr.testing.fake_fhir import FakeFhirServer

pytestmark = pytest.mark.anyio
CONNECTS = [f for f in visit_events() if f.kind in ("connected", "disconnected")]


async def open_sqlite(path: Path, clock: FakeClock) -> Any:
    store = sqlite_store(path, clock)
    await store.open()
    return store


def _trio_runs_anyio_threads() -> bool:
    import inspect

    import trio.to_thread

    return "abandon_on_cancel" in inspect.signature(trio.to_thread.run_sync).parameters


def skip_sqlite_on_old_trio(backend: str) -> None:
    if backend == "trio" and not _trio_runs_anyio_threads():
        pytest.skip("installed trio is older than anyio's worker threads need: SQLite on trio")


def sqlite_store(path: Path, clock: FakeClock) -> Any:
    return SqliteStore(str(path), cipher=FieldCipher(b"k" * 32), clock=clock)


@pytest.fixture(params=["memory", "sqlite"])
def harness(request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str) -> Harness:
    """Opened and closed by :func:`opened` (async fixtures do not run on this trio)."""
    if request.param == "sqlite":
        skip_sqlite_on_old_trio(anyio_backend)
    clock = FakeClock()
    store = MemoryStore() if request.param == "memory" else sqlite_store(tmp_path / "o.db", clock)
    fake = FakeFhirServer(FHIR_BASE, clock=clock, token_check=lambda t: t.startswith(TOKEN_CANARY))
    return Harness(store, fake, clock, AuditEventWriter(clock=clock))


def opened(test: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    @functools.wraps(test)
    async def run(harness: Harness, *args: Any, **kwargs: Any) -> None:
        async with harness:
            await test(harness, *args, **kwargs)

    return run


async def enqueue(h: Harness, facts: list | None = None) -> int:
    return await enqueue_attendance(
        h.store,
        facts if facts is not None else visit_events(),
        target=TARGET,
        writers=[h.writer],
        now=h.clock(),
    )


async def drain(
    h: Harness,
    *,
    max_rounds: int = 500,
    step: timedelta = timedelta(seconds=30),
    worker_id: str = "w1",
    **kw: Any,
) -> None:
    """Run the worker, jumping the clock to the next due row, until nothing is left."""
    async with mock_client(h.fake) as http:
        worker = h.worker(http, worker_id, **kw)
        for _ in range(max_rounds):
            counts = await h.store.outbox_counts()
            if counts.get("pending", 0) + counts.get("leased", 0) == 0:
                return
            if await worker.run_once() == 0:
                h.clock.now += step
    raise AssertionError("outbox did not drain")


@opened
async def test_enqueue_dedupes_and_takes_only_accepted_kinds(harness: Harness) -> None:
    assert await enqueue(harness) == 4  # connects and disconnects only
    assert await enqueue(harness) == 0  # a redelivered notification adds nothing (R06)
    note = [EpicClinicalNoteWriter()]
    assert (
        await enqueue_attendance(harness.store, visit_events(), target=TARGET, writers=note, now=T0)
        == 0
    )
    assert await enqueue_visit_note(harness.store, visit_events(), target=TARGET, now=T0) == 1
    assert (
        await enqueue_visit_note(
            harness.store, list(reversed(visit_events())), target=TARGET, now=T0
        )
        == 0
    )
    assert await enqueue_visit_note(harness.store, [], target=TARGET, now=T0) == 0
    assert (await harness.store.outbox_counts())["pending"] == 5


@opened
async def test_worker_delivers_each_fact_once(harness: Harness) -> None:
    await enqueue(harness)
    async with mock_client(harness.fake) as http:
        worker = harness.worker(http)
        assert await worker.run_once() == 4
        assert await worker.run_once() == 0
    assert sorted(audit_tags(harness.fake)) == sorted(f.fact_key for f in CONNECTS)
    assert (await harness.store.outbox_counts())["delivered"] == 4
    assert worker.stats.delivered == 4
    assert harness.alerts == []


@opened
async def test_retry_after_is_honoured(harness: Harness) -> None:
    """R10: 503 Retry-After: 120 → the next attempt is not before 120 s."""
    await enqueue(harness, CONNECTS[:1])
    harness.fake.fail_next(503, retry_after=120)
    async with mock_client(harness.fake) as http:
        worker = harness.worker(http)
        assert await worker.run_once() == 1
        harness.clock.advance(seconds=119)
        assert await worker.run_once() == 0
        harness.clock.advance(seconds=1)
        assert await worker.run_once() == 1
    assert len(audit_tags(harness.fake)) == 1
    assert worker.stats.retried == 1


@opened
async def test_long_outage_then_recovery_within_backoff_cap(harness: Harness) -> None:
    """R11: FHIR down 6 h, then every fact delivered within the 10 min cap; none dead."""
    await enqueue(harness)
    recovery = T0 + timedelta(hours=6)
    harness.fake.outage(recovery)
    rounds = 0
    async with mock_client(harness.fake) as http:
        worker = harness.worker(http)
        while (await harness.store.outbox_counts())["delivered"] < 4:
            rounds += 1
            if await worker.run_once() == 0:
                harness.clock.advance(seconds=60)
    assert harness.clock() <= recovery + Backoff().cap + timedelta(seconds=60)
    assert len(audit_tags(harness.fake)) == 4
    assert harness.alerts == []
    attempts = sum(1 for method, _ in harness.fake.request_log if method == "POST")
    assert attempts < 4 * 60  # exponential backoff, no tight loop
    assert rounds > 0


@opened
async def test_outage_past_retention_dead_letters_with_one_alert(harness: Harness) -> None:
    """R12: FHIR down > 72 h → every fact dead-lettered ``expired``; one alert for the org."""
    await enqueue(harness)
    harness.fake.outage(T0 + timedelta(days=10))
    slow = Backoff(cap=timedelta(hours=8), jitter=lambda: 1.0)
    await drain(harness, step=timedelta(hours=1), max_rounds=400, backoff=slow)
    dead = await harness.store.list_dead("org-a")
    assert {d.last_reason for d in dead} == {"expired"}
    assert len(dead) == 4
    (alert,) = harness.alerts
    assert (alert.org_id, alert.reason, alert.strategy) == ("org-a", "expired", "audit_event")
    assert sorted(alert.item_ids) == sorted(d.item_id for d in dead)
    assert_no_leak([PATIENT_CANARY, "csn-canary", "enc-1", *(f.fact_key for f in CONNECTS)], alert)
    assert audit_tags(harness.fake) == []


@pytest.mark.parametrize(
    ("status", "reason"),
    [(400, "fhir_bad_request"), (422, "fhir_unprocessable"), (412, "duplicate_identifier")],
)
@opened
async def test_poison_dead_letters_at_once_with_exactly_one_alert(
    harness: Harness, status: int, reason: str
) -> None:
    """R13/R15: 4xx poison → dead letter with its reason, one alert, no retry storm."""
    await enqueue(harness, CONNECTS[:1])
    harness.fake.fail_next(status, times=3)
    async with mock_client(harness.fake) as http:
        worker = harness.worker(http)
        await worker.run_once()
        harness.clock.advance(hours=1)
        assert await worker.run_once() == 0
    (dead,) = await harness.store.list_dead()
    assert dead.last_reason == reason
    assert harness.alerts == [DeadLetter("org-a", reason, "audit_event", (dead.item_id or 0,))]
    assert len(harness.fake.request_log) == 1


@opened
async def test_unauthorized_gets_one_fresh_token_then_dead_letters(harness: Harness) -> None:
    """R14: 401 → one new backend token and one retry; a second 401 → dead letter + alert."""
    await enqueue(harness, CONNECTS[:2])
    harness.fake.fail_next(401)
    async with mock_client(harness.fake) as http:
        worker = harness.worker(http, concurrency=1)
        await worker.run_once()
        assert harness.tokens.calls.count(("org-a", True)) == 1
        assert len(audit_tags(harness.fake)) == 2
        await enqueue(harness, CONNECTS[2:3])
        harness.fake.fail_next(401, times=2)
        await worker.run_once()
    (dead,) = await harness.store.list_dead()
    assert dead.last_reason == "fhir_unauthorized"
    assert [a.reason for a in harness.alerts] == ["fhir_unauthorized"]


@opened
async def test_lost_response_retries_into_existing(harness: Harness) -> None:
    """R09 without a crash: the FHIR write happened, the reply was lost → retry → 200."""
    await enqueue(harness, CONNECTS[:1])
    harness.fake.lose_next_response()
    await drain(harness)
    assert len(audit_tags(harness.fake)) == 1
    assert (await harness.store.outbox_counts())["delivered"] == 1


class Crash(BaseException):
    """A process kill at a crash point (never caught by the worker)."""


@pytest.mark.parametrize("point", CRASH_POINTS)
async def test_crash_at_each_point_then_restart_is_exactly_once(
    point: str, tmp_path: Path, anyio_backend: str
) -> None:
    """I5/R08/R09: kill the worker at a crash point, restart a fresh one on the same SQLite
    file: every fact ends in FHIR exactly once, nothing lost, nothing dead."""
    skip_sqlite_on_old_trio(anyio_backend)
    clock = FakeClock()
    fake = FakeFhirServer(FHIR_BASE, clock=clock)
    path = tmp_path / "crash.db"
    store = await open_sqlite(path, clock)
    first = Harness(store, fake, clock, AuditEventWriter(clock=clock))
    await enqueue(first)

    def kill(where: str) -> None:
        if where == point:
            raise Crash(where)

    async with mock_client(fake) as http:
        worker = first.worker(http, "w1", crash_hook=kill)
        with pytest.raises((Crash, BaseExceptionGroup)):
            await worker.run_once()
    await store.aclose()

    restarted = Harness(await open_sqlite(path, clock), fake, clock, AuditEventWriter(clock=clock))
    clock.advance(minutes=3)  # the dead worker's leases expire
    await drain(restarted, worker_id="w2")
    assert sorted(audit_tags(fake)) == sorted(f.fact_key for f in CONNECTS)
    counts = await restarted.store.outbox_counts()
    assert (counts["delivered"], counts.get("dead", 0)) == (4, 0)
    assert restarted.alerts == []
    await restarted.store.aclose()


@opened
async def test_two_workers_never_deliver_one_row_twice(harness: Harness) -> None:
    """R16: two workers on one store; every row POSTed once, no row leased twice at once."""
    facts = [
        event(k, "patient", f"p{i}", i) for i in range(60) for k in ("connected", "disconnected")
    ]
    assert await enqueue(harness, facts) == 120
    async with mock_client(harness.fake) as http:
        workers = [harness.worker(http, f"w{i}", batch_size=7, concurrency=3) for i in (1, 2)]

        async def loop(worker: Any) -> None:
            while True:
                if await worker.run_once() == 0:
                    return
                await anyio.sleep(0)

        async with anyio.create_task_group() as group:
            for worker in workers:
                group.start_soon(loop, worker)
    posts = [p for m, p in harness.fake.request_log if m == "POST"]
    assert len(posts) == 120
    assert len(set(audit_tags(harness.fake))) == 120
    assert sum(w.stats.delivered for w in workers) == 120
    assert all(w.stats.lost_leases == 0 for w in workers)


async def test_a_lost_lease_changes_nothing() -> None:
    """The lease ran out mid-write and another worker took the row: mark_* returns False,
    the first worker does nothing more; the row is delivered once in FHIR."""
    clock = FakeClock()
    store = MemoryStore()
    fake = FakeFhirServer(FHIR_BASE, clock=clock)
    h = Harness(store, fake, clock, AuditEventWriter(clock=clock))
    await enqueue(h, CONNECTS[:1])
    stolen = False

    async def route(org_id: str, strategy: WriterStrategy) -> OrgRoute:
        nonlocal stolen
        if not stolen:
            stolen = True
            clock.advance(minutes=5)
            assert await store.lease_outbox(
                worker="w2", limit=1, now=clock(), lease_until=clock() + timedelta(minutes=2)
            )
        return OrgRoute(h.writer, FHIR_BASE)

    async with mock_client(fake) as http:
        worker = h.worker(http)
        worker.writer_for_org = route
        await worker.run_once()
        assert worker.stats.lost_leases == 1
        assert (await store.outbox_counts())["leased"] == 1
        clock.advance(minutes=3)
        await worker.run_once()
    assert (await store.outbox_counts())["delivered"] == 1
    assert len(audit_tags(fake)) == 1
    assert h.alerts == []


@opened
async def test_unreadable_payload_and_missing_target_are_dead_lettered(harness: Harness) -> None:
    await harness.store.enqueue_outbox(
        [OutboxItem("org-a", "audit_event/x", "audit_event", b"{not json", T0, T0)]
    )
    await enqueue_attendance(
        harness.store,
        CONNECTS[:1],
        target=FhirTarget(),
        writers=[EpicClinicalNoteWriter(), harness.writer],
        now=T0,
    )
    await enqueue_visit_note(harness.store, visit_events(), target=FhirTarget(), now=T0)

    async def route(org_id: str, strategy: WriterStrategy) -> OrgRoute:
        writer = EpicClinicalNoteWriter() if strategy.per_visit else harness.writer
        return OrgRoute(writer, FHIR_BASE)

    async with mock_client(harness.fake) as http:
        worker = harness.worker(http)
        worker.writer_for_org = route
        await worker.run_once()
    reasons = sorted(d.last_reason or "" for d in await harness.store.list_dead())
    assert reasons == ["bad_payload", "missing_target"]
    assert len(harness.alerts) == 2
    assert len(audit_tags(harness.fake)) == 1  # an AuditEvent needs no encounter


async def test_run_until_stopped() -> None:
    clock = FakeClock()
    h = Harness(MemoryStore(), FakeFhirServer(FHIR_BASE, clock=clock), clock, AuditEventWriter())
    await enqueue(h)
    stop = anyio.Event()
    async with mock_client(h.fake) as http:
        worker = h.worker(http)
        async with anyio.create_task_group() as group:
            group.start_soon(worker.run, stop)
            for _ in range(1000):
                if worker.stats.delivered == 4:
                    break
                await anyio.sleep(0)
            stop.set()
    assert worker.stats.delivered == 4


async def test_alert_failures_do_not_stop_the_worker_and_async_alerts_are_awaited() -> None:
    clock = FakeClock()
    h = Harness(MemoryStore(), FakeFhirServer(FHIR_BASE, clock=clock), clock, AuditEventWriter())
    await enqueue(h, CONNECTS[:2])
    h.fake.fail_next(400, times=2)
    seen: list[DeadLetter] = []

    async def alert(letter: DeadLetter) -> None:
        seen.append(letter)
        raise RuntimeError("pager down")

    async with mock_client(h.fake) as http:
        worker = h.worker(http, on_dead_letter=alert)
        worker.on_dead_letter = alert
        assert await worker.run_once() == 2
    assert len(seen) == 2


@opened
async def test_no_token_or_phi_in_logs(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await enqueue(harness)
    harness.fake.fail_next(503, retry_after=5)
    harness.fake.fail_next(422)
    await drain(harness)
    canaries = [TOKEN_CANARY, PATIENT_CANARY, "csn-canary", "enc-1", "p-1", "dr-1"]
    assert_no_leak(canaries, caplog.text, harness.alerts)


def test_backoff_is_exponential_capped_jittered_and_honours_retry_after() -> None:
    low = Backoff(jitter=lambda: 0.0)
    high = Backoff(jitter=lambda: 1.0)
    assert high.next_at(0, T0) == T0 + timedelta(seconds=5)
    assert low.next_at(0, T0) == T0 + timedelta(seconds=2.5)
    assert high.next_at(3, T0) == T0 + timedelta(seconds=40)
    assert high.next_at(50, T0) == T0 + timedelta(minutes=10)
    assert low.next_at(50, T0) == T0 + timedelta(minutes=5)
    later = T0 + timedelta(minutes=30)
    assert high.next_at(0, T0, later) == later
    assert high.next_at(10, T0, T0 + timedelta(seconds=1)) == T0 + timedelta(minutes=10)


@pytest.mark.postgres
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_two_instances_on_postgres_deliver_each_row_once(postgres_dsn: str) -> None:
    """R16 on PostgreSQL (SKIP LOCKED): two app instances, two stores, two workers each."""
    clock = FakeClock()
    fake = FakeFhirServer(FHIR_BASE, clock=clock)
    cipher = FieldCipher(b"k" * 32)
    stores = [PostgresStore(postgres_dsn, cipher=cipher, clock=clock) for _ in range(2)]
    for store in stores:
        await store.open()
    try:
        harnesses = [Harness(s, fake, clock, AuditEventWriter(clock=clock)) for s in stores]
        facts = [
            event(k, "patient", f"p{i}", i)
            for i in range(50)
            for k in ("connected", "disconnected")
        ]
        assert await enqueue(harnesses[0], facts) == 100
        assert await enqueue(harnesses[1], facts) == 0
        async with mock_client(fake) as http:
            workers = [
                h.worker(http, f"i{n}-w{m}", batch_size=5, concurrency=2)
                for n, h in enumerate(harnesses)
                for m in range(2)
            ]

            async def loop(worker: Any) -> None:
                while await worker.run_once():
                    await anyio.sleep(0)

            async with anyio.create_task_group() as group:
                for worker in workers:
                    group.start_soon(loop, worker)
        assert len([m for m, _ in fake.request_log if m == "POST"]) == 100
        assert len(set(audit_tags(fake))) == 100
        assert (await stores[0].outbox_counts())["delivered"] == 100
    finally:
        for store in stores:
            await store.aclose()


async def test_out_of_order_arrival_gives_the_same_fhir_result() -> None:
    """R22/I7: a leave enqueued before its join — FHIR ends identical to the in-order run."""

    async def run_in(order: list[Any]) -> list[Any]:
        clock = FakeClock()
        fake = FakeFhirServer(FHIR_BASE, clock=clock)
        h = Harness(MemoryStore(), fake, clock, AuditEventWriter(clock=clock))
        for fact in order:
            await enqueue(h, [fact])
            await drain(h)
        await enqueue_visit_note(h.store, order, target=TARGET, now=T0)
        note = EpicClinicalNoteWriter(conditional_create=True, clock=clock)

        async def route(org_id: str, strategy: WriterStrategy) -> OrgRoute:
            return OrgRoute(note if strategy.per_visit else h.writer, FHIR_BASE)

        async with mock_client(fake) as http:
            worker = h.worker(http)
            worker.writer_for_org = route
            await worker.run_once()
        strip = ("id", "meta")
        return sorted(
            (
                {k: v for k, v in r.items() if k not in strip}
                for t in ("AuditEvent", "DocumentReference")
                for r in fake.resources(t)
            ),
            key=repr,
        )

    assert await run_in(visit_events()) == await run_in(list(reversed(visit_events())))
