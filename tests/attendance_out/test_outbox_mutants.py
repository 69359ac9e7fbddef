"""Outbox retry policy edges ``nox -s mutants -- attendance/outbox.py`` left open (invariant I4,
docs/security.md#delivery-invariants).

:func:`oauth_failure` sorts a token endpoint's refusal into permanent (RFC 6749 §5.2 4xx: fix
the registration, retrying cannot help) or transient (408, 429, 5xx, ``temporarily_unavailable``,
``server_error``), with a bounded reason code; :class:`Backoff` at its exponent and jitter clamps.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx
import pytest
import trio
from attendance_out_support import (
    FHIR_BASE,
    ORG,
    T0,
    TARGET,
    TOKEN_CANARY,
    FakeClock,
    MemoryStore,
    event,
)
from pydantic import SecretStr
from trio.testing import MockClock

from teams_ehr._concurrency import KeyedLocks
from teams_ehr.attendance.outbox import (
    BackendTokenProvider,
    Backoff,
    DeadLetter,
    OrgRoute,
    OutboxWorker,
    WorkerStats,
    enqueue_attendance,
    oauth_failure,
)
from teams_ehr.attendance.writers import AuditEventWriter, WriterStrategy
from teams_ehr.attendance.writers.base import WRITE_LOCKS
from teams_ehr.errors import (
    FhirError,
    FhirUnavailableError,
    OAuthError,
    RemoteError,
    StorageError,
    TransportError,
)
from teams_ehr.store.protocol import OutboxItem
from teams_ehr.testing.fake_fhir import FakeFhirServer

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "error", "permanent"),
    [
        (400, "invalid_client", True),
        (401, "invalid_client", True),
        (499, "invalid_request", True),
        (399, "invalid_client", False),
        (500, "invalid_client", False),
        (408, "invalid_request", False),
        (409, "invalid_request", True),
        (429, "invalid_request", False),
        (430, "invalid_request", True),
        (400, "temporarily_unavailable", False),
        (400, "server_error", False),
        (None, "invalid_client", False),
    ],
)
def test_permanent_only_for_4xx_refusals(status: int | None, error: str, permanent: bool) -> None:
    assert oauth_failure(OAuthError(error=error, status_code=status)) == (
        f"oauth_{error}",
        permanent,
    )


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ("Invalid-Client", "oauth_invalid_client"),
        ("bad code\r\nX: 1", "oauth_bad_code__x__1"),
        ("", "oauth_error"),
        ("e" * 60, "oauth_" + "e" * 48),
    ],
)
def test_reason_codes_are_bounded_snake_case(error: str, code: str) -> None:
    assert oauth_failure(OAuthError(error=error, status_code=400))[0] == code


def test_backoff_exponent_is_capped_at_2_to_the_32() -> None:
    huge = Backoff(base=timedelta(microseconds=1), cap=timedelta(days=10**6), jitter=lambda: 1.0)
    expected = timedelta(microseconds=2**32)
    assert huge.next_at(32, NOW) == NOW + expected
    assert huge.next_at(33, NOW) == NOW + expected


@pytest.mark.parametrize(
    ("jitter", "seconds"), [(-1.0, 2.5), (0.0, 2.5), (0.5, 3.75), (1.0, 5), (2.0, 5)]
)
def test_backoff_jitter_is_clamped_to_half_to_full_delay(jitter: float, seconds: float) -> None:
    backoff = Backoff(base=timedelta(seconds=5), jitter=lambda: jitter)
    assert backoff.next_at(0, NOW) == NOW + timedelta(seconds=seconds)


# -- the worker's retry reasons and permanent-failure edge ------------------------------------


class FailingTokens:
    """An OrgTokenProvider whose token endpoint keeps failing with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def __call__(self, org_id: str, *, force_refresh: bool = False) -> SecretStr:
        raise self.error


async def _one_row_worker(
    error: Exception, **kw: Any
) -> tuple[MemoryStore, OutboxWorker, list[DeadLetter]]:
    clock = FakeClock()
    store = MemoryStore()
    writer = AuditEventWriter(clock=clock)
    await enqueue_attendance(
        store, [event("connected")], target=TARGET, writers=[writer], now=clock()
    )
    alerts: list[DeadLetter] = []

    async def route(org_id: str, strategy: WriterStrategy) -> OrgRoute:
        return OrgRoute(writer, FHIR_BASE)

    worker = OutboxWorker(
        store,
        route,
        FailingTokens(error),
        httpx.AsyncClient(),
        clock=clock,
        backoff=Backoff(jitter=lambda: 1.0),
        on_dead_letter=alerts.append,
        **kw,
    )
    return store, worker, alerts


