"""D4: the pure FHIR builders emit valid R4 (checked with fhir.resources R4B models)."""

from __future__ import annotations

import base64
import random
from datetime import datetime

import pytest
from attendance_out_support import PATIENT_CANARY, TARGET, event, visit_events
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.documentreference import DocumentReference
from fhir.resources.R4B.encounter import Encounter
from hypothesis import given
from hypothesis import strategies as st

from teams_ehr.attendance.fhir_resources import (
    FhirTarget,
    NoteOptions,
    build_audit_event,
    build_visit_note,
    fhir_instant,
    merge_encounter,
    visit_note_key,
)

ENCOUNTER = {
    "resourceType": "Encounter",
    "id": "enc-1",
    "status": "planned",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR"},
}


def test_visit_note_is_valid_r4_with_epic_shape() -> None:
    note, identity = build_visit_note(visit_events(), TARGET)
    DocumentReference.model_validate(note)
    assert note["status"] == "current"
    assert note["docStatus"] == "final"
    assert note["context"]["encounter"] == [{"reference": "Encounter/enc-1"}]
    assert note["subject"] == {"reference": PATIENT_CANARY}
    assert note["type"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "11506-3",
        "display": "Progress note",
    }
    (content,) = note["content"]
    assert content["attachment"]["contentType"] == "text/plain"
    assert note["identifier"] == [{"system": identity.system, "value": identity.value}]
    assert note["meta"]["source"] == "urn:teams-ehr"
    assert identity.query() == f"identifier=urn:teams-ehr:attendance-note|{identity.value}"


def test_note_text_summarises_by_role_and_time_without_identifiers() -> None:
    facts = visit_events()
    note, _ = build_visit_note(facts, TARGET)
    text = base64.b64decode(note["content"][0]["attachment"]["data"]).decode()
    assert "Patient waited in the lobby: 1 min 0 s" in text
    assert "Patient connected: 2026-03-02 14:01:11 UTC to 2026-03-02 14:16:40 UTC" in text
    assert "Provider connected: 2026-03-02 14:00:05 UTC" in text
    assert "Duration: 16 min 51 s" in text
    for secret in ("p-1", "dr-1", PATIENT_CANARY, "csn-canary", *(f.fact_key for f in facts)):
        assert secret not in text


def test_note_options_doc_status_and_codes_configurable() -> None:
    options = NoteOptions(doc_status="preliminary", category=None)
    note, _ = build_visit_note(visit_events(), FhirTarget(encounter="Encounter/9"), options)
    DocumentReference.model_validate(note)
    assert note["docStatus"] == "preliminary"
    assert "category" not in note
    assert "subject" not in note


def test_no_show_note_says_so() -> None:
    facts = [event("call_started", "other", "meeting", 0), event("connected", "provider", "d", 1)]
    note, _ = build_visit_note(facts, TARGET)
    text = base64.b64decode(note["content"][0]["attachment"]["data"]).decode()
    assert "No patient connection was recorded." in text


def test_note_key_depends_on_fact_set_not_order() -> None:
    facts = visit_events()
    shuffled = list(reversed(facts))
    assert visit_note_key(facts) == visit_note_key(shuffled)
    assert visit_note_key(facts) != visit_note_key(facts[:-1])
    note_a, _ = build_visit_note(facts, TARGET)
    note_b, _ = build_visit_note(shuffled, TARGET)
    assert note_a == note_b  # I7: arrival order does not change the resource


@pytest.mark.parametrize("kind", ["connected", "disconnected"])
@pytest.mark.parametrize("role", ["patient", "provider", "other"])
def test_audit_event_is_valid_r4(kind: str, role: str) -> None:
    fact = event(kind, role, "px", 30)
    resource, identity = build_audit_event(fact, TARGET)
    AuditEvent.model_validate(resource)
    assert resource["recorded"] == "2026-03-02T14:00:30Z"
    assert resource["agent"][0]["requestor"] is False
    assert resource["source"]["observer"] == {"display": "teams-ehr"}
    assert resource["meta"]["tag"] == [{"system": identity.system, "code": fact.fact_key}]
    assert identity.query() == f"_tag=urn:teams-ehr:attendance-fact|{fact.fact_key}"
    assert identity.matches(resource)
    assert ("who" in resource["agent"][0]) == (role == "patient")
    assert resource["subtype"][0]["code"] == kind


def test_encounter_merge_is_valid_and_moves_status_forward() -> None:
    merged = merge_encounter(ENCOUNTER, visit_events())
    assert merged is not None
    Encounter.model_validate(merged)
    assert merged["status"] == "finished"
    periods = {p["extension"][0]["valueString"]: p["period"] for p in merged["participant"]}
    assert periods["p-1"] == {"start": "2026-03-02T14:01:11Z", "end": "2026-03-02T14:16:40Z"}
    assert merge_encounter(merged, visit_events()) is None  # idempotent: nothing to write
    finished = {**ENCOUNTER, "status": "finished"}
    again = merge_encounter(finished, [event("call_started", "other", "meeting", 0)])
    assert again is None  # never moves a finished encounter back


def test_leave_before_join_gives_a_valid_period() -> None:
    merged = merge_encounter(
        ENCOUNTER,
        [event("disconnected", "patient", "p", 50), event("connected", "patient", "p", 90)],
    )
    assert merged is not None
    Encounter.model_validate(merged)
    period = merged["participant"][0]["period"]
    assert period == {"start": "2026-03-02T14:00:50Z", "end": "2026-03-02T14:00:50Z"}


@given(st.permutations(visit_events()), st.integers(min_value=1, max_value=4))
def test_encounter_merge_commutative_and_idempotent(order: list, chunks: int) -> None:
    """I7: any arrival order and batching gives the same encounter."""
    expected = merge_encounter(ENCOUNTER, visit_events())
    current = ENCOUNTER
    size = max(1, len(order) // chunks)
    for start in range(0, len(order), size):
        current = merge_encounter(current, order[start : start + size]) or current
        current = merge_encounter(current, order[start : start + size]) or current
    assert current == expected
    Encounter.model_validate(current)


@given(st.lists(st.sampled_from(["connected", "disconnected"]), min_size=1, max_size=8))
def test_random_fact_sequences_always_build_valid_resources(kinds: list[str]) -> None:
    rng = random.Random(len(kinds))
    facts = [
        event(k, rng.choice(["patient", "provider"]), f"p{i % 2}", i * 7)
        for i, k in enumerate(kinds)
    ]
    DocumentReference.model_validate(build_visit_note(facts, TARGET)[0])
    merged = merge_encounter(ENCOUNTER, facts)
    assert merged is not None
    Encounter.model_validate(merged)


def test_fhir_instant_requires_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        fhir_instant(datetime(2026, 1, 1))
