"""Pure mapping of attendance facts to FHIR R4 JSON (requirement D4; threat T33; invariant I3).

No I/O here: builders take facts (role codes, kinds, UTC times, opaque keys) and a
:class:`FhirTarget` and return resource dictionaries. Every resource carries ``meta.source`` and
an identity derived from the fact, so a retried write is found instead of duplicated:

* ``DocumentReference`` (Epic ``DocumentReference.Create (Clinical Notes)``,
  https://fhir.epic.com/): one ``text/plain`` base64 attachment summarising the visit by role
  and time (no names), ``context.encounter``, ``status=current``, ``docStatus`` configurable,
  LOINC type. Identity: ``identifier`` = (``note_system``, key of the visit and its fact set).
* ``AuditEvent`` per connect/disconnect (R4 required: ``type``, ``recorded``, ``agent`` with
  ``requestor``, ``source.observer``). R4 ``AuditEvent`` has no ``identifier`` element, so the
  identity is a ``meta.tag`` (searchable everywhere with ``_tag``) and repeated as
  ``entity.what.identifier``.
* ``Encounter``: participant periods and status merged into the current resource, commutative and
  idempotent (invariant I7): one participant entry per opaque participant key, ``period.start``
  the earliest connect or disconnect (a leave before its join is accepted), ``period.end`` the
  latest disconnect (so ``start ≤ end`` always holds); status only moves forward
  (``planned/arrived/triaged → in-progress → finished``).

FHIR R4: DocumentReference https://hl7.org/fhir/R4/documentreference.html, AuditEvent
https://hl7.org/fhir/R4/auditevent.html, Encounter https://hl7.org/fhir/R4/encounter.html.
"""

from __future__ import annotations

import base64
import copy
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from teams_ehr._types import JsonObject
from teams_ehr.attendance.reports import AttendanceFactLike, connected_intervals, report_visit

__all__ = [
    "AuditEventOptions",
    "Coding",
    "EncounterOptions",
    "FhirTarget",
    "NoteOptions",
    "ResourceIdentity",
    "build_audit_event",
    "build_visit_note",
    "fhir_instant",
    "merge_encounter",
    "note_text",
    "visit_note_key",
]

SOURCE_URI = "urn:teams-ehr"
FACT_SYSTEM = "urn:teams-ehr:attendance-fact"
NOTE_SYSTEM = "urn:teams-ehr:attendance-note"
ROLE_SYSTEM = "urn:teams-ehr:attendance-role"
PARTICIPANT_EXTENSION = "urn:teams-ehr:participant-key"
V3_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"

_FROZEN = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class Coding(BaseModel):
    model_config = _FROZEN
    system: str
    code: str
    display: str | None = None

    def as_json(self) -> JsonObject:
        return self.model_dump(exclude_none=True)


class FhirTarget(BaseModel):
    """Where a visit's attendance is written: FHIR references (``Encounter/123``) and, for the
    Epic telehealth adapter, the conference id (``sessionId=%CSN%``). PHI-bearing: kept only in
    the encrypted outbox payload, never logged."""

    model_config = _FROZEN
    encounter: str | None = None
    patient: str | None = None
    conference_id: str | None = None


class NoteOptions(BaseModel):
    """Clinical note settings; LOINC 11506-3 *Progress note* and US Core ``clinical-note``."""

    model_config = _FROZEN
    identifier_system: str = NOTE_SYSTEM
    source_uri: str = SOURCE_URI
    doc_status: Literal["preliminary", "final", "amended"] = "final"
    type: Coding = Coding(system="http://loinc.org", code="11506-3", display="Progress note")
    category: Coding | None = Coding(
        system="http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
        code="clinical-note",
        display="Clinical Note",
    )
    title: str = "Virtual visit attendance (Microsoft Teams)"


class AuditEventOptions(BaseModel):
    model_config = _FROZEN
    tag_system: str = FACT_SYSTEM
    source_uri: str = SOURCE_URI
    type: Coding = Coding(system="urn:teams-ehr:audit-event-type", code="virtual-visit-attendance")
    site: str = "Microsoft Teams"
    observer_display: str = "teams-ehr"


class EncounterOptions(BaseModel):
    model_config = _FROZEN
    participant_extension: str = PARTICIPANT_EXTENSION
    update_status: bool = True
    source_uri: str = SOURCE_URI