def _row(store: MemoryStore) -> Any:
    [row] = store.rows.values()
    return row


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (TimeoutError(), "timeout"),
        (RuntimeError("a bug"), "internal_error"),
        (FhirUnavailableError("down"), "fhir_unavailable_0"),
        (
            OAuthError(error="temporarily_unavailable", status_code=503),
            "oauth_temporarily_unavailable",
        ),
    ],
)
async def test_retry_reasons_and_first_backoff(error: Exception, reason: str) -> None:
    store, worker, alerts = await _one_row_worker(error)
    assert await worker.run_once() == 1
    row = _row(store)
    assert (row.state, row.item.last_reason) == ("pending", reason)
    assert row.item.not_before == T0 + timedelta(seconds=5)  # attempt 1: base, full jitter
    assert (worker.stats.retried, alerts) == (1, [])


@pytest.mark.anyio
async def test_a_permanent_oauth_refusal_is_dead_after_exactly_three_tries() -> None:
    store, worker, alerts = await _one_row_worker(
        OAuthError(error="invalid_client", status_code=401), permanent_attempts=3
    )
    for _ in range(2):
        await worker.run_once()
        assert (_row(store).state, _row(store).item.last_reason) == (
            "pending",
            "oauth_invalid_client",
        )
        worker.clock.advance(minutes=10)  # type: ignore[attr-defined]
    await worker.run_once()
    row = _row(store)
    assert (row.state, row.item.last_reason) == ("dead", "oauth_invalid_client")
    assert [(a.reason, a.org_id, a.item_ids) for a in alerts] == [
        ("oauth_invalid_client", row.item.org_id, (row.item.item_id,))
    ]


# -- the worker at its edges: expiry, lease, batch, concurrency, locks, counters, alerts -------
#
# Invariants I2 (no silent loss: every dead letter alerted once, a lost lease changes nothing)
# and I4 (outage tolerance: expiry at ``max_age``, backoff, time budget), docs/security.md
# #delivery-invariants.


