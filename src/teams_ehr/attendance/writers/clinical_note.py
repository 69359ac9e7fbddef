"""The Epic clinical note strategy: one ``DocumentReference`` per visit (per-visit strategy).

The note is Epic's ``DocumentReference.Create (Clinical Notes)`` shape (text/plain attachment,
``context.encounter``; https://fhir.epic.com/, https://hl7.org/fhir/R4/documentreference.html).
Epic offers neither conditional create nor server de-duplication for notes, so the default is
search-then-create under the writer's lock: search by ``encounter`` (and ``patient``) and match
our identifier client-side; ``search_by="identifier"`` for servers that index it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from pydantic import SecretStr

from teams_ehr._types import Clock, Flow, utc_now
from teams_ehr.attendance.fhir_resources import NoteOptions, build_visit_note
from teams_ehr.attendance.writers.base import FhirWriter
from teams_ehr.attendance.writers.fhir_http import create_once_flow
from teams_ehr.attendance.writers.models import AttendanceDelivery, WriteOutcome, WriterStrategy
from teams_ehr.errors import ConfigurationError

__all__ = ["EpicClinicalNoteWriter"]


@dataclass(frozen=True)
class EpicClinicalNoteWriter(FhirWriter):
    """One clinical note over a visit's facts; the same fact set is always the same note."""

    options: NoteOptions = field(default_factory=NoteOptions)
    conditional_create: bool = False
    search_by: Literal["identifier", "encounter"] = "encounter"
    clock: Clock = utc_now
    strategy: ClassVar[WriterStrategy] = WriterStrategy.EPIC_CLINICAL_NOTE

    def accepts(self, kind: str) -> bool:
        return True

    def lock_key(self, delivery: AttendanceDelivery) -> str | None:
        return f"note/{delivery.org_id}/{delivery.external_id}"

    def _flow(
        self, delivery: AttendanceDelivery, *, fhir_base: str, access_token: SecretStr
    ) -> Flow[WriteOutcome]:
        target = delivery.target
        if not target.encounter:
            raise ConfigurationError("a clinical note needs an encounter", reason="missing_target")
        resource, identity = build_visit_note(delivery.facts, target, self.options)
        query = None
        if self.search_by == "encounter":
            query = f"encounter={target.encounter}"
            if target.patient:
                query += f"&patient={target.patient}"
        return create_once_flow(
            fhir_base,
            access_token,
            resource,
            identity,
            conditional_create=self.conditional_create,
            search_query=query,
            clock=self.clock,
        )