@dataclass(frozen=True, slots=True)
class ResourceIdentity:
    """How a written resource is found again: an ``identifier`` or a ``meta.tag``."""

    resource_type: str
    system: str
    value: str
    via: Literal["identifier", "tag"] = "identifier"

    def query(self) -> str:
        """The search (and ``If-None-Exist``) query string, e.g. ``identifier=sys|val``."""
        name = "identifier" if self.via == "identifier" else "_tag"
        return f"{name}={self.system}|{self.value}"

    def matches(self, resource: JsonObject) -> bool:
        """Client-side check of a search hit (servers may ignore unknown search parameters)."""
        if resource.get("resourceType") != self.resource_type:
            return False
        if self.via == "identifier":
            items = resource.get("identifier")
            return isinstance(items, list) and any(
                isinstance(i, dict)
                and i.get("system") == self.system
                and i.get("value") == self.value
                for i in items
            )
        meta = resource.get("meta")
        tags = meta.get("tag") if isinstance(meta, dict) else None
        return isinstance(tags, list) and any(
            isinstance(t, dict) and t.get("system") == self.system and t.get("code") == self.value
            for t in tags
        )


def fhir_instant(at: datetime) -> str:
    """A FHIR ``instant``: UTC with seconds and offset (``2026-01-02T03:04:05Z``)."""
    if at.tzinfo is None:
        raise ValueError("attendance times must be timezone-aware")
    text = at.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


def _human(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes} min {secs} s" if hours else f"{minutes} min {secs} s"


_ROLE_LABEL = {"provider": "Provider", "patient": "Patient", "other": "Other participant"}


def note_text(facts: Sequence[AttendanceFactLike]) -> str:
    """The note body: times per role and participant ordinal, never names or identifiers."""
    report = report_visit(facts)
    intervals = connected_intervals(facts)
    lines = [NoteOptions().title, ""]
    if report.started_at:
        lines.append(f"Visit start: {_human(report.started_at)}")
    if report.ended_at:
        lines.append(f"Visit end: {_human(report.ended_at)}")
    if report.total_duration_s is not None:
        lines.append(f"Duration: {_duration(report.total_duration_s)}")
    if report.lobby_wait_s is not None:
        lines.append(f"Patient waited in the lobby: {_duration(report.lobby_wait_s)}")
    ordinals: dict[str, int] = {}
    for (role, _participant), spans in sorted(intervals.items(), key=lambda kv: kv[1][0]):
        ordinals[role] = ordinals.get(role, 0) + 1
        label = _ROLE_LABEL.get(role, "Other participant")
        if report.participants.get(role, 0) > 1:
            label = f"{label} {ordinals[role]}"
        for start, end in spans:
            span = f"{_human(start)} to {_human(end)} ({_duration((end - start).total_seconds())})"
            lines.append(f"{label} connected: {span}")
    if report.no_show:
        lines.append("No patient connection was recorded.")
    for role in ("patient", "provider", "other"):
        if report.participants.get(role):
            total = _duration(report.connected_s[role])
            lines.append(f"Total time connected ({_ROLE_LABEL[role].lower()}): {total}")
    lines.append(f"Recorded from {report.fact_count} attendance events by teams-ehr.")
    return "\n".join(lines) + "\n"


def visit_note_key(facts: Sequence[AttendanceFactLike]) -> str:
    """Identifier value of a visit note: a hash of the visit and its exact fact set, so the
    same facts always give the same note, and a reconciled, larger set gives a new one."""
    first = facts[0]
    digest = hashlib.sha256()
    digest.update(f"{first.org_id}\x00{first.external_id}".encode())
    for key in sorted({f.fact_key for f in facts}):
        digest.update(b"\x00" + key.encode())
    return f"note-{digest.hexdigest()[:40]}"


def build_visit_note(
    facts: Sequence[AttendanceFactLike], target: FhirTarget, options: NoteOptions | None = None
) -> tuple[JsonObject, ResourceIdentity]:
    """An Epic-compatible clinical note ``DocumentReference`` and its identity."""
    if not facts:
        raise ValueError("a visit note needs at least one fact")
    opts = options or NoteOptions()
    identity = ResourceIdentity("DocumentReference", opts.identifier_system, visit_note_key(facts))
    text = note_text(facts)
    report = report_visit(facts)
    resource: JsonObject = {
        "resourceType": "DocumentReference",
        "meta": {"source": opts.source_uri},
        "identifier": [{"system": identity.system, "value": identity.value}],
        "status": "current",
        "docStatus": opts.doc_status,
        "type": {"coding": [opts.type.as_json()], "text": opts.title},
        "date": fhir_instant(max(f.at for f in facts)),
        "description": opts.title,
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain",
                    "data": base64.b64encode(text.encode()).decode("ascii"),
                    "title": opts.title,
                }
            }
        ],
    }
    if opts.category is not None:
        resource["category"] = [{"coding": [opts.category.as_json()]}]
    if target.patient:
        resource["subject"] = {"reference": target.patient}
    context: JsonObject = {}
    if target.encounter:
        context["encounter"] = [{"reference": target.encounter}]
    if report.started_at and report.ended_at:
        context["period"] = {
            "start": fhir_instant(report.started_at),
            "end": fhir_instant(report.ended_at),
        }
    if context:
        resource["context"] = context
    return resource, identity