class SwitchTokens:
    """An OrgTokenProvider recording its calls; raises ``error`` while it is set."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.error: BaseException | None = None

    async def __call__(self, org_id: str, *, force_refresh: bool = False) -> SecretStr:
        self.calls.append((org_id, force_refresh))
        if self.error is not None:
            raise self.error
        return SecretStr(TOKEN_CANARY)


class IdFromZeroStore(MemoryStore):
    """A store whose first row id is 0 (a valid id: only ``None`` means "not stored")."""

    def __init__(self) -> None:
        super().__init__()
        self._next = -1


class LosingStore(MemoryStore):
    """A store on which, while ``losing``, every ``mark_*`` finds the lease gone (another
    worker took the row)."""

    def __init__(self) -> None:
        super().__init__()
        self.losing = True

    async def mark_delivered(self, item_id: int, *, worker: str) -> bool:
        return not self.losing and await super().mark_delivered(item_id, worker=worker)

    async def mark_retry(
        self, item_id: int, *, worker: str, not_before: datetime, reason: str
    ) -> bool:
        return not self.losing and await super().mark_retry(
            item_id, worker=worker, not_before=not_before, reason=reason
        )

    async def mark_dead(self, item_id: int, *, worker: str, reason: str) -> bool:
        return not self.losing and await super().mark_dead(item_id, worker=worker, reason=reason)


class Setup:
    """One store, one FakeFhirServer, one AuditEventWriter, a recording route and tokens."""

    def __init__(self, store: MemoryStore | None = None, **writer: Any) -> None:
        self.clock = FakeClock()
        self.store = store if store is not None else MemoryStore()
        self.fake = FakeFhirServer(FHIR_BASE, clock=self.clock)
        self.writer = AuditEventWriter(clock=self.clock, **writer)
        self.tokens = SwitchTokens()
        self.alerts: list[DeadLetter] = []
        self.routed: list[tuple[str, WriterStrategy]] = []

    async def enqueue(self, *participants: str, org: str = ORG) -> None:
        facts = [event("connected", participant=p, org=org) for p in participants or ("p-1",)]
        await enqueue_attendance(
            self.store, facts, target=TARGET, writers=[self.writer], now=self.clock()
        )

    def worker(self, **kw: Any) -> OutboxWorker:
        async def route(org_id: str, strategy: WriterStrategy) -> OrgRoute:
            self.routed.append((org_id, strategy))
            return OrgRoute(self.writer, FHIR_BASE)

        kw.setdefault("backoff", Backoff(jitter=lambda: 1.0))
        kw.setdefault("on_dead_letter", self.alerts.append)
        http = httpx.AsyncClient(transport=httpx.MockTransport(self.fake.handler))
        return OutboxWorker(self.store, route, self.tokens, http, clock=self.clock, **kw)

    def row(self, item_id: int = 1) -> Any:
        return self.store.rows[item_id]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("offset", "expired"),
    [(timedelta(microseconds=-1), False), (timedelta(0), True), (timedelta(microseconds=1), True)],
)
async def test_a_tried_row_expires_exactly_at_max_age(offset: timedelta, expired: bool) -> None:
    """Default ``max_age`` 72 h: just before it the second try delivers; at and after it the
    row is dead-lettered ``expired`` without a request, with one alert."""
    s = Setup()
    await s.enqueue()
    worker = s.worker()  # the default max_age
    s.tokens.error = TransportError("down", reason="transport")
    assert await worker.run_once() == 1
    assert s.row().item.not_before == T0 + timedelta(seconds=5)
    s.tokens.error = None
    s.clock.now = T0 + timedelta(hours=72) + offset
    assert await worker.run_once() == 1
    if expired:
        assert (s.row().state, s.row().item.last_reason) == ("dead", "expired")
        assert s.alerts == [DeadLetter(ORG, "expired", "audit_event", (1,))]
        assert s.fake.request_log == []
        assert worker.stats == WorkerStats(delivered=0, retried=1, dead=1, lost_leases=0)
    else:
        assert s.row().state == "delivered"
        assert (s.alerts, len(s.fake.request_log)) == ([], 1)
        assert worker.stats == WorkerStats(delivered=1, retried=1, dead=0, lost_leases=0)


@pytest.mark.anyio
async def test_a_row_first_leased_after_max_age_still_gets_one_try() -> None:
    """``attempts`` counts leases: after a long worker outage the first lease still tries; the
    retry comes back at once (``not_before`` capped at ``created_at + max_age``) and expires."""
    s = Setup()
    await s.enqueue()
    s.clock.now = T0 + timedelta(hours=100)
    worker = s.worker()
    s.tokens.error = TimeoutError()
    assert await worker.run_once() == 1
    assert (s.row().state, s.row().item.attempts) == ("pending", 1)
    assert s.row().item.not_before == T0 + timedelta(hours=72)
    assert s.tokens.calls == [(ORG, False)]
    assert await worker.run_once() == 1
    assert (s.row().state, s.row().item.attempts, s.row().item.last_reason) == (
        "dead",
        2,
        "expired",
    )
    assert s.tokens.calls == [(ORG, False)]


@pytest.mark.anyio
async def test_the_first_try_after_max_age_delivers() -> None:
    s = Setup()
    await s.enqueue()
    s.clock.now = T0 + timedelta(hours=100)
    worker = s.worker()
    assert await worker.run_once() == 1
    assert s.row().state == "delivered"
    assert s.alerts == []


@pytest.mark.anyio
async def test_retry_backoff_grows_with_tries_and_stops_at_expiry() -> None:
    """Try n waits ``base·2^(n-1)`` (full jitter here); never past ``created_at + max_age``,
    even when the server's ``Retry-After`` is later."""
    s = Setup()
    await s.enqueue()
    worker = s.worker()
    s.tokens.error = RemoteError("down", reason="token_endpoint_down")
    await worker.run_once()
    assert s.row().item.not_before == T0 + timedelta(seconds=5)
    s.clock.now = T0 + timedelta(seconds=5)
    await worker.run_once()
    assert s.row().item.not_before == T0 + timedelta(seconds=15)
    assert s.row().item.last_reason == "token_endpoint_down"
    s.clock.now = T0 + timedelta(seconds=15)
    s.tokens.error = FhirUnavailableError("busy", status_code=503, retry_at=T0 + timedelta(days=10))
    await worker.run_once()
    assert s.row().item.not_before == T0 + timedelta(hours=72)
    assert s.row().item.last_reason == "fhir_unavailable_503"
    assert worker.stats == WorkerStats(delivered=0, retried=3, dead=0, lost_leases=0)


