"""D4: writer strategies — idempotent creates, response mapping, Encounter merge, telehealth."""

from __future__ import annotations

import base64
from datetime import timedelta

import anyio
import httpx
import pytest
from attendance_out_support import (
    FHIR_BASE,
    PATIENT_CANARY,
    T0,
    TARGET,
    TOKEN_CANARY,
    FakeClock,
    event,
    visit_events,
)
from pydantic import SecretStr

from leaks import assert_no_leak
from teams_ehr._concurrency import KeyedLocks
from teams_ehr.attendance.fhir_resources import FhirTarget, build_audit_event
from teams_ehr.attendance.writers import (
    AttendanceDelivery,
    AttendanceWriter,
    AuditEventWriter,
    EncounterParticipantWriter,
    EpicClinicalNoteWriter,
    EpicTelehealthStatusWriter,
    TelehealthStatusOptions,
    WriteBackConfig,
    WriterStrategy,
)
from teams_ehr.attendance.writers.epic_telehealth import interconnect_base
from teams_ehr.attendance.writers.fhir_http import create_once_flow
from teams_ehr.errors import ConfigurationError, FhirError, FhirUnavailableError, TransportError
from teams_ehr.sansio import run_async
from teams_ehr.testing.fake_fhir import FakeFhirServer

pytestmark = pytest.mark.anyio
TOKEN = SecretStr(TOKEN_CANARY)


def delivery(
    strategy: WriterStrategy, facts: list | None = None, target: FhirTarget = TARGET
) -> AttendanceDelivery:
    facts = facts if facts is not None else [event("connected", "patient", "p-1", 71)]
    return AttendanceDelivery.of(strategy, facts, target=target)


async def write(
    fake: FakeFhirServer | httpx.MockTransport, writer: AttendanceWriter, batch: AttendanceDelivery
):
    transport = fake if isinstance(fake, httpx.MockTransport) else httpx.MockTransport(fake.handler)
    async with httpx.AsyncClient(transport=transport) as http:
        return await run_async(
            writer.write_flow(batch, fhir_base=FHIR_BASE, access_token=TOKEN), http
        )


async def test_audit_event_conditional_create_is_idempotent() -> None:
    fake = FakeFhirServer(FHIR_BASE, validate=True)
    batch = delivery(WriterStrategy.AUDIT_EVENT)
    first = await write(fake, AuditEventWriter(), batch)
    second = await write(fake, AuditEventWriter(), batch)
    assert (first.status, second.status) == ("created", "existing")
    assert first.resource_id == second.resource_id == "1"
    assert len(fake.resources("AuditEvent")) == 1


async def test_retry_after_a_lost_response_never_duplicates() -> None:
    """R09: the server wrote, the reply was lost; the retry hits conditional create → 200."""
    fake = FakeFhirServer(FHIR_BASE)
    fake.lose_next_response()
    batch = delivery(WriterStrategy.AUDIT_EVENT)
    with pytest.raises(TransportError):
        await write(fake, AuditEventWriter(), batch)
    assert (await write(fake, AuditEventWriter(), batch)).status == "existing"
    assert len(fake.resources("AuditEvent")) == 1


async def test_search_then_create_without_conditional_create() -> None:
    fake = FakeFhirServer(FHIR_BASE, supports_conditional_create=False)
    writer = AuditEventWriter(conditional_create=False)
    batch = delivery(WriterStrategy.AUDIT_EVENT)
    fake.lose_next_response(method="POST")  # search answered, then the create's reply lost
    with pytest.raises(TransportError):
        await write(fake, writer, batch)
    assert (await write(fake, writer, batch)).status == "existing"
    assert (await write(fake, writer, batch)).status == "existing"
    assert [m for m, _ in fake.request_log] == ["GET", "POST", "GET", "GET"]
    assert len(fake.resources("AuditEvent")) == 1
    assert writer.lock_key(batch) is not None


async def test_conditional_writer_on_a_server_without_support_would_duplicate() -> None:
    """Why the strategy is configured per organization: the header alone is not enough."""
    fake = FakeFhirServer(FHIR_BASE, supports_conditional_create=False)
    batch = delivery(WriterStrategy.AUDIT_EVENT)
    await write(fake, AuditEventWriter(), batch)
    await write(fake, AuditEventWriter(), batch)
    assert len(fake.resources("AuditEvent")) == 2


