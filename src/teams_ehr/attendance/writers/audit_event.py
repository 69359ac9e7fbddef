"""The ``AuditEvent`` strategy: one generic FHIR R4 ``AuditEvent`` per connect or disconnect.

R4 ``AuditEvent`` has no ``identifier``, so each event is tagged with the fact's key
(``meta.tag``) and created with conditional create on ``_tag`` — or, on servers without it,
search-then-create under the writer's lock (https://hl7.org/fhir/R4/auditevent.html,
https://hl7.org/fhir/R4/http.html#ccreate).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from pydantic import SecretStr

from teams_ehr._types import Clock, Flow, utc_now
from teams_ehr.attendance.events import AttendanceKind
from teams_ehr.attendance.fhir_resources import AuditEventOptions, build_audit_event
from teams_ehr.attendance.writers.base import FhirWriter
from teams_ehr.attendance.writers.fhir_http import create_once_flow
from teams_ehr.attendance.writers.models import (
    KINDS,
    AttendanceDelivery,
    WriteOutcome,
    WriterStrategy,
)
from teams_ehr.errors import ConfigurationError

__all__ = ["AuditEventWriter"]


@dataclass(frozen=True)
class AuditEventWriter(FhirWriter):
    """One ``AuditEvent`` per fact of ``kinds`` (default: connect and disconnect); other kinds
    are ``skipped``. ``conditional_create=False`` for servers without ``If-None-Exist``."""

    options: AuditEventOptions = field(default_factory=AuditEventOptions)
    conditional_create: bool = True
    kinds: frozenset[AttendanceKind] = frozenset({"connected", "disconnected"})
    clock: Clock = utc_now
    strategy: ClassVar[WriterStrategy] = WriterStrategy.AUDIT_EVENT

    def __post_init__(self) -> None:
        unknown = sorted(str(kind) for kind in self.kinds if kind not in KINDS)
        if unknown or not self.kinds:
            raise ConfigurationError(
                f"AuditEventWriter kinds must be some of: {', '.join(KINDS)}", reason="bad_writer"
            )

    def accepts(self, kind: str) -> bool:
        return kind in self.kinds

    def lock_key(self, delivery: AttendanceDelivery) -> str | None:
        return None if self.conditional_create else f"audit/{delivery.facts[0].fact_key}"

    def _flow(
        self, delivery: AttendanceDelivery, *, fhir_base: str, access_token: SecretStr
    ) -> Flow[WriteOutcome]:
        resource, identity = build_audit_event(delivery.facts[0], delivery.target, self.options)
        return create_once_flow(
            fhir_base,
            access_token,
            resource,
            identity,
            conditional_create=self.conditional_create,
            clock=self.clock,
        )
