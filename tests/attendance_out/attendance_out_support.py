"""Shared helpers of the attendance write-back tests: a fake clock, facts, an in-memory store
with the OutboxStore/AttendanceFactStore semantics of teams_ehr.store (dedupe, leases, lost
lease → False; attempts count leases), and a worker harness on FakeFhirServer."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pydantic import SecretStr

from teams_ehr.attendance.fhir_resources import FhirTarget
from teams_ehr.attendance.outbox import Backoff, DeadLetter, OrgRoute, OutboxWorker
from teams_ehr.attendance.writers import AttendanceWriter, WriterStrategy
from teams_ehr.store.protocol import AttendanceFactRow, OutboxItem, OutboxState
from teams_ehr.testing.fake_fhir import FakeFhirServer

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
FHIR_BASE = "https://ehr.example/interconnect-prd/api/FHIR/R4"
ORG = "org-a"
VISIT = "visit-k1"
TOKEN_CANARY = "tok-canary-9b1f"
PATIENT_CANARY = "Patient/pat-canary-77"
TARGET = FhirTarget(
    encounter="Encounter/enc-1", patient=PATIENT_CANARY, conference_id="csn-canary-555"
)


class FakeClock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


def event(
    kind: str,
    role: str = "patient",
    participant: str = "p-1",
    seconds: float = 0,
    *,
    org: str = ORG,
    visit: str = VISIT,
    department: str | None = None,
) -> AttendanceFactRow:
    """A fact as the store keeps it (same fields as H6a's AttendanceEvent)."""
    at = T0 + timedelta(seconds=seconds)
    material = "\x1f".join((org, visit, participant, kind, at.isoformat()))
    key = hashlib.sha256(material.encode()).hexdigest()
    return AttendanceFactRow(org, visit, key, kind, role, participant, at, department)


def visit_events() -> list[AttendanceFactRow]:
    """A typical visit: call start, patient lobby → admitted, provider, both leave, call end."""
    return [
        event("call_started", "other", "meeting", 0),
        event("connected", "provider", "dr-1", 5),
        event("lobby_entered", "patient", "p-1", 10),
        event("admitted", "patient", "p-1", 70),
        event("connected", "patient", "p-1", 71),
        event("disconnected", "patient", "p-1", 1000),
        event("disconnected", "provider", "dr-1", 1010),
        event("call_ended", "other", "meeting", 1011),
    ]


@dataclasses.dataclass
class _Row:
    item: OutboxItem
    state: OutboxState = "pending"
    leased_by: str | None = None
    lease_until: datetime | None = None


class MemoryStore:
    """In-memory OutboxStore + AttendanceFactStore keeping the protocol's semantics."""

    def __init__(self) -> None:
        self.rows: dict[int, _Row] = {}
        self._keys: set[tuple[str, str]] = set()
        self.facts: dict[tuple[str, str], AttendanceFactRow] = {}
        self._next = 0
        self.lease_log: list[tuple[str, int]] = []

    async def enqueue_outbox(self, items: Sequence[OutboxItem]) -> int:
        new = 0
        for item in items:
            key = (item.org_id, item.idempotency_key)
            if key in self._keys:
                continue
            self._keys.add(key)
            self._next += 1
            self.rows[self._next] = _Row(dataclasses.replace(item, item_id=self._next))
            new += 1
        return new

    async def lease_outbox(
        self, *, worker: str, limit: int, now: datetime, lease_until: datetime
    ) -> Sequence[OutboxItem]:
        due = [
            r
            for r in self.rows.values()
            if (r.state == "pending" and r.item.not_before <= now)
            or (r.state == "leased" and r.lease_until is not None and r.lease_until <= now)
        ]
        due.sort(key=lambda r: (r.item.not_before, r.item.item_id))
        leased = []
        for row in due[:limit]:
            row.state, row.leased_by, row.lease_until = "leased", worker, lease_until
            row.item = dataclasses.replace(row.item, attempts=row.item.attempts + 1)
            self.lease_log.append((worker, row.item.item_id or 0))
            leased.append(row.item)
        return leased

    def _owned(self, item_id: int, worker: str) -> _Row | None:
        row = self.rows.get(item_id)
        if row is None or row.state != "leased" or row.leased_by != worker:
            return None
        return row

    async def mark_delivered(self, item_id: int, *, worker: str) -> bool:
        row = self._owned(item_id, worker)
        if row is None:
            return False
        row.state, row.leased_by = "delivered", None
        row.item = dataclasses.replace(row.item, payload=b"")
        return True

    async def mark_retry(
        self, item_id: int, *, worker: str, not_before: datetime, reason: str
    ) -> bool:
        row = self._owned(item_id, worker)
        if row is None:
            return False
        row.state, row.leased_by = "pending", None
        row.item = dataclasses.replace(row.item, not_before=not_before, last_reason=reason)
        return True

    async def mark_dead(self, item_id: int, *, worker: str, reason: str) -> bool:
        row = self._owned(item_id, worker)
        if row is None:
            return False
        row.state, row.leased_by = "dead", None
        row.item = dataclasses.replace(row.item, last_reason=reason)
        return True

    async def outbox_counts(self) -> dict[OutboxState, int]:
        counts: dict[OutboxState, int] = {"pending": 0, "leased": 0, "delivered": 0, "dead": 0}
        for row in self.rows.values():
            counts[row.state] += 1
        return counts

    async def list_dead(self, org_id: str | None = None) -> Sequence[OutboxItem]:
        return [
            r.item
            for r in self.rows.values()
            if r.state == "dead" and (org_id is None or r.item.org_id == org_id)
        ]

    async def requeue_dead(self, item_id: int, *, now: datetime) -> bool:
        row = self.rows.get(item_id)
        if row is None or row.state != "dead":
            return False
        row.state = "pending"
        row.item = dataclasses.replace(row.item, not_before=now, attempts=0)
        return True

    async def record_facts(self, rows: Sequence[AttendanceFactRow]) -> int:
        new = 0
        for row in rows:
            if (row.org_id, row.fact_key) not in self.facts:
                self.facts[(row.org_id, row.fact_key)] = row
                new += 1
        return new

    async def list_facts(self, org_id: str, external_id: str) -> Sequence[AttendanceFactRow]:
        return sorted(
            (f for f in self.facts.values() if f.org_id == org_id and f.external_id == external_id),
            key=lambda f: (f.at, f.fact_key),
        )

    async def list_org_facts(
        self, org_id: str, *, since: datetime, until: datetime
    ) -> Sequence[AttendanceFactRow]:
        return sorted(
            (f for f in self.facts.values() if f.org_id == org_id and since <= f.at < until),
            key=lambda f: (f.at, f.fact_key),
        )


class Tokens:
    """An OrgTokenProvider counting fetches; ``force_refresh`` mints a new token."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.generation = 0

    async def __call__(self, org_id: str, *, force_refresh: bool = False) -> SecretStr:
        self.calls.append((org_id, force_refresh))
        if force_refresh:
            self.generation += 1
        return SecretStr(f"{TOKEN_CANARY}-{self.generation}")


@dataclasses.dataclass
class Harness:
    store: Any
    fake: FakeFhirServer
    clock: FakeClock
    writer: AttendanceWriter
    tokens: Tokens = dataclasses.field(default_factory=Tokens)
    alerts: list[DeadLetter] = dataclasses.field(default_factory=list)

    async def __aenter__(self) -> Harness:
        if hasattr(self.store, "open"):
            await self.store.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if hasattr(self.store, "aclose"):
            await self.store.aclose()

    def worker(self, http: httpx.AsyncClient, worker_id: str = "w1", **kwargs: Any) -> OutboxWorker:
        async def route(org_id: str, strategy: WriterStrategy) -> OrgRoute:
            assert strategy is self.writer.strategy
            return OrgRoute(self.writer, FHIR_BASE)

        kwargs.setdefault("backoff", Backoff(jitter=lambda: 1.0))
        kwargs.setdefault("on_dead_letter", self.alerts.append)
        return OutboxWorker(
            self.store,
            route,
            self.tokens,
            http,
            worker_id=worker_id,
            clock=self.clock,
            **kwargs,
        )


def mock_client(fake: FakeFhirServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(fake.handler))


def audit_tags(fake: FakeFhirServer) -> list[str]:
    return [r["meta"]["tag"][0]["code"] for r in fake.resources("AuditEvent")]