@pytest.mark.anyio
async def test_expired_rows_alert_once_per_org_and_outage() -> None:
    """Rows of one organization expiring in several rounds raise one alert; a delivery for the
    organization ends the outage, so the next expiry alerts again; each org has its own."""
    s = Setup()
    await s.enqueue("p-1")
    s.clock.now = T0 + timedelta(hours=1)
    await s.enqueue("p-2")
    await s.enqueue("p-9", org="org-b")
    worker = s.worker()
    s.tokens.error = TransportError("down")
    assert await worker.run_once() == 3
    s.clock.now = T0 + timedelta(hours=72)
    assert await worker.run_once() == 3  # row 1 expires, rows 2 and 3 retry
    assert s.alerts == [DeadLetter(ORG, "expired", "audit_event", (1,))]
    s.clock.now = T0 + timedelta(hours=73)
    assert await worker.run_once() == 2  # rows 2 (org-a) and 3 (org-b) expire
    assert s.alerts == [
        DeadLetter(ORG, "expired", "audit_event", (1,)),
        DeadLetter("org-b", "expired", "audit_event", (3,)),
    ]
    s.tokens.error = None
    await s.enqueue("p-3")  # row 4: delivered, the org-a outage is over
    assert await worker.run_once() == 1
    assert s.row(4).state == "delivered"
    await s.enqueue("p-4")  # row 5
    s.tokens.error = TransportError("down")
    await worker.run_once()
    s.clock.now = T0 + timedelta(hours=73 + 72)
    await worker.run_once()
    assert s.alerts[2:] == [DeadLetter(ORG, "expired", "audit_event", (5,))]
    assert worker.stats == WorkerStats(delivered=1, retried=6, dead=4, lost_leases=0)


@pytest.mark.anyio
async def test_expired_rows_of_one_round_share_one_alert() -> None:
    s = Setup()
    await s.enqueue("p-1", "p-2")
    worker = s.worker()
    s.tokens.error = TransportError("down")
    await worker.run_once()
    s.clock.now = T0 + timedelta(hours=72)
    await worker.run_once()
    [alert] = s.alerts  # the ids in the order the rows were processed (trio: any order)
    assert (alert.org_id, alert.reason, alert.strategy) == (ORG, "expired", "audit_event")
    assert sorted(alert.item_ids) == [1, 2]


@pytest.mark.anyio
async def test_lease_parameters_and_default_batch() -> None:
    """The lease names the worker (default ``worker``) and ends ``lease_for`` (2 min) later;
    one ``run_once`` leases ``batch_size`` (50) rows."""
    s = Setup()
    await s.enqueue(*(f"p{i}" for i in range(51)))
    seen: list[tuple[Any, Any, int]] = []

    def look(point: str) -> None:
        if point == "after_lease":
            leased = [r for r in s.store.rows.values() if r.state == "leased"]
            seen.append((leased[0].leased_by, leased[0].lease_until, len(leased)))

    worker = s.worker(crash_hook=look)
    assert await worker.run_once() == 50
    assert seen == [("worker", T0 + timedelta(minutes=2), 50)]
    assert await worker.run_once() == 1
    assert await worker.run_once() == 0
    assert worker.stats.delivered == 51
    assert s.routed == [(ORG, WriterStrategy.AUDIT_EVENT)] * 51
    assert s.tokens.calls == [(ORG, False)] * 51


@pytest.mark.anyio
async def test_a_fresh_worker_has_zero_stats() -> None:
    assert Setup().worker().stats == WorkerStats(delivered=0, retried=0, dead=0, lost_leases=0)