def _role_codings(role: str) -> list[JsonObject]:
    codings = [{"system": ROLE_SYSTEM, "code": role}]
    if role == "provider":
        codings.insert(0, {"system": V3_PARTICIPATION, "code": "ATND", "display": "attender"})
    return codings


def build_audit_event(
    fact: AttendanceFactLike, target: FhirTarget, options: AuditEventOptions | None = None
) -> tuple[JsonObject, ResourceIdentity]:
    """One ``AuditEvent`` for a ``connected``/``disconnected`` (or other) fact."""
    opts = options or AuditEventOptions()
    identity = ResourceIdentity("AuditEvent", opts.tag_system, fact.fact_key, via="tag")
    at = fhir_instant(fact.at)
    agent: JsonObject = {
        "type": {"coding": _role_codings(str(fact.role))},
        "altId": fact.participant_key,
        "requestor": False,
    }
    if fact.role == "patient" and target.patient:
        agent["who"] = {"reference": target.patient}
    entity: list[JsonObject] = [
        {"what": {"identifier": {"system": identity.system, "value": identity.value}}}
    ]
    if target.encounter:
        entity.append({"what": {"reference": target.encounter}})
    resource: JsonObject = {
        "resourceType": "AuditEvent",
        "meta": {
            "source": opts.source_uri,
            "tag": [{"system": identity.system, "code": identity.value}],
        },
        "type": opts.type.as_json(),
        "subtype": [{"system": ROLE_SYSTEM.replace("role", "kind"), "code": str(fact.kind)}],
        "action": "E",
        "period": {"start": at, "end": at},
        "recorded": at,
        "outcome": "0",
        "agent": [agent],
        "source": {
            "site": opts.site,
            "observer": {"display": opts.observer_display},
            "type": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "4",
                    "display": "Application Server",
                }
            ],
        },
        "entity": entity,
    }
    return resource, identity


_STATUS_RANK = {"planned": 0, "arrived": 1, "triaged": 2, "in-progress": 3, "finished": 4}


def _entry_key(entry: JsonObject, url: str) -> str | None:
    for ext in entry.get("extension") or []:
        if ext.get("url") == url and isinstance(ext.get("valueString"), str):
            return str(ext["valueString"])
    return None


def _participant_entry(entries: list[JsonObject], url: str, key: str) -> JsonObject | None:
    return next((e for e in entries if _entry_key(e, url) == key), None)


def merge_encounter(
    encounter: JsonObject,
    facts: Sequence[AttendanceFactLike],
    options: EncounterOptions | None = None,
) -> JsonObject | None:
    """The encounter with ``facts`` merged in, or ``None`` if nothing changes (no write).

    Merging is commutative and idempotent, so retries and reordering give one result
    (invariant I7)."""
    opts = options or EncounterOptions()
    result = copy.deepcopy(encounter)
    participants: list[JsonObject] = result.setdefault("participant", [])
    for fact in facts:
        if fact.kind in ("connected", "disconnected"):
            entry = _participant_entry(
                participants, opts.participant_extension, fact.participant_key
            )
            if entry is None:
                entry = {
                    "extension": [
                        {"url": opts.participant_extension, "valueString": fact.participant_key}
                    ],
                    "type": [{"coding": _role_codings(str(fact.role))}],
                }
                participants.append(entry)
            period = entry.setdefault("period", {})
            at = fhir_instant(fact.at)
            if "start" not in period or _parse(at) < _parse(period["start"]):
                period["start"] = at
            if fact.kind == "disconnected" and (
                "end" not in period or _parse(at) > _parse(period["end"])
            ):
                period["end"] = at
        elif opts.update_status and fact.kind in ("call_started", "call_ended"):
            wanted = "in-progress" if fact.kind == "call_started" else "finished"
            rank = _STATUS_RANK.get(str(result.get("status")))
            if rank is not None and rank < _STATUS_RANK[wanted]:
                result["status"] = wanted
    if participants:  # ours sorted by key after foreign entries: order-free (invariant I7)
        ours = [e for e in participants if _entry_key(e, opts.participant_extension) is not None]
        foreign = [e for e in participants if _entry_key(e, opts.participant_extension) is None]
        ours.sort(key=lambda e: _entry_key(e, opts.participant_extension) or "")
        result["participant"] = foreign + ours
    else:
        del result["participant"]
    return None if result == encounter else result


def _parse(instant: str) -> datetime:
    return datetime.fromisoformat(instant.replace("Z", "+00:00"))
