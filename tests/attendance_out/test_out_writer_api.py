"""The public writer primitive: ``write`` / ``write_sync``, typed facts, strategy checks.

Everything here goes through ``teams_ehr.attendance.writers`` only, as an integrator would; the
strategy modules are each exercised through both drivers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import anyio
import httpx
import pytest
from attendance_out_support import (
    FHIR_BASE,
    ORG,
    PATIENT_CANARY,
    T0,
    TARGET,
    TOKEN_CANARY,
    FakeClock,
    MemoryStore,
    Tokens,
    event,
    visit_events,
)
from pydantic import SecretStr

from leaks import assert_no_leak
from teams_ehr.attendance.outbox import DeadLetter, OrgRoute, OutboxWorker, enqueue_visit_note
from teams_ehr.attendance.writers import (
    KINDS,
    AttendanceDelivery,
    AttendanceFact,
    AttendanceWriter,
    AuditEventWriter,
    EncounterParticipantWriter,
    EpicClinicalNoteWriter,
    EpicTelehealthStatusWriter,
    FhirWriter,
    WriteOutcome,
    WriterStrategy,
)
from teams_ehr.errors import ConfigurationError, TeamsEhrError, UsageError
from teams_ehr.testing.fake_fhir import FakeFhirServer

pytestmark = pytest.mark.anyio

WRITERS: dict[WriterStrategy, Callable[[], FhirWriter]] = {
    WriterStrategy.EPIC_CLINICAL_NOTE: EpicClinicalNoteWriter,
    WriterStrategy.AUDIT_EVENT: AuditEventWriter,
    WriterStrategy.ENCOUNTER_PARTICIPANT: EncounterParticipantWriter,
    WriterStrategy.EPIC_TELEHEALTH_STATUS: EpicTelehealthStatusWriter,
}

ENCOUNTER = {
    "resourceType": "Encounter",
    "id": "enc-1",
    "meta": {"versionId": "1"},
    "status": "planned",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR"},
}


def fake_server() -> FakeFhirServer:
    fake = FakeFhirServer(
        FHIR_BASE, clock=FakeClock(), validate=True, token_check=lambda t: t == TOKEN_CANARY
    )
    fake.seed(dict(ENCOUNTER))
    return fake


def fact(kind: str = "connected", role: str = "patient", seconds: float = 71) -> AttendanceFact:
    return AttendanceFact.create(
        org_id=ORG,
        external_id="visit-k1",
        kind=kind,  # type: ignore[arg-type]
        role=role,  # type: ignore[arg-type]
        participant_key="p-1",
        at=T0 + timedelta(seconds=seconds),
    )


def payload_for(strategy: WriterStrategy) -> Any:
    """What one write hands a writer: the visit's facts for the note, else one fact."""
    return visit_events() if strategy.per_visit else fact()


async def write_async(writer: FhirWriter, fake: FakeFhirServer, what: Any) -> WriteOutcome:
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as http:
        return await writer.write(
            what, target=TARGET, http=http, fhir_base=FHIR_BASE, access_token=TOKEN_CANARY
        )


def write_sync(writer: FhirWriter, fake: FakeFhirServer, what: Any) -> WriteOutcome:
    with httpx.Client(transport=httpx.MockTransport(fake.handler)) as http:
        return writer.write_sync(
            what,
            target=TARGET,
            http=http,
            fhir_base=FHIR_BASE,
            access_token=SecretStr(TOKEN_CANARY),
        )


# -- typed facts --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["connect", "joined", "", "Connected"])
async def test_an_unknown_kind_is_a_usage_error_not_a_skip(kind: str) -> None:
    with pytest.raises(UsageError) as created:
        fact(kind)
    assert created.value.reason == "bad_fact"
    assert "Known kinds: connected, disconnected" in str(created.value)
    fake = fake_server()
    row = event(kind)  # a fact-like object from elsewhere (a store row) with a bad kind
    for writer in (AuditEventWriter(), EpicTelehealthStatusWriter()):
        with pytest.raises(TeamsEhrError) as written:
            await write_async(writer, fake, row)
        assert written.value.reason == "bad_fact"
        with pytest.raises(UsageError):
            write_sync(writer, fake, row)
    assert fake.request_log == []


