"""D4/D5 end to end: backend-services token from FakeEhr → outbox worker → FakeEhr's FHIR
store (FakeFhirServer as ``fhir_handler``); a 401 gets one fresh token (R14)."""

from __future__ import annotations

import base64

import httpx
import pytest
from attendance_out_support import T0, FakeClock, MemoryStore, visit_events
from fhir.resources.R4B.documentreference import DocumentReference

from teams_ehr.attendance.fhir_resources import FhirTarget
from teams_ehr.attendance.outbox import (
    BackendTokenProvider,
    Backoff,
    OrgRoute,
    OutboxWorker,
    enqueue_attendance,
    enqueue_visit_note,
)
from teams_ehr.attendance.writers import AuditEventWriter, EpicClinicalNoteWriter, WriterStrategy
from teams_ehr.keys import LocalSigner
from teams_ehr.smart.client_auth import PrivateKeyJwt
from teams_ehr.smart.tokens import BackendServicesTokenSource
from teams_ehr.testing.fake_ehr import FakeEhr
from teams_ehr.testing.fake_fhir import FakeFhirServer

pytestmark = pytest.mark.anyio
BASE = "https://ehr.test/interconnect/api/FHIR/R4"
TARGET = FhirTarget(encounter="Encounter/e-77", patient="Patient/p-77", conference_id="csn-1")


async def test_backend_token_and_writes_through_fake_ehr() -> None:
    clock = FakeClock()
    store_fhir = FakeFhirServer(BASE, clock=clock, supports_conditional_create=False, validate=True)
    ehr = FakeEhr(BASE, clock=clock, fhir_handler=store_fhir.handler)
    signer = LocalSigner.generate("RS384")
    ehr.register_client("backend-app", redirect_uris=[], jwks={"keys": [signer.public_jwk()]})
    source = BackendServicesTokenSource(
        ehr.token_url,
        PrivateKeyJwt("backend-app", signer),
        ["system/DocumentReference.c", "system/AuditEvent.c"],
        clock=clock,
    )
    writers = {
        WriterStrategy.EPIC_CLINICAL_NOTE: EpicClinicalNoteWriter(clock=clock),
        WriterStrategy.AUDIT_EVENT: AuditEventWriter(conditional_create=False, clock=clock),
    }

    async def route(org_id: str, strategy: WriterStrategy) -> OrgRoute:
        return OrgRoute(writers[strategy], BASE)

    async def source_for(org_id: str) -> BackendServicesTokenSource:
        return source

    outbox = MemoryStore()
    facts = visit_events()
    await enqueue_attendance(outbox, facts, target=TARGET, writers=list(writers.values()), now=T0)
    await enqueue_visit_note(outbox, facts, target=TARGET, now=T0)
    alerts: list[object] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(ehr.handler)) as http:
        tokens = BackendTokenProvider(source_for, http)
        worker = OutboxWorker(
            outbox,
            route,
            tokens,
            http,
            clock=clock,
            backoff=Backoff(jitter=lambda: 1.0),
            on_dead_letter=alerts.append,
        )
        store_fhir.fail_next(401)  # e.g. the token was revoked: one fresh token, one retry
        assert await worker.run_once() == 5
    assert worker.stats.delivered == 5
    assert alerts == []
    (note,) = store_fhir.resources("DocumentReference")
    DocumentReference.model_validate(note)
    assert note["context"]["encounter"] == [{"reference": "Encounter/e-77"}]
    text = base64.b64decode(note["content"][0]["attachment"]["data"]).decode()
    assert "Patient waited in the lobby: 1 min 0 s" in text
    assert len(store_fhir.resources("AuditEvent")) == 4
    token_posts = [r for r in ehr.requests if r.url.path.endswith("/token")]
    assert len(token_posts) == 2  # the first token, then one fresh one after the 401