@pytest.mark.parametrize("locked", [False, True])
async def test_concurrent_search_then_create_is_safe_under_the_lock(locked: bool) -> None:
    fake = FakeFhirServer(FHIR_BASE, supports_conditional_create=False)

    async def slow_handler(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0)
        await anyio.sleep(0)
        return fake.handler(request)

    transport = httpx.MockTransport(slow_handler)
    writer = AuditEventWriter(conditional_create=False)
    batch = delivery(WriterStrategy.AUDIT_EVENT)
    locks = KeyedLocks()

    async def one() -> None:
        key = writer.lock_key(batch)
        assert key is not None
        if locked:
            async with locks.hold(key):
                await write(transport, writer, batch)
        else:
            await write(transport, writer, batch)

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(one)
    assert (len(fake.resources("AuditEvent")) == 1) is locked
    assert len(locks) == 0  # locks are dropped when unused (no growth per visit)


async def test_search_finds_several_matches_as_duplicate_identifier() -> None:
    fake = FakeFhirServer(FHIR_BASE)
    batch = delivery(WriterStrategy.AUDIT_EVENT)
    resource, _ = build_audit_event(batch.facts[0], TARGET)
    fake.seed(resource)
    fake.seed(resource)
    with pytest.raises(FhirError) as conditional:
        await write(fake, AuditEventWriter(), batch)
    assert conditional.value.reason == "duplicate_identifier"
    with pytest.raises(FhirError) as searched:
        await write(fake, AuditEventWriter(conditional_create=False), batch)
    assert searched.value.reason == "duplicate_identifier"


async def test_search_follows_next_pages_only_on_the_same_base() -> None:
    batch = delivery(WriterStrategy.AUDIT_EVENT)
    resource, identity = build_audit_event(batch.facts[0], TARGET)
    pages = {
        "1": {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [],
            "link": [{"relation": "next", "url": f"{FHIR_BASE}/AuditEvent?page=2"}],
        },
        "2": {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": {**resource, "id": "found"}}],
            "link": [{"relation": "next", "url": "https://evil.example/steal"}],
        },
    }
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json=pages[request.url.params.get("page", "1")])

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        flow = create_once_flow(FHIR_BASE, TOKEN, resource, identity, conditional_create=False)
        outcome = await run_async(flow, http)
    assert (outcome.status, outcome.resource_id) == ("existing", "found")
    assert all(url.startswith(FHIR_BASE) for url in seen)
    assert len(seen) == 2


async def test_clinical_note_writer_epic_shape_and_client_side_match() -> None:
    fake = FakeFhirServer(FHIR_BASE, supports_conditional_create=False, validate=True)
    other_note = {
        "resourceType": "DocumentReference",
        "status": "current",
        "identifier": [{"system": "urn:other", "value": "x"}],
        "content": [{"attachment": {"contentType": "text/plain", "data": "eA=="}}],
        "context": {"encounter": [{"reference": "Encounter/enc-1"}]},
    }
    fake.seed(other_note)
    batch = delivery(WriterStrategy.EPIC_CLINICAL_NOTE, visit_events())
    writer = EpicClinicalNoteWriter()
    assert (await write(fake, writer, batch)).status == "created"
    assert (await write(fake, writer, batch)).status == "existing"
    notes = fake.resources("DocumentReference")
    assert len(notes) == 2
    searches = [p for m, p in fake.request_log if m == "GET"]
    assert searches == ["/interconnect-prd/api/FHIR/R4/DocumentReference"] * 2
    text = base64.b64decode(notes[1]["content"][0]["attachment"]["data"]).decode()
    assert "Patient waited in the lobby" in text


async def test_clinical_note_needs_an_encounter() -> None:
    batch = delivery(WriterStrategy.EPIC_CLINICAL_NOTE, visit_events(), FhirTarget())
    with pytest.raises(ConfigurationError) as error:
        await write(FakeFhirServer(FHIR_BASE), EpicClinicalNoteWriter(), batch)
    assert error.value.reason == "missing_target"


def _encounter(version: str = "1") -> dict:
    return {
        "resourceType": "Encounter",
        "id": "enc-1",
        "meta": {"versionId": version},
        "status": "planned",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR"},
    }


async def test_encounter_writer_merges_with_if_match_and_is_idempotent() -> None:
    fake = FakeFhirServer(FHIR_BASE, validate=True)
    fake.seed(_encounter())
    writer = EncounterParticipantWriter()
    for fact in visit_events():
        await write(fake, writer, delivery(WriterStrategy.ENCOUNTER_PARTICIPANT, [fact]))
    (stored,) = fake.resources("Encounter")
    assert stored["status"] == "finished"
    assert len(stored["participant"]) == 2
    again = [
        (await write(fake, writer, delivery(WriterStrategy.ENCOUNTER_PARTICIPANT, [f]))).status
        for f in visit_events()
    ]
    assert again == ["unchanged", "unchanged", "skipped", "skipped", *["unchanged"] * 4]
    assert fake.resources("Encounter")[0]["meta"]["versionId"] == stored["meta"]["versionId"]