async def test_an_unknown_role_and_a_naive_time_are_refused() -> None:
    with pytest.raises(UsageError) as role:
        fact(role="clinician")
    assert (role.value.reason, "Known roles: provider, patient, other" in str(role.value)) == (
        "bad_fact",
        True,
    )
    with pytest.raises(UsageError) as naive:
        AttendanceFact.create(
            org_id=ORG,
            external_id="v",
            kind="connected",
            role="patient",
            participant_key="p",
            at=datetime(2026, 3, 2, 14, 0),  # naive: the point of the test
        )
    assert naive.value.reason == "naive_datetime"
    hostile = dataclasses.replace(event("connected"), kind="x" * 500 + PATIENT_CANARY)
    with pytest.raises(UsageError) as withheld:
        AttendanceFact.of(hostile)
    assert_no_leak([PATIENT_CANARY], str(withheld.value), repr(withheld.value))


def test_facts_accept_the_pipeline_shapes_and_keep_their_key() -> None:
    row = event("disconnected", "provider", "dr-1", 30)
    checked = AttendanceFact.of(row)
    assert (checked.kind, checked.role, checked.fact_key) == (
        "disconnected",
        "provider",
        row.fact_key,
    )
    assert AttendanceFact.of(checked) is checked
    created = fact()
    assert created == AttendanceFact.of(created)
    assert fact().fact_key == created.fact_key  # derived, so a re-created fact dedupes
    assert set(KINDS) == {"connected", "disconnected", "lobby_entered", "admitted"} | {
        "call_started",
        "call_ended",
    }


async def test_writes_refuse_fact_sets_they_cannot_write() -> None:
    fake = fake_server()
    with pytest.raises(UsageError) as several:
        await write_async(AuditEventWriter(), fake, [fact(), fact("disconnected")])
    assert several.value.reason == "bad_fact"
    with pytest.raises(UsageError) as empty:
        await write_async(EpicClinicalNoteWriter(), fake, [])
    assert empty.value.reason == "bad_fact"
    other_visit = event("connected", visit="visit-other")
    with pytest.raises(UsageError) as mixed:
        write_sync(EpicClinicalNoteWriter(), fake, [*visit_events(), other_visit])
    assert mixed.value.reason == "bad_fact"
    assert fake.request_log == []


def test_audit_writer_kinds_must_be_attendance_kinds() -> None:
    with pytest.raises(ConfigurationError) as error:
        AuditEventWriter(kinds=frozenset({"connect"}))  # type: ignore[arg-type]
    assert error.value.reason == "bad_writer"
    assert AuditEventWriter(kinds=frozenset({"lobby_entered"})).accepts("lobby_entered")


# -- strategy mismatch --------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", list(WriterStrategy))
@pytest.mark.parametrize("delivered", list(WriterStrategy))
def test_a_delivery_of_another_strategy_is_refused(
    strategy: WriterStrategy, delivered: WriterStrategy
) -> None:
    writer = WRITERS[strategy]()
    assert writer.strategy is strategy
    assert isinstance(writer, AttendanceWriter)
    delivery = AttendanceDelivery.of(delivered, [fact()], target=TARGET)
    token = SecretStr(TOKEN_CANARY)
    if delivered is strategy:
        writer.write_flow(delivery, fhir_base=FHIR_BASE, access_token=token).close()
        return
    with pytest.raises(UsageError) as error:
        writer.write_flow(delivery, fhir_base=FHIR_BASE, access_token=token)
    assert error.value.reason == "writer_strategy_mismatch"
    assert delivered.value in str(error.value)
    assert strategy.value in str(error.value)


