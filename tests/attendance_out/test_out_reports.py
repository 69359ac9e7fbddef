"""D7: visit reports (lobby wait, time connected per role, duration, no-show), aggregates, CSV."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from datetime import timedelta

import pytest
from attendance_out_support import T0, MemoryStore, event, visit_events
from hypothesis import given
from hypothesis import strategies as st

from teams_ehr.attendance.reports import (
    connected_intervals,
    organization_report,
    report_visit,
    reports_to_csv,
    reports_to_json,
)


def test_visit_metrics() -> None:
    report = report_visit(visit_events())
    assert report.lobby_wait_s == 60
    assert report.total_duration_s == 1011
    assert report.connected_s == {"provider": 1005, "patient": 929, "other": 0}
    assert report.participants == {"provider": 1, "patient": 1, "other": 0}
    assert report.no_show is False
    assert report.started_at == T0
    assert report.fact_count == 8


def test_no_show_and_duration_from_connections_without_call_events() -> None:
    facts = [event("connected", "provider", "d", 10), event("disconnected", "provider", "d", 70)]
    report = report_visit(facts)
    assert report.no_show is True
    assert report.total_duration_s == 60
    assert report.lobby_wait_s is None


def test_union_of_a_role_counts_overlap_once_and_reconnects_add_up() -> None:
    facts = [
        event("connected", "provider", "d1", 0),
        event("connected", "provider", "d2", 30),
        event("disconnected", "provider", "d1", 60),
        event("disconnected", "provider", "d2", 90),
        event("connected", "patient", "p", 0),
        event("disconnected", "patient", "p", 10),
        event("connected", "patient", "p", 20),
        event("connected", "patient", "p", 25),  # a repeated connect inside an open interval
        event("disconnected", "patient", "p", 40),
    ]
    report = report_visit(facts)
    assert report.connected_s["provider"] == 90
    assert report.connected_s["patient"] == 30
    assert report.participants["provider"] == 2


def test_leave_before_join_and_open_interval_use_call_bounds() -> None:
    facts = [
        event("call_started", "other", "meeting", 0),
        event("disconnected", "patient", "p", 50),
        event("connected", "provider", "d", 10),
        event("call_ended", "other", "meeting", 100),
    ]
    spans = connected_intervals(facts)
    assert spans[("patient", "p")] == [(T0, T0 + timedelta(seconds=50))]
    assert spans[("provider", "d")] == [(T0 + timedelta(seconds=10), T0 + timedelta(seconds=100))]


@given(st.permutations(visit_events()))
def test_report_is_order_independent(order: list) -> None:
    assert report_visit(order) == report_visit(visit_events())


def test_empty_visit_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one fact"):
        report_visit([])


@pytest.mark.anyio
async def test_organization_aggregates_per_department_and_csv() -> None:
    store = MemoryStore()
    rows = [dataclasses.replace(e, department="cardiology") for e in visit_events()]
    rows += [
        event("connected", "provider", "d", 5000, visit="v2", department="cardiology"),
        event("disconnected", "provider", "d", 5600, visit="v2", department="cardiology"),
        event("connected", "patient", "p", 9000, visit="v3"),
        event("disconnected", "patient", "p", 9300, visit="v3"),
        event("connected", "patient", "p", 9000, visit="other-org", org="org-b"),
    ]
    await store.record_facts(rows)
    report = await organization_report(store, "org-a", since=T0, until=T0 + timedelta(days=1))
    assert [v.visit_key for v in report.visits] == ["visit-k1", "v2", "v3"]
    assert report.overall.visits == 3
    assert report.overall.no_shows == 1
    cardiology, unassigned = report.departments
    assert cardiology.department == "cardiology"
    assert cardiology.visits == 2
    assert cardiology.no_show_rate == 0.5
    assert cardiology.mean_lobby_wait_s == 60
    assert unassigned.department is None
    assert unassigned.mean_connected_s["patient"] == 300

    text = reports_to_csv(report.visits)
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert list(parsed[0]) == [
        "org_id",
        "visit_key",
        "department",
        "started_at",
        "ended_at",
        "total_duration_s",
        "lobby_wait_s",
        "patient_connected_s",
        "provider_connected_s",
        "other_connected_s",
        "no_show",
    ]
    assert parsed[0]["lobby_wait_s"] == "60"
    assert parsed[1]["no_show"] == "true"
    for secret in ("p-1", "dr-1", *(r.fact_key for r in rows)):
        assert secret not in text

    data = json.loads(reports_to_json(report))
    assert data["overall"]["visits"] == 3
    assert data["visits"][0]["connected_s"]["patient"] == 929
    assert "participant_key" not in reports_to_json(report)