async def test_encounter_writer_rereads_on_version_conflict() -> None:
    fake = FakeFhirServer(FHIR_BASE)
    fake.seed(_encounter())
    bumped = False

    def racing(request: httpx.Request) -> httpx.Response:
        nonlocal bumped
        if request.method == "PUT" and not bumped:
            bumped = True
            fake.seed({**_encounter("2"), "status": "arrived"})  # someone else wrote meanwhile
        return fake.handler(request)

    batch = delivery(
        WriterStrategy.ENCOUNTER_PARTICIPANT, [event("call_started", "other", "meeting")]
    )
    outcome = await write(httpx.MockTransport(racing), EncounterParticipantWriter(), batch)
    assert outcome.status == "updated"
    (stored,) = fake.resources("Encounter")
    assert (stored["status"], stored["meta"]["versionId"]) == ("in-progress", "3")


async def test_encounter_writer_on_epic_read_only_encounter_is_poison() -> None:
    fake = FakeFhirServer(FHIR_BASE, read_only_types=frozenset({"Encounter"}))
    fake.seed(_encounter())
    with pytest.raises(FhirError) as error:
        await write(
            fake, EncounterParticipantWriter(), delivery(WriterStrategy.ENCOUNTER_PARTICIPANT)
        )
    assert error.value.reason == "fhir_rejected"
    assert not isinstance(error.value, FhirUnavailableError)


@pytest.mark.parametrize(
    ("status", "headers", "reason", "retry_s"),
    [
        (429, {"retry-after": "7"}, "fhir_unavailable", 7),
        (503, {"retry-after": "Mon, 02 Mar 2026 14:02:00 GMT"}, "fhir_unavailable", 120),
        (503, {"retry-after": "999999"}, "fhir_unavailable", 3600),
        (500, {}, "fhir_unavailable", None),
        (408, {}, "fhir_unavailable", None),
        (409, {}, "fhir_unavailable", None),
        (400, {}, "fhir_bad_request", None),
        (401, {}, "fhir_unauthorized", None),
        (403, {}, "fhir_forbidden", None),
        (404, {}, "fhir_not_found", None),
        (422, {}, "fhir_unprocessable", None),
        (412, {}, "duplicate_identifier", None),
    ],
)
async def test_response_mapping(
    status: int, headers: dict, reason: str, retry_s: int | None
) -> None:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "invalid", "diagnostics": PATIENT_CANARY}],
    }
    transport = httpx.MockTransport(lambda r: httpx.Response(status, json=body, headers=headers))
    writer = AuditEventWriter(clock=FakeClock())
    with pytest.raises(FhirError) as error:
        await write(transport, writer, delivery(WriterStrategy.AUDIT_EVENT))
    exc = error.value
    assert (exc.reason, exc.status_code) == (reason, status)
    if isinstance(exc, FhirUnavailableError):
        assert exc.retry_at == (T0 + timedelta(seconds=retry_s) if retry_s is not None else None)
    else:
        assert exc.issue_codes == ("invalid",)
    assert_no_leak([TOKEN_CANARY, PATIENT_CANARY, "enc-1", "csn-canary"], str(exc), repr(exc))


async def test_audit_writer_skips_kinds_it_does_not_record() -> None:
    fake = FakeFhirServer(FHIR_BASE)
    batch = delivery(WriterStrategy.AUDIT_EVENT, [event("lobby_entered")])
    assert (await write(fake, AuditEventWriter(), batch)).status == "skipped"
    assert fake.request_log == []


async def test_telehealth_status_call_shape() -> None:
    fake = FakeFhirServer(FHIR_BASE, token_check=lambda t: t == TOKEN_CANARY)
    writer = EpicTelehealthStatusWriter(TelehealthStatusOptions(epic_client_id="client-1"))
    for fact in visit_events():
        outcome = await write(fake, writer, delivery(WriterStrategy.EPIC_TELEHEALTH_STATUS, [fact]))
        assert outcome.status in ("sent", "skipped")
    assert [c["ConnectionStatus"] for c in fake.telehealth_calls] == ["1", "1", "2", "2"]
    first = fake.telehealth_calls[0]
    assert first["ConferenceID"] == "csn-canary-555"
    assert (first["ExternalIDType"], first["auth"], first["client_id"]) == (
        "2",
        "bearer",
        "client-1",
    )
    assert first["ExternalID"] == "dr-1"


