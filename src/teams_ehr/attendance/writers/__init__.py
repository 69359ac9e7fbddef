"""The FHIR attendance writer: one call per fact, strategies chosen per organization.

Everything an integrator needs is importable from here::

    from teams_ehr.attendance.writers import AttendanceFact, AuditEventWriter, FhirTarget

    outcome = await AuditEventWriter().write(
        fact, target=target, http=client, fhir_base=base, access_token=token
    )

Modules: :mod:`.models` (facts, deliveries, outcomes, strategies), :mod:`.base` (the protocol and
``write``/``write_sync``), :mod:`.fhir_http` (FHIR REST helpers), one module per strategy
(:mod:`.clinical_note`, :mod:`.audit_event`, :mod:`.encounter`, :mod:`.epic_telehealth`) and
:mod:`.config` (an organization's write-back settings). Reference:
``docs/reference/attendance-writer.md``.
"""

from __future__ import annotations

from teams_ehr.attendance.events import AttendanceKind, Role
from teams_ehr.attendance.fhir_resources import (
    AuditEventOptions,
    EncounterOptions,
    FhirTarget,
    NoteOptions,
)
from teams_ehr.attendance.writers.audit_event import AuditEventWriter
from teams_ehr.attendance.writers.base import AttendanceWriter, FhirWriter
from teams_ehr.attendance.writers.clinical_note import EpicClinicalNoteWriter
from teams_ehr.attendance.writers.config import WriteBackConfig
from teams_ehr.attendance.writers.encounter import EncounterParticipantWriter
from teams_ehr.attendance.writers.epic_telehealth import (
    EpicTelehealthStatusWriter,
    TelehealthStatusOptions,
)
from teams_ehr.attendance.writers.models import (
    KINDS,
    ROLES,
    AttendanceDelivery,
    AttendanceFact,
    WriteOutcome,
    WriterStrategy,
)

__all__ = [
    "KINDS",
    "ROLES",
    "AttendanceDelivery",
    "AttendanceFact",
    "AttendanceKind",
    "AttendanceWriter",
    "AuditEventOptions",
    "AuditEventWriter",
    "EncounterOptions",
    "EncounterParticipantWriter",
    "EpicClinicalNoteWriter",
    "EpicTelehealthStatusWriter",
    "FhirTarget",
    "FhirWriter",
    "NoteOptions",
    "Role",
    "TelehealthStatusOptions",
    "WriteBackConfig",
    "WriteOutcome",
    "WriterStrategy",
]
