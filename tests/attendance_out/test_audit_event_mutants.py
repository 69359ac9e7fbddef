"""Edges of the ``AuditEvent`` writer ``nox -s mutants`` left open (threat T33: what is written
back to the EHR; docs/reference/attendance-writer.md).

One R4 ``AuditEvent`` per fact (https://hl7.org/fhir/R4/auditevent.html): built with the
writer's options, serialized under the writer's lock only when it searches before creating
(no conditional create, https://hl7.org/fhir/R4/http.html#ccreate), and the configuration
refusal an integrator reads.
"""

from __future__ import annotations

import httpx
import pytest
from attendance_out_support import FHIR_BASE, TARGET, TOKEN_CANARY, event
from pydantic import SecretStr

from teams_ehr.attendance.fhir_resources import AuditEventOptions
from teams_ehr.attendance.writers import AttendanceDelivery, AuditEventWriter, WriterStrategy
from teams_ehr.errors import ConfigurationError
from teams_ehr.sansio import run_sync
from teams_ehr.testing.fake_fhir import FakeFhirServer

KINDS_TEXT = "connected, disconnected, lobby_entered, admitted, call_started, call_ended"


def _delivery() -> AttendanceDelivery:
    return AttendanceDelivery.of(WriterStrategy.AUDIT_EVENT, [event("connected")], target=TARGET)


@pytest.mark.parametrize("kinds", [frozenset({"connect"}), frozenset()])
def test_bad_kinds_are_refused_with_the_list_of_kinds(kinds: frozenset[str]) -> None:
    with pytest.raises(ConfigurationError) as error:
        AuditEventWriter(kinds=kinds)  # type: ignore[arg-type]
    assert error.value.reason == "bad_writer"
    assert str(error.value) == f"AuditEventWriter kinds must be some of: {KINDS_TEXT}"


@pytest.mark.parametrize(("conditional_create", "locked"), [(True, False), (False, True)])
def test_only_search_then_create_takes_a_lock(conditional_create: bool, locked: bool) -> None:
    writer = AuditEventWriter(conditional_create=conditional_create)
    key = writer.lock_key(_delivery())
    assert key == (f"audit/{event('connected').fact_key}" if locked else None)


def test_the_audit_event_is_built_with_the_writers_options() -> None:
    fake = FakeFhirServer(FHIR_BASE)
    writer = AuditEventWriter(options=AuditEventOptions(site="Clinic video"))
    flow = writer.write_flow(_delivery(), fhir_base=FHIR_BASE, access_token=SecretStr(TOKEN_CANARY))
    with httpx.Client(transport=httpx.MockTransport(fake.handler)) as http:
        assert run_sync(flow, http).status == "created"
    [audit] = fake.resources("AuditEvent")
    assert audit["source"]["site"] == "Clinic video"