async def test_telehealth_basic_auth_and_errors() -> None:
    fake = FakeFhirServer(FHIR_BASE)
    options = TelehealthStatusOptions(
        auth="basic", basic_user="svc", basic_password=SecretStr("pw")
    )
    batch = delivery(WriterStrategy.EPIC_TELEHEALTH_STATUS)
    request = EpicTelehealthStatusWriter(options).build_request(
        batch, fhir_base=FHIR_BASE, access_token=TOKEN
    )
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"emp$svc:pw").decode()
    assert request.method == "POST"
    assert str(request.url).startswith(
        "https://ehr.example/interconnect-prd/api/epic/2018/Telehealth/ContextLinking/"
    )
    assert (await write(fake, EpicTelehealthStatusWriter(options), batch)).status == "sent"
    with pytest.raises(ConfigurationError):
        EpicTelehealthStatusWriter(TelehealthStatusOptions(auth="basic")).build_request(
            batch, fhir_base=FHIR_BASE, access_token=TOKEN
        )
    fake.fail_next(503, retry_after=30)
    with pytest.raises(FhirUnavailableError):
        await write(fake, EpicTelehealthStatusWriter(options), batch)
    no_conference = delivery(WriterStrategy.EPIC_TELEHEALTH_STATUS, target=FhirTarget())
    with pytest.raises(ConfigurationError):
        await write(fake, EpicTelehealthStatusWriter(options), no_conference)


def test_interconnect_base() -> None:
    assert interconnect_base(FHIR_BASE) == "https://ehr.example/interconnect-prd"
    assert interconnect_base("https://h/x/api/fhir/r4/") == "https://h/x"
    assert interconnect_base("https://h/other") == "https://h/other"


def test_delivery_payload_roundtrip_keys_and_repr() -> None:
    per_fact = delivery(WriterStrategy.AUDIT_EVENT)
    assert AttendanceDelivery.from_payload(per_fact.to_payload()) == per_fact
    assert per_fact.idempotency_key == f"audit_event/{per_fact.facts[0].fact_key}"
    note = delivery(WriterStrategy.EPIC_CLINICAL_NOTE, visit_events())
    assert note.idempotency_key.startswith("epic_clinical_note/note-")
    assert WriterStrategy.EPIC_CLINICAL_NOTE.per_visit
    assert not WriterStrategy.AUDIT_EVENT.per_visit
    assert_no_leak([PATIENT_CANARY, "csn-canary", "enc-1"], per_fact)
    payload = per_fact.to_payload().decode()
    for name in ("displayName", "joinWebUrl", "token"):
        assert name not in payload


def test_write_back_config_builds_the_organizations_writers() -> None:
    from pydantic import ValidationError

    epic = WriteBackConfig().build_writers()
    assert list(epic) == [WriterStrategy.EPIC_CLINICAL_NOTE]
    note = epic[WriterStrategy.EPIC_CLINICAL_NOTE]
    assert isinstance(note, EpicClinicalNoteWriter)
    assert note.conditional_create is False
    generic = WriteBackConfig(
        strategies=(WriterStrategy.AUDIT_EVENT, WriterStrategy.ENCOUNTER_PARTICIPANT),
        conditional_create=False,
    ).build_writers()
    audit = generic[WriterStrategy.AUDIT_EVENT]
    assert isinstance(audit, AuditEventWriter)
    assert audit.conditional_create is False
    assert isinstance(generic[WriterStrategy.ENCOUNTER_PARTICIPANT], EncounterParticipantWriter)
    for writer in generic.values():
        assert isinstance(writer, AttendanceWriter)
    tele = WriteBackConfig(strategies=(WriterStrategy.EPIC_TELEHEALTH_STATUS,)).build_writers()
    assert isinstance(tele[WriterStrategy.EPIC_TELEHEALTH_STATUS], EpicTelehealthStatusWriter)
    with pytest.raises(ValidationError):
        WriteBackConfig(strategies=())
    with pytest.raises(ValidationError):
        WriteBackConfig(strategies=(WriterStrategy.AUDIT_EVENT, WriterStrategy.AUDIT_EVENT))
    with pytest.raises(ValidationError):
        WriteBackConfig(unknown=1)  # type: ignore[call-arg]
