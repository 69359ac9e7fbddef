"""D6: reconciliation from the attendance report — tolerance matching, no double counting (R17)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest
from attendance_out_support import T0, TARGET, MemoryStore, event, visit_events

from teams_ehr.attendance.events import AttendanceEvent
from teams_ehr.attendance.notifications import ParticipantKeyer
from teams_ehr.attendance.outbox import enqueue_visit_note
from teams_ehr.attendance.reconcile import (
    REPORT_FACT_PREFIX,
    GraphAttendanceReportSource,
    OutboxSink,
    ReportedInterval,
    ReportedSession,
    match_candidates,
    reconcile_visit,
    session_candidates,
)
from teams_ehr.attendance.writers import AuditEventWriter, EpicClinicalNoteWriter
from teams_ehr.store.protocol import MeetingRow
from teams_ehr.teams.models import AttendanceRecord, AttendanceReport

pytestmark = pytest.mark.anyio
ORG, VISIT = "org-a", "visit-k1"


def at(seconds: float):
    return T0 + timedelta(seconds=seconds)


class Reports:
    def __init__(self, *sessions: ReportedSession) -> None:
        self._sessions = sessions

    async def sessions(self, org_id: str, external_id: str) -> Sequence[ReportedSession]:
        return self._sessions


SESSION = ReportedSession(
    "r1",
    at(0),
    at(1011),
    (
        ReportedInterval("rec-dr", "provider", "dr-1", at(6), at(1012)),
        ReportedInterval("rec-p", "patient", "p-1", at(75), at(995)),
        ReportedInterval("rec-p", "patient", "p-1", at(1100), None),  # a rejoin the events missed
    ),
)


async def run(store: MemoryStore, source: Reports, writers=None, tolerance=timedelta(seconds=60)):
    return await reconcile_visit(
        org_id=ORG,
        external_id=VISIT,
        source=source,
        facts=store,
        outbox=store,
        target=TARGET,
        writers=writers if writers is not None else [AuditEventWriter()],
        now=T0,
        tolerance=tolerance,
    )


async def test_fills_only_what_notifications_missed_and_is_idempotent() -> None:
    store = MemoryStore()
    await store.record_facts(visit_events())
    result = await run(store, Reports(SESSION))
    (new,) = result.new_facts
    assert (new.kind, new.role, new.at) == ("connected", "patient", at(1100))
    assert new.fact_key.startswith(REPORT_FACT_PREFIX)
    assert result.matched == 6
    assert result.enqueued == 1
    again = await run(store, Reports(SESSION))
    assert (again.new_facts, again.enqueued) == ((), 0)


async def test_all_notifications_lost_rebuilds_the_visit() -> None:
    """R17: subscription removed mid-meeting — the report alone gives every fact."""
    store = MemoryStore()
    result = await run(store, Reports(SESSION))
    kinds = sorted(f.kind for f in result.new_facts)
    assert kinds == [
        "call_ended",
        "call_started",
        "connected",
        "connected",
        "connected",
        "disconnected",
        "disconnected",
    ]
    assert result.enqueued == 5  # connects and disconnects for the AuditEvent writer


async def test_tolerance_is_configurable() -> None:
    store = MemoryStore()
    await store.record_facts(visit_events())
    strict = await run(store, Reports(SESSION), tolerance=timedelta(seconds=1))
    assert len(strict.new_facts) > 1


def test_each_stored_fact_matches_at_most_one_candidate() -> None:
    stored = [event("connected", "patient", "p", 100)]
    candidates = [event("connected", "patient", "x", 90), event("connected", "patient", "y", 110)]
    unmatched, matched = match_candidates(candidates, stored)
    assert matched == 1
    assert len(unmatched) == 1  # never counted twice


def test_matching_prefers_same_participant_then_nearest() -> None:
    stored = [event("connected", "patient", "other", 101), event("connected", "patient", "p", 130)]
    candidates = [event("connected", "patient", "p", 100), event("connected", "patient", "z", 102)]
    unmatched, matched = match_candidates(candidates, stored)
    assert matched == 2
    assert unmatched == []


def test_kind_and_role_must_agree() -> None:
    stored = [event("connected", "provider", "p", 100)]
    assert match_candidates([event("connected", "patient", "p", 100)], stored)[1] == 0
    assert match_candidates([event("disconnected", "provider", "p", 100)], stored)[1] == 0


def test_session_candidate_keys_are_stable_and_distinct() -> None:
    a = session_candidates(ORG, VISIT, SESSION)
    b = session_candidates(ORG, VISIT, SESSION)
    assert [f.fact_key for f in a] == [f.fact_key for f in b]
    assert len({f.fact_key for f in a}) == len(a) == 7  # the open interval has no leave


async def test_note_is_enqueued_over_the_complete_fact_set() -> None:
    store = MemoryStore()
    await store.record_facts(visit_events())
    await enqueue_visit_note(store, visit_events(), target=TARGET, now=T0)
    result = await run(store, Reports(SESSION), writers=[EpicClinicalNoteWriter()])
    assert result.enqueued == 1  # a new note: the fact set grew
    again = await run(store, Reports(SESSION), writers=[EpicClinicalNoteWriter()])
    assert again.enqueued == 0
    assert (await store.outbox_counts())["pending"] == 2


async def test_outbox_sink_skips_late_notifications_already_reconciled() -> None:
    store = MemoryStore()
    await run(store, Reports(SESSION))  # notifications were lost; the report filled in
    before = (await store.outbox_counts())["pending"]
    ended: list[tuple[str, str]] = []

    async def writers(org_id: str):
        return [AuditEventWriter()]

    async def target(org_id: str, external_id: str):
        return TARGET

    async def on_end(org_id: str, external_id: str, when) -> None:
        ended.append((org_id, external_id))

    sink = OutboxSink(
        store,
        writers_for_org=writers,
        target_for_visit=target,
        facts=store,
        on_call_ended=on_end,
        clock=lambda: T0,
    )
    late = [
        AttendanceEvent.create(
            org_id=ORG,
            external_id=VISIT,
            kind="connected",
            role="patient",
            participant_key="p-1",
            at=at(80),
        ),
        AttendanceEvent.create(
            org_id=ORG,
            external_id=VISIT,
            kind="disconnected",
            role="patient",
            participant_key="p-1",
            at=at(2000),
        ),
        AttendanceEvent.create(
            org_id=ORG,
            external_id=VISIT,
            kind="call_ended",
            role="other",
            participant_key="meeting",
            at=at(1012),
        ),
    ]
    await sink(late)
    assert (await store.outbox_counts())["pending"] == before + 1  # only the unseen leave
    assert ended == []  # call_ended matched the report's, nothing new to reconcile

    async def no_target(org_id: str, external_id: str):
        return None

    quiet = OutboxSink(store, writers_for_org=writers, target_for_visit=no_target)
    await quiet([event("connected", "patient", "q", 5)])
    assert (await store.outbox_counts())["pending"] == before + 1


class FakeGraphReports:
    """H3's GraphClient surface, fed parsed Graph JSON (names and e-mail included, to be dropped)."""

    def __init__(self) -> None:
        self.report = AttendanceReport.model_validate(
            {
                "id": "rep-1",
                "meetingStartDateTime": "2026-03-02T14:00:00Z",
                "meetingEndDateTime": "2026-03-02T14:30:00Z",
            }
        )
        self.records = [
            AttendanceRecord.model_validate(r)
            for r in (
                {
                    "id": "a",
                    "role": "Organizer",
                    "emailAddress": "dr@example.org",
                    "identity": {
                        "@odata.type": "#microsoft.graph.communicationsUserIdentity",
                        "id": "oid-dr",
                        "tenantId": "T1",
                        "displayName": "Dr Who",
                    },
                    "attendanceIntervals": [
                        {
                            "joinDateTime": "2026-03-02T14:00:05Z",
                            "leaveDateTime": "2026-03-02T14:29:00Z",
                        }
                    ],
                },
                {
                    "id": "b",
                    "role": "Attendee",
                    "identity": {
                        "@odata.type": "#microsoft.graph.communicationsAnonymousGuestIdentity",
                        "id": "anon-1",
                        "displayName": "Jane Patient",
                    },
                    "attendanceIntervals": [
                        {
                            "joinDateTime": "2026-03-02T14:03:00Z",
                            "leaveDateTime": "2026-03-02T14:20:00Z",
                        }
                    ],
                },
                {
                    "id": "c",
                    "role": "Attendee",
                    "identity": {
                        "@odata.type": "#microsoft.graph.communicationsUserIdentity",
                        "id": "ext-1",
                        "tenantId": "OTHER",
                    },
                    "attendanceIntervals": [{"joinDateTime": None, "leaveDateTime": None}],
                },
                {"id": "d", "role": "Attendee", "identity": None, "attendanceIntervals": []},
            )
        ]

    async def list_attendance_reports(self, organizer_oid: str, meeting_id: str):
        assert (organizer_oid, meeting_id) == ("oid-dr", "m-1")
        return [self.report]

    async def list_attendance_records(self, organizer_oid: str, meeting_id: str, report_id: str):
        return self.records


