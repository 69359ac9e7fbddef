"""The Encounter strategy: participant periods and status merged into the visit's ``Encounter``.

Read → merge (:func:`~teams_ehr.attendance.fhir_resources.merge_encounter`, commutative and
idempotent) → ``PUT`` with ``If-Match`` (version-aware update,
https://hl7.org/fhir/R4/http.html#concurrency). Only for servers that allow ``Encounter``
update (Epic does not). A 412 version conflict re-reads and merges again, up to
``max_conflicts`` times, then retries later (``FhirUnavailableError``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from pydantic import SecretStr

from teams_ehr._types import Clock, Flow, utc_now
from teams_ehr.attendance.fhir_resources import EncounterOptions, merge_encounter
from teams_ehr.attendance.writers.base import FhirWriter
from teams_ehr.attendance.writers.fhir_http import fhir_error_for, fhir_request, response_json
from teams_ehr.attendance.writers.models import AttendanceDelivery, WriteOutcome, WriterStrategy
from teams_ehr.errors import ConfigurationError, FhirError, FhirUnavailableError

__all__ = ["EncounterParticipantWriter"]

_KINDS = frozenset({"connected", "disconnected", "call_started", "call_ended"})


def _id_of(resource: dict[str, object]) -> str | None:
    value = resource.get("id")
    return str(value) if value else None


@dataclass(frozen=True)
class EncounterParticipantWriter(FhirWriter):
    """Merge connect/disconnect (participant periods) and call start/end (status) facts."""

    options: EncounterOptions = field(default_factory=EncounterOptions)
    max_conflicts: int = 3
    clock: Clock = utc_now
    strategy: ClassVar[WriterStrategy] = WriterStrategy.ENCOUNTER_PARTICIPANT

    def accepts(self, kind: str) -> bool:
        return kind in _KINDS

    def lock_key(self, delivery: AttendanceDelivery) -> str | None:
        return f"encounter/{delivery.org_id}/{delivery.external_id}"

    def _flow(
        self, delivery: AttendanceDelivery, *, fhir_base: str, access_token: SecretStr
    ) -> Flow[WriteOutcome]:
        reference = delivery.target.encounter
        if not reference or not reference.startswith("Encounter/"):
            raise ConfigurationError("an Encounter reference is needed", reason="missing_target")
        url = f"{fhir_base.rstrip('/')}/{reference}"
        for _ in range(self.max_conflicts + 1):
            response = yield fhir_request("GET", url, access_token)
            if not response.is_success:
                raise fhir_error_for(response, "read Encounter", self.clock())
            current = response_json(response)
            if not isinstance(current, dict) or current.get("resourceType") != "Encounter":
                raise FhirError("FHIR read Encounter answered another type", reason="fhir_bad_read")
            merged = merge_encounter(current, delivery.facts, self.options)
            if merged is None:
                return WriteOutcome("unchanged", "Encounter", _id_of(current))
            headers = {}
            etag = response.headers.get("etag")
            version = (current.get("meta") or {}).get("versionId")
            if etag or version:
                headers["If-Match"] = etag or f'W/"{version}"'
            put = yield fhir_request("PUT", url, access_token, body=merged, headers=headers)
            if put.is_success:
                return WriteOutcome("updated", "Encounter", _id_of(current))
            if put.status_code != 412:
                raise fhir_error_for(put, "update Encounter", self.clock())
        raise FhirUnavailableError("FHIR update Encounter kept conflicting", status_code=412)
