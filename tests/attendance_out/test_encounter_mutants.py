"""Lost updates in FHIR version-aware update (https://hl7.org/fhir/R4/http.html#concurrency).

Two writers read the same ``Encounter`` version, each merges its own fact and ``PUT`` s: the
second ``PUT`` must be refused (412, ``If-Match`` on the version it read), re-read and merged
again, so the final resource holds **both** updates. A test that only checks the second
writer's change passes with a lost update too; these check the first writer's change survives.
The ``If-Match`` value comes from the ``ETag`` header, else from ``meta.versionId``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import httpx
import pytest
from attendance_out_support import FHIR_BASE, T0, TARGET, TOKEN_CANARY, event
from pydantic import SecretStr

from teams_ehr.attendance.fhir_resources import EncounterOptions, FhirTarget
from teams_ehr.attendance.writers import (
    AttendanceDelivery,
    EncounterParticipantWriter,
    WriterStrategy,
)
from teams_ehr.errors import ConfigurationError, FhirError, FhirUnavailableError
from teams_ehr.sansio import run_async
from teams_ehr.testing.fake_fhir import FakeFhirServer

pytestmark = pytest.mark.anyio
TOKEN = SecretStr(TOKEN_CANARY)
ENCOUNTER = {
    "resourceType": "Encounter",
    "id": "enc-1",
    "meta": {"versionId": "1"},
    "status": "planned",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR"},
}


def _batch(kind: str, role: str, participant: str) -> AttendanceDelivery:
    return AttendanceDelivery.of(
        WriterStrategy.ENCOUNTER_PARTICIPANT, [event(kind, role, participant, 5)], target=TARGET
    )


class RacingServer:
    """FakeFhirServer behind a gate: the first ``readers`` GETs all complete before any PUT."""

    def __init__(self, fake: FakeFhirServer, *, readers: int, etag: bool = True) -> None:
        self.fake = fake
        self.readers = readers
        self.etag = etag
        self.reads = 0
        self.all_read = anyio.Event()
        self.requests: list[tuple[str, str | None]] = []

    async def handler(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            await self.all_read.wait()
        self.requests.append((request.method, request.headers.get("if-match")))
        response = self.fake.handler(request)
        if request.method == "GET":
            self.reads += 1
            if self.reads >= self.readers:
                self.all_read.set()
        if not self.etag:
            headers = {k: v for k, v in response.headers.items() if k.lower() != "etag"}
            response = httpx.Response(
                response.status_code, headers=headers, content=response.content
            )
        return response


async def _write_concurrently(server: RacingServer, *batches: AttendanceDelivery) -> list[str]:
    writer = EncounterParticipantWriter()
    statuses: list[str] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handler)) as http:

        async def one(batch: AttendanceDelivery) -> None:
            flow = writer.write_flow(batch, fhir_base=FHIR_BASE, access_token=TOKEN)
            statuses.append((await run_async(flow, http)).status)

        async with anyio.create_task_group() as tg:
            for batch in batches:
                tg.start_soon(one, batch)
    return statuses


def _participant_keys(resource: dict) -> list[str]:
    return sorted(e["extension"][0]["valueString"] for e in resource.get("participant", []))


@pytest.mark.parametrize("etag", [True, False], ids=["etag", "meta-versionId"])
async def test_two_concurrent_writers_both_updates_survive(etag: bool) -> None:
    fake = FakeFhirServer(FHIR_BASE)
    fake.seed(dict(ENCOUNTER))
    server = RacingServer(fake, readers=2, etag=etag)
    statuses = await _write_concurrently(
        server,
        _batch("connected", "patient", "p-1"),
        _batch("connected", "provider", "dr-1"),
    )
    assert statuses == ["updated", "updated"]
    (stored,) = fake.resources("Encounter")
    assert _participant_keys(stored) == ["dr-1", "p-1"]  # neither update lost
    assert stored["meta"]["versionId"] == "3"
    # Both PUTs named the version they had read; the loser re-read and named the new one.
    puts = [match for method, match in server.requests if method == "PUT"]
    assert puts == ['W/"1"', 'W/"1"', 'W/"2"']


async def test_status_and_participant_updates_merge() -> None:
    fake = FakeFhirServer(FHIR_BASE)
    fake.seed(dict(ENCOUNTER))
    server = RacingServer(fake, readers=2)
    await _write_concurrently(
        server,
        _batch("call_started", "other", "meeting"),
        _batch("connected", "patient", "p-1"),
    )
    (stored,) = fake.resources("Encounter")
    assert stored["status"] == "in-progress"  # the call start is not lost
    assert _participant_keys(stored) == ["p-1"]  # nor the participant


async def test_conflicts_past_the_limit_are_retried_later() -> None:
    fake = FakeFhirServer(FHIR_BASE)
    fake.seed(dict(ENCOUNTER))
    puts = 0

    def always_stale(request: httpx.Request) -> httpx.Response:
        nonlocal puts
        if request.method == "PUT":
            puts += 1
            current = fake.resources("Encounter")[0]
            fake.seed(
                {**current, "meta": {"versionId": str(int(current["meta"]["versionId"]) + 1)}}
            )
        return fake.handler(request)

    writer = EncounterParticipantWriter(max_conflicts=2)
    async with httpx.AsyncClient(transport=httpx.MockTransport(always_stale)) as http:
        flow = writer.write_flow(
            _batch("connected", "patient", "p-1"), fhir_base=FHIR_BASE, access_token=TOKEN
        )
        with pytest.raises(FhirUnavailableError) as info:
            await run_async(flow, http)
    assert (info.value.status_code, str(info.value)) == (
        412,
        "FHIR update Encounter kept conflicting",
    )
    assert puts == 3  # the first attempt and max_conflicts re-reads
    assert _participant_keys(fake.resources("Encounter")[0]) == []


# -- single writer: exact requests, outcomes and errors ------------------------------------------


class Scripted:
    """FakeFhirServer with scripted overrides, recording requests."""

    def __init__(self, fake: FakeFhirServer, **overrides: httpx.Response) -> None:
        self.fake = fake
        self.overrides = overrides  # "GET" / "PUT" -> response
        self.requests: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method in self.overrides:
            return self.overrides[request.method]
        return self.fake.handler(request)


async def _write(handler: Any, batch: AttendanceDelivery, base: str = FHIR_BASE, **kw: Any) -> Any:
    writer = EncounterParticipantWriter(clock=lambda: T0, **kw)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        return await run_async(writer.write_flow(batch, fhir_base=base, access_token=TOKEN), http)


def _seeded() -> FakeFhirServer:
    fake = FakeFhirServer(FHIR_BASE)
    fake.seed(dict(ENCOUNTER))
    return fake


async def test_outcomes_name_the_encounter() -> None:
    fake = _seeded()
    batch = _batch("connected", "patient", "p-1")
    first = await _write(fake.handler, batch)
    again = await _write(fake.handler, batch)
    assert (first.status, first.resource_type, first.resource_id) == (
        "updated",
        "Encounter",
        "enc-1",
    )
    assert (again.status, again.resource_type, again.resource_id) == (
        "unchanged",
        "Encounter",
        "enc-1",
    )


async def test_the_writer_options_reach_the_merge() -> None:
    fake = _seeded()
    outcome = await _write(
        fake.handler,
        _batch("call_started", "other", "meeting"),
        options=EncounterOptions(update_status=False),
    )
    assert outcome.status == "unchanged"
    assert fake.resources("Encounter")[0]["status"] == "planned"


async def test_the_server_etag_is_sent_back_as_given() -> None:
    fake = _seeded()

    def strong_etag(request: httpx.Request) -> httpx.Response:
        response = fake.handler(request)
        if request.method == "GET":
            headers = {**response.headers, "etag": '"1"'}
            return httpx.Response(200, headers=headers, content=response.content)
        return response

    recorded: list[httpx.Request] = []

    def recording(request: httpx.Request) -> httpx.Response:
        recorded.append(request)
        return strong_etag(request)

    await _write(recording, _batch("connected", "patient", "p-1"))
    assert [r.headers.get("if-match") for r in recorded if r.method == "PUT"] == ['"1"']


async def test_base_is_stripped_of_slashes_only() -> None:
    fake = FakeFhirServer("https://ehr.example/fhirX")
    fake.seed(dict(ENCOUNTER))
    server = Scripted(fake)
    await _write(
        server.handler, _batch("connected", "patient", "p-1"), base="https://ehr.example/fhirX/"
    )
    assert str(server.requests[0].url) == "https://ehr.example/fhirX/Encounter/enc-1"


@pytest.mark.parametrize("reference", [None, "", "Patient/p-1"])
async def test_an_encounter_reference_is_needed(reference: str | None) -> None:
    batch = AttendanceDelivery.of(
        WriterStrategy.ENCOUNTER_PARTICIPANT,
        [event("connected", "patient", "p-1", 5)],
        target=FhirTarget(encounter=reference),
    )
    with pytest.raises(ConfigurationError) as info:
        await _write(_seeded().handler, batch)
    assert (info.value.reason, str(info.value)) == (
        "missing_target",
        "an Encounter reference is needed",
    )


@pytest.mark.parametrize("method", ["GET", "PUT"])
async def test_read_and_update_refusals_are_typed(method: str) -> None:
    refusal = httpx.Response(503, headers={"Retry-After": "30"})
    server = Scripted(_seeded(), **{method: refusal})
    with pytest.raises(FhirUnavailableError) as info:
        await _write(server.handler, _batch("connected", "patient", "p-1"))
    verb = "read" if method == "GET" else "update"
    assert str(info.value) == f"FHIR {verb} Encounter answered 503"
    assert info.value.retry_at == T0 + timedelta(seconds=30)


@pytest.mark.parametrize("body", [[1], {"resourceType": "Patient", "id": "enc-1"}])
async def test_a_read_of_another_type_is_refused(body: Any) -> None:
    server = Scripted(_seeded(), GET=httpx.Response(200, json=body))
    with pytest.raises(FhirError) as info:
        await _write(server.handler, _batch("connected", "patient", "p-1"))
    assert (info.value.reason, str(info.value)) == (
        "fhir_bad_read",
        "FHIR read Encounter answered another type",
    )


async def test_an_encounter_without_id_gives_no_id() -> None:
    body = {k: v for k, v in ENCOUNTER.items() if k != "id"}
    server = Scripted(_seeded(), GET=httpx.Response(200, json=body), PUT=httpx.Response(200))
    outcome = await _write(server.handler, _batch("connected", "patient", "p-1"))
    assert (outcome.status, outcome.resource_id) == ("updated", None)