class Meetings:
    async def get_meeting(self, org_id: str, external_id: str):
        if external_id != VISIT:
            return None
        return MeetingRow(ORG, VISIT, "oid-dr", "m-1", "https://join", T0, at(1800), "active")


async def test_graph_source_maps_roles_and_hashes_identities() -> None:
    keyer = ParticipantKeyer(b"s" * 32)

    async def tenant(org_id: str) -> str:
        return "t1"

    source = GraphAttendanceReportSource(
        FakeGraphReports(), Meetings(), keyer, tenant_for_org=tenant
    )
    (session,) = await source.sessions(ORG, VISIT)
    assert (session.report_id, session.started, session.ended) == ("rep-1", T0, at(1800))
    roles = [(i.role, i.participant_key) for i in session.intervals]
    assert roles == [
        ("provider", keyer.key(ORG, "oid-dr")),
        ("patient", keyer.key(ORG, "anon-1")),
        ("other", keyer.key(ORG, "ext-1")),
    ]
    text = repr(session)
    for secret in ("Jane Patient", "Dr Who", "dr@example.org", "anon-1", "oid-dr"):
        assert secret not in text
    assert await source.sessions(ORG, "unknown") == []
    store = MemoryStore()
    result = await run(store, Reports(session))
    assert sum(1 for f in result.new_facts if f.kind == "connected") == 2