class GatedTokens(SwitchTokens):
    """Token calls wait at a gate; ``peak`` is the most calls in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self.active = 0
        self.peak = 0
        self.gate = anyio.Event()

    async def __call__(self, org_id: str, *, force_refresh: bool = False) -> SecretStr:
        self.active += 1
        self.peak = max(self.peak, self.active)
        await self.gate.wait()
        self.active -= 1
        return await super().__call__(org_id, force_refresh=force_refresh)


@pytest.mark.anyio
@pytest.mark.parametrize(("concurrency", "peak"), [(None, 8), (3, 3), (1, 1), (0, 1), (-5, 1)])
async def test_deliveries_in_flight_are_bounded_by_concurrency(
    concurrency: int | None, peak: int
) -> None:
    s = Setup()
    await s.enqueue(*(f"p{i}" for i in range(12)))
    s.tokens = GatedTokens()
    worker = s.worker() if concurrency is None else s.worker(concurrency=concurrency)
    tokens = s.tokens

    async def open_gate() -> None:
        for _ in range(200):
            await anyio.sleep(0)
        tokens.gate.set()

    async with anyio.create_task_group() as group:
        group.start_soon(open_gate)
        assert await worker.run_once() == 12
    assert (tokens.peak, worker.stats.delivered) == (peak, 12)


class RecordingLocks(KeyedLocks):
    def __init__(self) -> None:
        super().__init__()
        self.held: list[Any] = []

    @asynccontextmanager
    async def hold(self, key: Any) -> AsyncIterator[None]:
        async with super().hold(key):
            self.held.append(key)
            yield


@pytest.mark.anyio
@pytest.mark.parametrize("conditional_create", [True, False])
async def test_search_then_create_writes_hold_the_writer_lock(conditional_create: bool) -> None:
    s = Setup(conditional_create=conditional_create)
    await s.enqueue()
    locks = RecordingLocks()
    worker = s.worker(locks=locks)
    assert await worker.run_once() == 1
    fact_key = event("connected").fact_key
    assert locks.held == ([] if conditional_create else [f"{FHIR_BASE}|audit/{fact_key}"])
    assert (s.row().state, len(locks)) == ("delivered", 0)


@pytest.mark.anyio
async def test_default_locks_are_the_shared_write_locks() -> None:
    s = Setup(conditional_create=False)
    await s.enqueue()
    worker = s.worker()
    assert worker.locks is WRITE_LOCKS
    assert await worker.run_once() == 1
    assert s.row().state == "delivered"


@pytest.mark.anyio
async def test_unauthorized_refreshes_the_token_of_the_rows_org() -> None:
    s = Setup()
    await s.enqueue(org="org-b")
    s.fake.fail_next(401)
    worker = s.worker()
    assert await worker.run_once() == 1
    assert s.tokens.calls == [("org-b", False), ("org-b", True)]
    assert s.routed == [("org-b", WriterStrategy.AUDIT_EVENT)]
    assert s.row().state == "delivered"


@pytest.mark.anyio
async def test_row_id_zero_is_marked_like_any_other() -> None:
    """``item_id`` 0 is a row (only ``None`` is not): delivered, retried and dead-lettered by id."""
    s = Setup(store=IdFromZeroStore())
    await s.enqueue("p-1", "p-2", "p-3")
    worker = s.worker()
    assert await worker.run_once() == 3
    assert [r.state for r in s.store.rows.values()] == ["delivered"] * 3
    await s.enqueue("p-4")  # id 3: retried
    s.tokens.error = TimeoutError()
    await worker.run_once()
    assert (s.row(3).state, s.row(3).item.last_reason) == ("pending", "timeout")

    z = Setup(store=IdFromZeroStore())
    await z.enqueue()
    z.tokens.error = TimeoutError()
    zw = z.worker()
    await zw.run_once()
    assert (z.row(0).state, z.row(0).item.last_reason) == ("pending", "timeout")
    z.tokens.error = FhirError("bad", status_code=400, reason="fhir_bad_request")
    z.clock.advance(minutes=1)
    await zw.run_once()
    assert (z.row(0).state, z.row(0).item.last_reason) == ("dead", "fhir_bad_request")
    assert z.alerts == [DeadLetter(ORG, "fhir_bad_request", "audit_event", (0,))]

    d = Setup(store=IdFromZeroStore())
    await d.enqueue()
    assert await d.worker().run_once() == 1
    assert d.row(0).state == "delivered"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "error", [None, TimeoutError(), FhirError("x", reason="fhir_gone")], ids=["ok", "retry", "dead"]
)
async def test_a_lost_lease_counts_and_alerts_nothing(error: BaseException | None) -> None:
    """I2: when every ``mark_*`` finds the lease gone, the worker changes nothing, raises no
    alert and counts each lost lease."""
    s = Setup(store=LosingStore())
    await s.enqueue("p-1", "p-2")
    s.tokens.error = error
    worker = s.worker()
    assert await worker.run_once() == 2
    assert s.alerts == []
    assert worker.stats == WorkerStats(delivered=0, retried=0, dead=0, lost_leases=2)


@pytest.mark.anyio
async def test_a_lost_lease_on_expiry_alerts_nothing() -> None:
    store = LosingStore()
    store.losing = False
    s = Setup(store=store)
    await s.enqueue("p-1", "p-2")
    worker = s.worker()
    s.tokens.error = TimeoutError()
    await worker.run_once()
    store.losing = True
    s.clock.now = T0 + timedelta(hours=72)
    assert await worker.run_once() == 2
    assert s.alerts == []
    assert worker.stats == WorkerStats(delivered=0, retried=2, dead=0, lost_leases=2)


@pytest.mark.anyio
async def test_dead_letters_are_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="teams_ehr.attendance.outbox")
    s = Setup()
    await s.enqueue("p-1", "p-2")
    s.tokens.error = FhirError("bad", status_code=400, reason="fhir_bad_request")
    worker = s.worker(concurrency=1)
    assert await worker.run_once() == 2
    assert worker.stats == WorkerStats(delivered=0, retried=0, dead=2, lost_leases=0)
    assert sorted((r.levelname, r.getMessage()) for r in caplog.records) == [
        ("WARNING", "outbox row 1 dead-lettered: fhir_bad_request"),
        ("WARNING", "outbox row 2 dead-lettered: fhir_bad_request"),
    ]


@pytest.mark.anyio
async def test_a_store_failure_leaves_the_row_leased_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="teams_ehr.attendance.outbox")
    s = Setup()
    await s.enqueue()
    s.tokens.error = StorageError("disk full", reason="storage_io")
    worker = s.worker()
    assert await worker.run_once() == 1
    assert s.row().state == "leased"
    assert (s.alerts, worker.stats) == ([], WorkerStats())
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "outbox row 1: store failed (storage_io); the lease will expire")
    ]


@pytest.mark.anyio
async def test_an_unexpected_error_is_logged_with_its_traceback_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="teams_ehr.attendance.outbox")
    s = Setup()
    await s.enqueue()
    s.tokens.error = KeyError("bug")
    worker = s.worker()
    assert await worker.run_once() == 1
    assert (s.row().state, s.row().item.last_reason) == ("pending", "internal_error")
    [record] = caplog.records
    assert (record.levelname, record.getMessage()) == ("ERROR", "outbox row 1: unexpected error")
    assert record.exc_info is not None
    assert record.exc_info[0] is KeyError


@pytest.mark.anyio
async def test_a_failing_alert_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="teams_ehr.attendance.outbox")
    s = Setup()
    await s.enqueue("p-1", "p-2")

    def alert(letter: DeadLetter) -> None:
        raise RuntimeError("pager down")

    worker = s.worker(on_dead_letter=alert)
    s.tokens.error = TransportError("down")
    await worker.run_once()
    s.clock.now = T0 + timedelta(hours=72)
    await worker.run_once()
    [record] = caplog.records
    assert record.getMessage() == "dead-letter alert failed for 2 rows"
    assert record.exc_info is not None
    assert record.exc_info[0] is RuntimeError
    assert worker.stats.dead == 2


@pytest.mark.anyio
async def test_without_an_alert_hook_dead_letters_are_still_marked() -> None:
    s = Setup()
    await s.enqueue()
    s.tokens.error = FhirError("bad", status_code=400, reason="fhir_bad_request")
    worker = s.worker(on_dead_letter=None)
    assert await worker.run_once() == 1
    assert s.row().state == "dead"


@pytest.mark.anyio
async def test_enqueue_with_nothing_accepted_adds_nothing() -> None:
    s = Setup()
    facts = [event("lobby_entered"), event("admitted")]
    assert await enqueue_attendance(s.store, facts, target=TARGET, writers=[s.writer], now=T0) == 0
    assert s.store.rows == {}


@pytest.mark.anyio
async def test_backend_token_provider_invalidates_only_on_refresh() -> None:
    """SMART Backend Services: one cached source per organization, ``invalidate`` after a 401."""
    client = httpx.AsyncClient()
    log: list[tuple[str, Any]] = []

    class Source:
        def __init__(self, org_id: str) -> None:
            self.org_id = org_id

        async def get_token(self, http: httpx.AsyncClient) -> SecretStr:
            log.append(("get", http))
            return SecretStr(f"tok-{self.org_id}")

        def invalidate(self) -> None:
            log.append(("invalidate", self.org_id))

    async def source_for(org_id: str) -> Source:
        log.append(("source", org_id))
        return Source(org_id)

    provider = BackendTokenProvider(source_for, client)
    token = await provider("org-b")
    assert token.get_secret_value() == "tok-org-b"
    assert log == [("source", "org-b"), ("get", client)]
    log.clear()
    token = await provider("org-c", force_refresh=True)
    assert token.get_secret_value() == "tok-org-c"
    assert log == [("source", "org-c"), ("invalidate", "org-c"), ("get", client)]


# -- virtual time (trio's MockClock): the write's time budget and the idle wait ---------------


class SleepyTokens(SwitchTokens):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    async def __call__(self, org_id: str, *, force_refresh: bool = False) -> SecretStr:
        await anyio.sleep(self.seconds)
        return await super().__call__(org_id, force_refresh=force_refresh)


def _on_virtual_time(main: Callable[[], Awaitable[None]]) -> None:
    trio.run(main, clock=MockClock(autojump_threshold=0))


@pytest.mark.parametrize(("seconds", "state"), [(7.9, "delivered"), (8.1, "pending")])
def test_a_write_gives_up_at_80_percent_of_the_lease(seconds: float, state: str) -> None:
    """The budget is ``0.8 · lease_for`` (8 s of 10 s) so the row is marked before another
    worker can lease it; past it the row retries ``timeout``."""

    async def main() -> None:
        s = Setup()
        await s.enqueue()
        s.tokens = SleepyTokens(seconds)
        worker = s.worker(lease_for=timedelta(seconds=10))
        assert await worker.run_once() == 1
        assert s.row().state == state
        if state == "pending":
            assert s.row().item.last_reason == "timeout"

    _on_virtual_time(main)


@pytest.mark.parametrize(("rows", "expected"), [(0, [0.0, 1.0, 2.0]), (2, [0.0, 0.0, 0.0, 1.0])])
def test_run_waits_idle_seconds_only_when_nothing_was_due(rows: int, expected: list[float]) -> None:
    async def main() -> None:
        s = Setup()
        if rows:
            await s.enqueue(*(f"p{i}" for i in range(rows)))
        stop = anyio.Event()
        times: list[float] = []
        lease = s.store.lease_outbox

        async def timed_lease(**kw: Any) -> Any:
            times.append(trio.current_time())
            if len(times) == len(expected):
                stop.set()
            return await lease(**kw)

        s.store.lease_outbox = timed_lease  # type: ignore[method-assign]
        worker = s.worker(batch_size=1)
        start = trio.current_time()
        with anyio.move_on_after(60):
            await worker.run(stop)
        assert [t - start for t in times] == expected
        assert worker.stats.delivered == rows

    _on_virtual_time(main)


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.enqueue_calls = 0

    async def enqueue_outbox(self, items: Sequence[OutboxItem]) -> int:
        self.enqueue_calls += 1
        return await super().enqueue_outbox(items)


@pytest.mark.anyio
async def test_enqueue_with_nothing_accepted_does_not_call_the_store() -> None:
    store = CountingStore()
    writer = AuditEventWriter()
    assert (
        await enqueue_attendance(
            store, [event("admitted")], target=TARGET, writers=[writer], now=T0
        )
        == 0
    )
    assert store.enqueue_calls == 0
    assert (
        await enqueue_attendance(
            store, [event("connected")], target=TARGET, writers=[writer], now=T0
        )
        == 1
    )
    assert store.enqueue_calls == 1
