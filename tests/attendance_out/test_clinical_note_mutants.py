"""Edges of the Epic clinical note writer ``nox -s mutants`` left open (threat T33: what is
written back to the EHR; docs/reference/attendance-writer.md).

One ``DocumentReference`` per visit (https://hl7.org/fhir/R4/documentreference.html): the
search that finds an earlier note (by ``encounter`` and ``patient``, or by ``identifier``),
conditional create when configured (https://hl7.org/fhir/R4/http.html#ccreate), the options
the note is built with, the writer's clock for ``Retry-After``, and the refusal an integrator
reads when the encounter is missing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from attendance_out_support import FHIR_BASE, T0, TARGET, TOKEN_CANARY, FakeClock, visit_events
from pydantic import SecretStr

from teams_ehr.attendance.fhir_resources import NOTE_SYSTEM, FhirTarget, NoteOptions
from teams_ehr.attendance.writers import (
    AttendanceDelivery,
    EpicClinicalNoteWriter,
    WriteOutcome,
    WriterStrategy,
)
from teams_ehr.errors import ConfigurationError, FhirUnavailableError
from teams_ehr.sansio import run_sync
from teams_ehr.testing.fake_fhir import FakeFhirServer

TOKEN = SecretStr(TOKEN_CANARY)
DOCS = "/interconnect-prd/api/FHIR/R4/DocumentReference"


class Recorder:
    """FakeFhirServer behind a transport that keeps every request."""

    def __init__(self, **fake: Any) -> None:
        self.fake = FakeFhirServer(FHIR_BASE, **fake)
        self.requests: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.fake.handler(request)

    def write(self, writer: EpicClinicalNoteWriter, target: FhirTarget = TARGET) -> WriteOutcome:
        delivery = AttendanceDelivery.of(
            WriterStrategy.EPIC_CLINICAL_NOTE, visit_events(), target=target
        )
        flow = writer.write_flow(delivery, fhir_base=FHIR_BASE, access_token=TOKEN)
        with httpx.Client(transport=httpx.MockTransport(self.handler)) as http:
            return run_sync(flow, http)

    def searches(self) -> list[tuple[str, list[tuple[str, str]]]]:
        return [
            (r.url.path, r.url.params.multi_items()) for r in self.requests if r.method == "GET"
        ]


def test_the_default_search_is_by_encounter_and_patient() -> None:
    server = Recorder(supports_conditional_create=False)
    assert server.write(EpicClinicalNoteWriter()).status == "created"
    assert server.searches() == [
        (DOCS, [("encounter", "Encounter/enc-1"), ("patient", "Patient/pat-canary-77")])
    ]
    assert server.write(EpicClinicalNoteWriter()).status == "existing"


def test_without_a_patient_the_search_is_by_encounter_alone() -> None:
    server = Recorder(supports_conditional_create=False)
    server.write(EpicClinicalNoteWriter(), FhirTarget(encounter="Encounter/enc-1"))
    assert server.searches() == [(DOCS, [("encounter", "Encounter/enc-1")])]


def test_search_by_identifier_uses_the_notes_identifier() -> None:
    server = Recorder(supports_conditional_create=False)
    server.write(EpicClinicalNoteWriter(search_by="identifier"))
    [(path, params)] = server.searches()
    assert path == DOCS
    assert [name for name, _ in params] == ["identifier"]
    assert params[0][1].startswith(f"{NOTE_SYSTEM}|note-")


def test_conditional_create_sends_if_none_exist_and_no_search() -> None:
    server = Recorder()
    assert server.write(EpicClinicalNoteWriter(conditional_create=True)).status == "created"
    [post] = server.requests
    assert post.method == "POST"
    assert post.headers["if-none-exist"].startswith("identifier=")


def test_the_note_is_built_with_the_writers_options() -> None:
    server = Recorder(supports_conditional_create=False)
    server.write(EpicClinicalNoteWriter(options=NoteOptions(doc_status="preliminary")))
    [note] = server.fake.resources("DocumentReference")
    assert note["docStatus"] == "preliminary"


def test_retry_after_is_counted_from_the_writers_clock() -> None:
    server = Recorder(supports_conditional_create=False)
    server.fake.fail_next(503, retry_after=30)
    with pytest.raises(FhirUnavailableError) as error:
        server.write(EpicClinicalNoteWriter(clock=FakeClock()))
    assert error.value.retry_at == T0 + timedelta(seconds=30)


def test_a_missing_encounter_is_refused_with_its_reason_and_text() -> None:
    with pytest.raises(ConfigurationError) as error:
        Recorder().write(EpicClinicalNoteWriter(), FhirTarget(patient="Patient/p"))
    assert (error.value.reason, str(error.value)) == (
        "missing_target",
        "a clinical note needs an encounter",
    )


def test_the_per_visit_note_accepts_every_kind() -> None:
    writer = EpicClinicalNoteWriter()
    assert all(writer.accepts(kind) for kind in ("connected", "lobby_entered", "call_ended"))
