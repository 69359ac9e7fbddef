"""Reconciliation: fill in what notifications missed from the attendance report (requirement D6).

Graph's attendance report
(https://learn.microsoft.com/graph/api/resources/meetingattendancereport) is available only
after the meeting ends and is the audit-grade source; meeting call events are beta and may be
lost (reliability case R17). After ``call_ended`` (at meeting end + 15 min, and again + 2 h;
docs/security.md#attendance-pipeline) :func:`reconcile_visit`

1. reads every report session (``meetingStart/End`` and each record's join/leave intervals)
   through an :class:`AttendanceReportSource` (:class:`GraphAttendanceReportSource` over the
   Graph client, or anything a test feeds),
2. turns them into candidate facts keyed ``rpt-`` + H(report | record | interval | kind) (the two
   sources never share keys, so cross-source dedupe is by tolerance, not by key),
3. matches each candidate to a stored fact of the same kind and role within ``tolerance``
   (default 60 s), preferring the same participant and then the nearest time; a stored fact
   matches at most one candidate, so nothing is counted twice,
4. records the unmatched candidates, enqueues them for the per-fact writers and (re)enqueues
   the per-visit note over the complete fact set.

Running it again finds every candidate matched (idempotent). :class:`OutboxSink` is the
``EventSink`` of the inbox processor: it enqueues live events, skipping a late notification
that a report-derived fact already covers (reliability case R17).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from teams_ehr._redact import get_logger
from teams_ehr._types import Clock, utc_now
from teams_ehr.attendance.events import RoleMapper
from teams_ehr.attendance.fhir_resources import FhirTarget
from teams_ehr.attendance.notifications import ParticipantChange, ParticipantKeyer
from teams_ehr.attendance.outbox import enqueue_attendance, enqueue_visit_note
from teams_ehr.attendance.reports import AttendanceFactLike
from teams_ehr.attendance.writers import AttendanceWriter
from teams_ehr.store.protocol import (
    AttendanceFactRow,
    AttendanceFactStore,
    MeetingStore,
    OutboxStore,
)
from teams_ehr.teams.models import AttendanceRecord, AttendanceReport

__all__ = [
    "REPORT_FACT_PREFIX",
    "AttendanceReportClient",
    "AttendanceReportSource",
    "GraphAttendanceReportSource",
    "OutboxSink",
    "ReconcileResult",
    "ReportedInterval",
    "ReportedSession",
    "match_candidates",
    "reconcile_visit",
    "session_candidates",
]

log = get_logger(__name__)

REPORT_FACT_PREFIX = "rpt-"
MEETING_PARTICIPANT = "meeting"
DEFAULT_TOLERANCE = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class ReportedInterval:
    """One attendance interval of one report record, already mapped to a role and key."""

    record_id: str
    role: str
    participant_key: str
    joined: datetime | None
    left: datetime | None


@dataclass(frozen=True, slots=True)
class ReportedSession:
    """One ``meetingAttendanceReport`` (one per meeting session)."""

    report_id: str
    started: datetime | None
    ended: datetime | None
    intervals: tuple[ReportedInterval, ...]


class AttendanceReportSource(Protocol):
    async def sessions(self, org_id: str, external_id: str) -> Sequence[ReportedSession]: ...


class AttendanceReportClient(Protocol):
    """The two calls of :class:`~teams_ehr.teams.graph_client.GraphClient` reconciliation uses."""

    async def list_attendance_reports(
        self, organizer_oid: str, meeting_id: str
    ) -> Sequence[AttendanceReport]: ...

    async def list_attendance_records(
        self, organizer_oid: str, meeting_id: str, report_id: str
    ) -> Sequence[AttendanceRecord]: ...


# ``@odata.type`` of attendanceRecord.identity → the roster's identity kind (events.RoleMapper).
_IDENTITY_KINDS = {
    "#microsoft.graph.communicationsuseridentity": "user",
    "#microsoft.graph.communicationsguestidentity": "guest",
    "#microsoft.graph.communicationsanonymousguestidentity": "guest",
    "#microsoft.graph.azurecommunicationservicesuseridentity": "azurecommunicationservicesuser",
    "#microsoft.graph.communicationsphoneidentity": "phone",
    "#microsoft.graph.communicationsapplicationidentity": "application",
    "#microsoft.graph.communicationsapplicationinstanceidentity": "applicationinstance",
}


class GraphAttendanceReportSource:
    """Report sessions from Graph (``GET …/attendanceReports`` and ``…/attendanceRecords``),
    identities hashed with the same :class:`ParticipantKeyer` and roles from the same
    :class:`RoleMapper` table as live notifications; e-mail and names are never read."""

    def __init__(
        self,
        graph: AttendanceReportClient,
        meetings: MeetingStore,
        keyer: ParticipantKeyer,
        *,
        tenant_for_org: Callable[[str], Awaitable[str]],
    ) -> None:
        self._graph = graph
        self._meetings = meetings
        self._keyer = keyer
        self._tenant_for_org = tenant_for_org

    async def sessions(self, org_id: str, external_id: str) -> Sequence[ReportedSession]:
        meeting = await self._meetings.get_meeting(org_id, external_id)
        if meeting is None:
            return []
        mapper = RoleMapper(
            org_tenant_id=await self._tenant_for_org(org_id),
            organizer_key=self._keyer.key(org_id, meeting.organizer_oid),
        )
        sessions = []
        for report in await self._graph.list_attendance_reports(
            meeting.organizer_oid, meeting.meeting_id
        ):
            records = await self._graph.list_attendance_records(
                meeting.organizer_oid, meeting.meeting_id, report.id
            )
            intervals = [
                interval
                for index, record in enumerate(records)
                for interval in self._intervals(org_id, mapper, index, record)
            ]
            sessions.append(
                ReportedSession(
                    report.id,
                    report.meeting_start_date_time,
                    report.meeting_end_date_time,
                    tuple(intervals),
                )
            )
        return sessions

    def _intervals(
        self, org_id: str, mapper: RoleMapper, index: int, record: AttendanceRecord
    ) -> list[ReportedInterval]:
        identity = record.identity
        if identity is None or not identity.id:
            return []
        kind = _IDENTITY_KINDS.get((identity.odata_type or "").lower(), "unknown")
        if kind == "user" and not identity.tenant_id:
            kind = "guest"  # anonymous users carry no tenant
        change = ParticipantChange(
            participant_key=self._keyer.key(org_id, identity.id),
            identity_kind=kind,
            tenant_id=identity.tenant_id.lower() if identity.tenant_id else None,
        )
        role = "provider" if (record.role or "").lower() == "organizer" else mapper.role(change)
        record_id = record.id or f"record-{index}"
        return [
            ReportedInterval(
                record_id, role, change.participant_key, i.join_date_time, i.leave_date_time
            )
            for i in record.attendance_intervals
        ]


def _report_key(*parts: str) -> str:
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return REPORT_FACT_PREFIX + digest[:60]


def _stamp(at: datetime | None) -> str:
    return at.isoformat() if at else "-"


def session_candidates(
    org_id: str, external_id: str, session: ReportedSession, *, department: str | None = None
) -> list[AttendanceFactRow]:
    """The facts a report session states: call start/end and each join/leave."""
    rows: list[AttendanceFactRow] = []

    def add(kind: str, role: str, participant: str, at: datetime | None, *key: str) -> None:
        if at is not None:
            fact_key = _report_key(org_id, external_id, session.report_id, *key, kind)
            rows.append(
                AttendanceFactRow(
                    org_id, external_id, fact_key, kind, role, participant, at, department
                )
            )

    add("call_started", "other", MEETING_PARTICIPANT, session.started, "session")
    add("call_ended", "other", MEETING_PARTICIPANT, session.ended, "session")
    for interval in session.intervals:
        span = (interval.record_id, _stamp(interval.joined), _stamp(interval.left))
        add("connected", interval.role, interval.participant_key, interval.joined, *span)
        add("disconnected", interval.role, interval.participant_key, interval.left, *span)
    return rows


def match_candidates(
    candidates: Sequence[AttendanceFactLike],
    existing: Sequence[AttendanceFactLike],
    *,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> tuple[list[AttendanceFactLike], int]:
    """Split ``candidates`` into (unmatched, matched count). A candidate matches an unused
    existing fact of the same kind and role with ``|Δt| ≤ tolerance`` (same key or
    participant first, then nearest time); each existing fact is used at most once."""
    used: set[int] = set()
    unmatched: list[AttendanceFactLike] = []
    matched = 0
    for candidate in sorted(candidates, key=lambda f: (f.at, f.fact_key)):
        best: tuple[int, float, int] | None = None
        for index, fact in enumerate(existing):
            if index in used or fact.kind != candidate.kind or fact.role != candidate.role:
                continue
            delta = abs((fact.at - candidate.at).total_seconds())
            if delta > tolerance.total_seconds():
                continue
            same = fact.fact_key == candidate.fact_key
            rank = (
                0 if same else 1 if fact.participant_key == candidate.participant_key else 2,
                delta,
                index,
            )
            if best is None or rank < best:
                best = rank
        if best is None:
            unmatched.append(candidate)
        else:
            used.add(best[2])
            matched += 1
    return unmatched, matched


@dataclass(frozen=True)
class ReconcileResult:
    new_facts: tuple[AttendanceFactRow, ...]
    matched: int
    enqueued: int


async def reconcile_visit(
    *,
    org_id: str,
    external_id: str,
    source: AttendanceReportSource,
    facts: AttendanceFactStore,
    outbox: OutboxStore,
    target: FhirTarget,
    writers: Sequence[AttendanceWriter],
    now: datetime,
    department: str | None = None,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> ReconcileResult:
    """Reconcile one visit with its attendance report (see the module docstring)."""
    stored = list(await facts.list_facts(org_id, external_id))
    candidates: list[AttendanceFactRow] = []
    for session in await source.sessions(org_id, external_id):
        candidates.extend(session_candidates(org_id, external_id, session, department=department))
    unmatched, matched = match_candidates(candidates, stored, tolerance=tolerance)
    unmatched_keys = {f.fact_key for f in unmatched}
    new_rows = tuple(r for r in candidates if r.fact_key in unmatched_keys)
    if new_rows:
        await facts.record_facts(new_rows)
    enqueued = await enqueue_attendance(outbox, new_rows, target=target, writers=writers, now=now)
    all_facts = [*stored, *new_rows]
    if all_facts and any(w.strategy.per_visit for w in writers):
        for writer in writers:
            if writer.strategy.per_visit:
                enqueued += await enqueue_visit_note(
                    outbox, all_facts, target=target, now=now, strategy=writer.strategy
                )
    log.info("reconciled visit: %d new facts, %d matched", len(new_rows), matched)
    return ReconcileResult(new_rows, matched, enqueued)


class OutboxSink:
    """The inbox processor's ``EventSink``: enqueue live events for the organization's per-fact
    writers; skip events a report-derived fact already covers (late notifications, reliability
    case R17); tell ``on_call_ended`` so the host schedules :func:`reconcile_visit`."""

    def __init__(
        self,
        outbox: OutboxStore,
        *,
        writers_for_org: Callable[[str], Awaitable[Sequence[AttendanceWriter]]],
        target_for_visit: Callable[[str, str], Awaitable[FhirTarget | None]],
        facts: AttendanceFactStore | None = None,
        on_call_ended: Callable[[str, str, datetime], Awaitable[None]] | None = None,
        tolerance: timedelta = DEFAULT_TOLERANCE,
        clock: Clock = utc_now,
    ) -> None:
        self._outbox = outbox
        self._writers_for_org = writers_for_org
        self._target_for_visit = target_for_visit
        self._facts = facts
        self._on_call_ended = on_call_ended
        self._tolerance = tolerance
        self._clock = clock

    async def __call__(self, events: Sequence[AttendanceFactLike]) -> None:
        visits: dict[tuple[str, str], list[AttendanceFactLike]] = {}
        for event in events:
            visits.setdefault((event.org_id, event.external_id), []).append(event)
        for (org_id, external_id), batch in visits.items():
            await self._visit(org_id, external_id, batch)

    async def _visit(self, org_id: str, external_id: str, batch: list[AttendanceFactLike]) -> None:
        target = await self._target_for_visit(org_id, external_id)
        if target is None:
            log.warning("no FHIR target for a visit of org %s; events not enqueued", org_id)
            return
        if self._facts is not None:
            reported = [
                f
                for f in await self._facts.list_facts(org_id, external_id)
                if f.fact_key.startswith(REPORT_FACT_PREFIX)
            ]
            if reported:
                batch, _ = match_candidates(batch, reported, tolerance=self._tolerance)
        writers = await self._writers_for_org(org_id)
        await enqueue_attendance(
            self._outbox, batch, target=target, writers=writers, now=self._clock()
        )
        if self._on_call_ended is not None:
            for event in batch:
                if event.kind == "call_ended":
                    await self._on_call_ended(org_id, external_id, event.at)