async def test_the_outbox_dead_letters_a_mismatched_route_with_its_reason() -> None:
    """A row routed to a writer of another strategy used to be written as whatever that writer
    made of it; now it is a dead letter saying why, with one alert."""
    store, fake, clock = MemoryStore(), fake_server(), FakeClock()
    await enqueue_visit_note(store, visit_events(), target=TARGET, now=clock())
    alerts: list[DeadLetter] = []

    async def route(org_id: str, strategy: WriterStrategy) -> OrgRoute:
        return OrgRoute(AuditEventWriter(), FHIR_BASE)  # misconfigured: ignores the strategy

    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as http:
        worker = OutboxWorker(
            store, route, Tokens(), http, clock=clock, on_dead_letter=alerts.append
        )
        assert await worker.run_once() == 1
    (dead,) = await store.list_dead()
    assert dead.last_reason == "writer_strategy_mismatch"
    assert [a.reason for a in alerts] == ["writer_strategy_mismatch"]
    assert fake.request_log == []


# -- write / write_sync parity, per strategy module ---------------------------------------------


@pytest.mark.parametrize("strategy", list(WriterStrategy))
async def test_write_and_write_sync_send_the_same_requests_and_agree(
    strategy: WriterStrategy,
) -> None:
    async_fake, sync_fake = fake_server(), fake_server()
    writer = WRITERS[strategy]()
    what = payload_for(strategy)
    first = [
        await write_async(writer, async_fake, what),
        await write_async(writer, async_fake, what),
    ]
    second = [write_sync(writer, sync_fake, what), write_sync(writer, sync_fake, what)]
    assert first == second
    assert async_fake.request_log == sync_fake.request_log
    assert async_fake.telehealth_calls == sync_fake.telehealth_calls
    for rtype in ("DocumentReference", "AuditEvent", "Encounter"):
        assert async_fake.resources(rtype) == sync_fake.resources(rtype)
    expected = {
        WriterStrategy.EPIC_CLINICAL_NOTE: ["created", "existing"],
        WriterStrategy.AUDIT_EVENT: ["created", "existing"],
        WriterStrategy.ENCOUNTER_PARTICIPANT: ["updated", "unchanged"],
        WriterStrategy.EPIC_TELEHEALTH_STATUS: ["sent", "sent"],
    }[strategy]
    assert [o.status for o in first] == expected
    assert_no_leak([TOKEN_CANARY, PATIENT_CANARY], repr(first))


@pytest.mark.parametrize(
    "strategy",
    [s for s in WriterStrategy if not s.per_visit],
)
async def test_a_kind_the_strategy_does_not_record_is_skipped_without_a_request(
    strategy: WriterStrategy,
) -> None:
    fake = fake_server()
    writer = WRITERS[strategy]()
    lobby = fact("lobby_entered")
    assert not writer.accepts("lobby_entered")
    assert (await write_async(writer, fake, lobby)).status == "skipped"
    assert write_sync(writer, fake, lobby).status == "skipped"
    assert fake.request_log == []


async def test_write_serializes_search_then_create_in_the_process() -> None:
    """Five concurrent writes of one fact to a server without conditional create: one
    AuditEvent, because ``write`` holds the same per-resource lock as the outbox."""
    fake = FakeFhirServer(FHIR_BASE, supports_conditional_create=False)

    async def slow(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0)
        await anyio.sleep(0)
        return fake.handler(request)

    writer = AuditEventWriter(conditional_create=False)
    outcomes: list[str] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(slow)) as http:

        async def one() -> None:
            outcome = await writer.write(
                fact(), target=TARGET, http=http, fhir_base=FHIR_BASE, access_token="t"
            )
            outcomes.append(outcome.status)

        async with anyio.create_task_group() as group:
            for _ in range(5):
                group.start_soon(one)
    assert len(fake.resources("AuditEvent")) == 1
    assert sorted(outcomes) == ["created", *["existing"] * 4]


async def test_the_note_writer_takes_a_visits_facts_in_any_order() -> None:
    fake = fake_server()
    writer = EpicClinicalNoteWriter()
    created = await write_async(writer, fake, visit_events())
    again = write_sync(writer, fake, list(reversed(visit_events())))
    assert (created.status, again.status) == ("created", "existing")
    assert created.resource_id == again.resource_id
    assert len(fake.resources("DocumentReference")) == 1
