"""Visit reports from attendance facts (requirement D7): lobby wait, time connected, duration,
no-show.

A report is computed from the stored facts of one visit (role codes, kinds, UTC times; no names,
no patient identifiers), so it is identical whatever order the facts arrived in (invariant
I7). Rules, per visit:

* **Intervals.** Per participant, facts sorted by time pair ``connected`` with the next
  ``disconnected``. A repeated ``connected`` inside an open interval is ignored. A
  ``disconnected`` with no open interval starts at ``call_started`` (or the first fact): a leave
  before its join is accepted (invariant I7). An interval still open ends at ``call_ended`` (or
  the last fact).
* **Time connected per role** is the length of the union of that role's intervals (time during
  which at least one participant of that role was connected).
* **Lobby wait**: the patient's first ``lobby_entered`` to the first ``admitted`` after it.
* **Total duration**: ``call_started`` → ``call_ended``; else first connect → last disconnect.
* **No-show**: no patient ``connected`` or ``admitted`` fact.

Aggregates per organization and department read facts with
:meth:`~teams_ehr.store.protocol.AttendanceFactStore.list_org_facts`. Output is JSON or CSV
(``csv`` module) whose columns hold opaque visit keys, departments, times and numbers only.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol

from teams_ehr.store.protocol import AttendanceFactStore

__all__ = [
    "ROLES",
    "AttendanceFactLike",
    "DepartmentAggregate",
    "OrganizationReport",
    "VisitReport",
    "connected_intervals",
    "organization_report",
    "report_visit",
    "reports_to_csv",
    "reports_to_json",
]

ROLES = ("provider", "patient", "other")
_KIND_ORDER = {
    "call_started": 0,
    "lobby_entered": 1,
    "admitted": 2,
    "connected": 3,
    "disconnected": 4,
    "call_ended": 5,
}


class AttendanceFactLike(Protocol):
    """What every consumer here reads from a fact: the events' ``AttendanceEvent`` and the store's
    ``AttendanceFactRow`` both fit."""

    @property
    def org_id(self) -> str: ...
    @property
    def external_id(self) -> str: ...
    @property
    def fact_key(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def participant_key(self) -> str: ...
    @property
    def at(self) -> datetime: ...


def _sorted(facts: Iterable[AttendanceFactLike]) -> list[AttendanceFactLike]:
    return sorted(facts, key=lambda f: (f.at, _KIND_ORDER.get(str(f.kind), 9), f.fact_key))


def _bounds(facts: Sequence[AttendanceFactLike]) -> tuple[datetime | None, datetime | None]:
    starts = [f.at for f in facts if f.kind == "call_started"]
    ends = [f.at for f in facts if f.kind == "call_ended"]
    return (min(starts) if starts else None, max(ends) if ends else None)


def connected_intervals(
    facts: Iterable[AttendanceFactLike],
) -> dict[tuple[str, str], list[tuple[datetime, datetime]]]:
    """``(role, participant_key) → [(start, end), …]`` under the pairing rules above."""
    ordered = _sorted(facts)
    if not ordered:
        return {}
    call_start, call_end = _bounds(ordered)
    first, last = ordered[0].at, ordered[-1].at
    result: dict[tuple[str, str], list[tuple[datetime, datetime]]] = defaultdict(list)
    open_since: dict[tuple[str, str], datetime] = {}
    for fact in ordered:
        key = (str(fact.role), fact.participant_key)
        if fact.kind == "connected":
            open_since.setdefault(key, fact.at)
        elif fact.kind == "disconnected":
            start = open_since.pop(key, None)
            if start is None:
                start = min(call_start or first, fact.at)
            result[key].append((start, fact.at))
    for key, start in open_since.items():
        result[key].append((start, max(call_end or last, start)))
    return dict(result)


def _union_seconds(intervals: Iterable[tuple[datetime, datetime]]) -> float:
    total = 0.0
    current: tuple[datetime, datetime] | None = None
    for start, end in sorted(intervals):
        if current is None or start > current[1]:
            if current is not None:
                total += (current[1] - current[0]).total_seconds()
            current = (start, end)
        else:
            current = (current[0], max(current[1], end))
    if current is not None:
        total += (current[1] - current[0]).total_seconds()
    return total


@dataclass(frozen=True, slots=True)
class VisitReport:
    """One visit's attendance metrics (seconds; ``None`` where the facts do not say)."""

    org_id: str
    visit_key: str
    department: str | None
    started_at: datetime | None
    ended_at: datetime | None
    total_duration_s: float | None
    lobby_wait_s: float | None
    connected_s: dict[str, float] = field(default_factory=dict)
    participants: dict[str, int] = field(default_factory=dict)
    no_show: bool = True
    fact_count: int = 0

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat() if self.started_at else None
        data["ended_at"] = self.ended_at.isoformat() if self.ended_at else None
        return data


