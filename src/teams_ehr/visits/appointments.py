"""Which appointment a launch is about, and when it is: the visit key and its time window.

The visit key is the FHIR Appointment id: Epic returns it as the ``appointment`` launch-context
parameter; SMART App Launch 2.x EHRs may put ``Appointment/<id>`` in ``fhirContext``
(https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html). A launch without an
appointment (an unscheduled encounter) uses ``Encounter/<id>`` as the key and a window from now.
Only the times are read from the Appointment (one FHIR read with the launch's token); nothing of
it is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from teams_ehr.errors import FhirError, FhirUnavailableError, UsageError
from teams_ehr.sansio import Flow, with_max_bytes
from teams_ehr.smart.context import LaunchContext

__all__ = ["VisitSlot", "appointment_slot_flow", "visit_key"]

UNSCHEDULED_LENGTH = timedelta(minutes=60)


@dataclass(frozen=True, slots=True)
class VisitSlot:
    """The visit key (``Appointment/<id>`` or ``Encounter/<id>``) and its time window."""

    key: str
    start: datetime
    end: datetime


class _AppointmentTimes(BaseModel):
    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True)

    resource_type: str = Field(alias="resourceType")
    start: AwareDatetime | None = None
    end: AwareDatetime | None = None


def visit_key(context: LaunchContext) -> str | None:
    """``Appointment/<id>`` from the context, else ``Encounter/<id>``, else ``None``."""
    if context.appointment:
        return f"Appointment/{context.appointment}"
    for item in context.fhir_context:
        reference = item.reference or ""
        if reference.startswith("Appointment/") and "/" not in reference[12:]:
            return reference
    if context.encounter:
        return f"Encounter/{context.encounter}"
    return None


def appointment_slot_flow(
    fhir_base: str, context: LaunchContext, access_token: str, *, now: datetime
) -> Flow[VisitSlot]:
    """Read the appointment's start and end with the launch's access token (one GET)."""
    key = visit_key(context)
    if key is None:
        raise UsageError("the launch named no appointment or encounter", reason="no_visit")
    if key.startswith("Encounter/"):
        return VisitSlot(key, now, now + UNSCHEDULED_LENGTH)
    request = httpx.Request(
        "GET",
        f"{fhir_base}/{key}",
        headers={"Authorization": f"Bearer {access_token}", "Accept": "application/fhir+json"},
    )
    response = yield with_max_bytes(request, 262_144)
    if response.status_code in (429, 500, 502, 503, 504):
        raise FhirUnavailableError("FHIR server unavailable", status_code=response.status_code)
    if response.status_code != 200:
        raise FhirError("appointment could not be read", status_code=response.status_code)
    try:
        appointment = _AppointmentTimes.model_validate_json(response.content)
    except ValidationError:
        raise FhirError("appointment is not valid FHIR", reason="fhir_invalid") from None
    if appointment.resource_type != "Appointment":
        raise FhirError("not an Appointment resource", reason="fhir_invalid")
    start = appointment.start or now
    try:
        end = appointment.end or start + UNSCHEDULED_LENGTH
        if end <= start:
            end = start + UNSCHEDULED_LENGTH
    except OverflowError:  # a start within an hour of year 9999
        raise FhirError("appointment times are out of range", reason="fhir_invalid") from None
    return VisitSlot(key, start, end)
