"""An organization's write-back configuration, and the writers it builds.

``conditional_create`` is set from the server's CapabilityStatement
(``rest.resource.conditionalCreate``, https://hl7.org/fhir/R4/capabilitystatement.html) checked
at approval; unset, each strategy keeps its default (notes: search-then-create, as Epic offers
no conditional create; audit events: conditional create).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator

from teams_ehr._types import Clock, utc_now
from teams_ehr.attendance.fhir_resources import AuditEventOptions, EncounterOptions, NoteOptions
from teams_ehr.attendance.writers.audit_event import AuditEventWriter
from teams_ehr.attendance.writers.base import AttendanceWriter
from teams_ehr.attendance.writers.clinical_note import EpicClinicalNoteWriter
from teams_ehr.attendance.writers.encounter import EncounterParticipantWriter
from teams_ehr.attendance.writers.epic_telehealth import (
    EpicTelehealthStatusWriter,
    TelehealthStatusOptions,
)
from teams_ehr.attendance.writers.models import WriterStrategy

__all__ = ["WriteBackConfig"]


class WriteBackConfig(BaseModel):
    """Which strategies an organization uses, and their settings."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)
    strategies: tuple[WriterStrategy, ...] = (WriterStrategy.EPIC_CLINICAL_NOTE,)
    conditional_create: bool | None = None
    note: NoteOptions = NoteOptions()
    audit_event: AuditEventOptions = AuditEventOptions()
    encounter: EncounterOptions = EncounterOptions()
    telehealth: TelehealthStatusOptions = TelehealthStatusOptions()

    @field_validator("strategies")
    @classmethod
    def _distinct(cls, value: tuple[WriterStrategy, ...]) -> tuple[WriterStrategy, ...]:
        if not value or len(set(value)) != len(value):
            raise ValueError("strategies must be distinct and not empty")
        return value

    def build_writers(self, *, clock: Clock = utc_now) -> dict[WriterStrategy, AttendanceWriter]:
        """One writer per configured strategy."""
        cc = self.conditional_create
        made: dict[WriterStrategy, AttendanceWriter] = {
            WriterStrategy.EPIC_CLINICAL_NOTE: EpicClinicalNoteWriter(
                self.note, conditional_create=bool(cc), clock=clock
            ),
            WriterStrategy.AUDIT_EVENT: AuditEventWriter(
                self.audit_event, conditional_create=cc is not False, clock=clock
            ),
            WriterStrategy.ENCOUNTER_PARTICIPANT: EncounterParticipantWriter(
                self.encounter, clock=clock
            ),
            WriterStrategy.EPIC_TELEHEALTH_STATUS: EpicTelehealthStatusWriter(
                self.telehealth, clock=clock
            ),
        }
        return {strategy: made[strategy] for strategy in self.strategies}