def report_visit(
    facts: Sequence[AttendanceFactLike], *, department: str | None = None
) -> VisitReport:
    """The report of one visit; ``facts`` all share ``org_id`` and ``external_id``."""
    if not facts:
        raise ValueError("a visit report needs at least one fact")
    ordered = _sorted(facts)
    call_start, call_end = _bounds(ordered)
    intervals = connected_intervals(ordered)
    by_role: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    participants: dict[str, set[str]] = defaultdict(set)
    for (role, participant), spans in intervals.items():
        by_role[role].extend(spans)
        participants[role].add(participant)
    started: datetime | None = call_start
    ended: datetime | None = call_end
    if started is None or ended is None:
        spans = [s for v in intervals.values() for s in v]
        started = min((s for s, _ in spans), default=call_start)
        ended = max((e for _, e in spans), default=call_end)
    duration = (ended - started).total_seconds() if started and ended else None
    patient = [f for f in ordered if f.role == "patient"]
    lobby = next((f.at for f in patient if f.kind == "lobby_entered"), None)
    admitted = next(
        (f.at for f in patient if f.kind == "admitted" and lobby is not None and f.at >= lobby),
        None,
    )
    return VisitReport(
        org_id=ordered[0].org_id,
        visit_key=ordered[0].external_id,
        department=department,
        started_at=started,
        ended_at=ended,
        total_duration_s=duration,
        lobby_wait_s=(admitted - lobby).total_seconds() if lobby and admitted else None,
        connected_s={role: _union_seconds(by_role.get(role, [])) for role in ROLES},
        participants={role: len(participants.get(role, set())) for role in ROLES},
        no_show=not any(f.kind in ("connected", "admitted") for f in patient),
        fact_count=len(ordered),
    )


@dataclass(frozen=True, slots=True)
class DepartmentAggregate:
    """Aggregate over the visits of one department (``None`` = no department recorded)."""

    department: str | None
    visits: int
    no_shows: int
    no_show_rate: float
    mean_lobby_wait_s: float | None
    median_lobby_wait_s: float | None
    mean_duration_s: float | None
    mean_connected_s: dict[str, float]


@dataclass(frozen=True, slots=True)
class OrganizationReport:
    org_id: str
    since: datetime
    until: datetime
    visits: tuple[VisitReport, ...]
    overall: DepartmentAggregate
    departments: tuple[DepartmentAggregate, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "org_id": self.org_id,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "overall": asdict(self.overall),
            "departments": [asdict(d) for d in self.departments],
            "visits": [v.as_json() for v in self.visits],
        }


def _mean(values: list[float]) -> float | None:
    import statistics  # reports are computed on demand; the runtime imports this module eagerly

    return statistics.fmean(values) if values else None


def _aggregate(department: str | None, visits: Sequence[VisitReport]) -> DepartmentAggregate:
    import statistics

    waits = [v.lobby_wait_s for v in visits if v.lobby_wait_s is not None]
    durations = [v.total_duration_s for v in visits if v.total_duration_s is not None]
    no_shows = sum(1 for v in visits if v.no_show)
    return DepartmentAggregate(
        department=department,
        visits=len(visits),
        no_shows=no_shows,
        no_show_rate=no_shows / len(visits) if visits else 0.0,
        mean_lobby_wait_s=_mean(waits),
        median_lobby_wait_s=statistics.median(waits) if waits else None,
        mean_duration_s=_mean(durations),
        mean_connected_s={
            role: statistics.fmean(v.connected_s.get(role, 0.0) for v in visits) if visits else 0.0
            for role in ROLES
        },
    )


async def organization_report(
    store: AttendanceFactStore, org_id: str, *, since: datetime, until: datetime
) -> OrganizationReport:
    """Every visit of ``org_id`` with facts in ``[since, until)``, with aggregates overall and
    per department (the department is taken from the visit's facts)."""
    rows = await store.list_org_facts(org_id, since=since, until=until)
    grouped: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        grouped[row.external_id].append(row)
    visits = []
    for visit_rows in grouped.values():
        department = next((r.department for r in visit_rows if r.department), None)
        visits.append(report_visit(visit_rows, department=department))
    visits.sort(key=lambda v: (v.started_at is None, v.started_at, v.visit_key))
    by_department: dict[str | None, list[VisitReport]] = defaultdict(list)
    for visit in visits:
        by_department[visit.department].append(visit)
    departments = tuple(
        _aggregate(dept, items)
        for dept, items in sorted(by_department.items(), key=lambda kv: (kv[0] is None, kv[0]))
    )
    return OrganizationReport(
        org_id=org_id,
        since=since,
        until=until,
        visits=tuple(visits),
        overall=_aggregate(None, visits),
        departments=departments,
    )


CSV_COLUMNS = (
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
)


def reports_to_csv(visits: Iterable[VisitReport]) -> str:
    """One row per visit, fixed columns (no names or patient identifiers exist to leak)."""
    import csv

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for v in visits:
        writer.writerow(
            [
                v.org_id,
                v.visit_key,
                v.department or "",
                v.started_at.isoformat() if v.started_at else "",
                v.ended_at.isoformat() if v.ended_at else "",
                _num(v.total_duration_s),
                _num(v.lobby_wait_s),
                _num(v.connected_s.get("patient")),
                _num(v.connected_s.get("provider")),
                _num(v.connected_s.get("other")),
                "true" if v.no_show else "false",
            ]
        )
    return buffer.getvalue()


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}" if value == int(value) else f"{value:.3f}"


def reports_to_json(report: OrganizationReport | VisitReport) -> str:
    """Stable JSON (sorted keys) of an organization or visit report."""
    return json.dumps(report.as_json(), sort_keys=True)
