"""R25: random interleavings of deliveries, duplicates, crashes (restart), FHIR outages and
recoveries end, after draining, with exactly the ground-truth facts in FHIR (I2, I3, I5, I7)."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
from attendance_out_support import (
    FHIR_BASE,
    TARGET,
    FakeClock,
    MemoryStore,
    Tokens,
    audit_tags,
    event,
)
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from teams_ehr._concurrency import KeyedLocks
from teams_ehr.attendance.outbox import (
    CRASH_POINTS,
    Backoff,
    OrgRoute,
    OutboxWorker,
    enqueue_attendance,
)
from teams_ehr.attendance.writers import AuditEventWriter, WriterStrategy
from teams_ehr.testing.fake_fhir import FakeFhirServer

POOL = [
    event(kind, role, f"{role}-{n}", n * 60 + (0 if kind == "connected" else 30))
    for n in range(3)
    for role in ("patient", "provider")
    for kind in ("connected", "disconnected")
]


class Crash(BaseException):
    pass


class OutboxMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.store = MemoryStore()
        self.fake = FakeFhirServer(FHIR_BASE, clock=self.clock)
        self.writer = AuditEventWriter(clock=self.clock)
        self.truth: set[str] = set()
        self.crash_at: str | None = None
        self.generation = 0
        self.alerts: list[Any] = []
        self.tokens = Tokens()

    @initialize(conditional=st.booleans())
    def choose_server(self, conditional: bool) -> None:
        """Either conditional create, or a server without it and search-then-create."""
        self.fake.supports_conditional_create = conditional
        self.writer = AuditEventWriter(conditional_create=conditional, clock=self.clock)

    def _worker(self, http: httpx.AsyncClient, crash: str | None) -> OutboxWorker:
        async def route(org_id: str, strategy: WriterStrategy) -> OrgRoute:
            return OrgRoute(self.writer, FHIR_BASE)

        def hook(point: str) -> None:
            if point == crash:
                raise Crash(point)

        return OutboxWorker(
            self.store,
            route,
            self.tokens,
            http,
            worker_id=f"w{self.generation}",
            clock=self.clock,
            backoff=Backoff(jitter=lambda: 0.5),
            on_dead_letter=self.alerts.append,
            crash_hook=hook,
            locks=KeyedLocks(),
            batch_size=4,
            concurrency=2,
        )

    async def _run_once(self, crash: str | None) -> int:
        async with httpx.AsyncClient(transport=httpx.MockTransport(self.fake.handler)) as http:
            return await self._worker(http, crash).run_once()

    @rule(index=st.integers(0, len(POOL) - 1), copies=st.integers(1, 3))
    def deliver(self, index: int, copies: int) -> None:
        """A notification arrives, possibly redelivered (Graph retries, R06)."""
        fact = POOL[index]
        for _ in range(copies):
            anyio.run(
                lambda: enqueue_attendance(
                    self.store, [fact], target=TARGET, writers=[self.writer], now=self.clock()
                )
            )
        self.truth.add(fact.fact_key)

    @rule()
    def work(self) -> None:
        crash, self.crash_at = self.crash_at, None
        try:
            anyio.run(self._run_once, crash)
        except (Crash, BaseExceptionGroup):
            self.generation += 1  # the process died; a fresh worker takes over

    @rule(point=st.sampled_from(CRASH_POINTS))
    def arm_crash(self, point: str) -> None:
        self.crash_at = point

    @rule(minutes=st.integers(1, 180), retry_after=st.one_of(st.none(), st.integers(1, 600)))
    def outage(self, minutes: int, retry_after: int | None) -> None:
        self.fake.outage(
            self.clock() + __import__("datetime").timedelta(minutes=minutes),
            retry_after=retry_after,
        )

    @rule()
    def recover(self) -> None:
        self.fake.outage(None)

    @rule(
        status=st.sampled_from([429, 500, 503, 408]),
        retry_after=st.one_of(st.none(), st.integers(1, 300)),
    )
    def transient_failure(self, status: int, retry_after: int | None) -> None:
        self.fake.fail_next(status, retry_after=retry_after)

    @rule()
    def lose_a_response(self) -> None:
        self.fake.lose_next_response(method="POST")

    @rule(seconds=st.integers(1, 1800))
    def tick(self, seconds: int) -> None:
        self.clock.advance(seconds=seconds)

    @invariant()
    def never_a_duplicate_or_an_invented_fact(self) -> None:
        tags = audit_tags(self.fake)
        assert len(tags) == len(set(tags))
        assert set(tags) <= self.truth

    def teardown(self) -> None:
        self.fake.outage(None)
        for _ in range(200):
            counts = anyio.run(self.store.outbox_counts)
            if counts["pending"] + counts["leased"] == 0:
                break
            try:
                if anyio.run(self._run_once, None) == 0:
                    self.clock.advance(minutes=5)
            except (Crash, BaseExceptionGroup):  # pragma: no cover - no crash is armed here
                raise
        else:
            raise AssertionError("outbox did not drain")
        assert sorted(audit_tags(self.fake)) == sorted(self.truth)
        assert self.alerts == []
        assert anyio.run(self.store.outbox_counts)["dead"] == 0


OutboxMachine.TestCase.settings = settings(
    settings.default,
    max_examples=min(settings.default.max_examples, 60),
    stateful_step_count=30,
    deadline=None,
)
TestOutboxStateMachine = OutboxMachine.TestCase
