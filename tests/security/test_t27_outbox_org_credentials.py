"""T27 ``test_outbox_worker_uses_row_org_credentials`` (security.md T27; ASVS 8.4.1): one outbox
worker delivering rows of two organizations uses each row's organization — its FHIR base, its
writer route and its backend-services token — never the "current" or the last one used.

Each organization's FHIR server accepts only its own organization's token, so a row sent with
the other's token (or to the other's server) is refused and would be dead-lettered.
"""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from attendance_out.attendance_out_support import T0, FakeClock, MemoryStore, event
from teams_ehr.attendance.fhir_resources import FhirTarget
from teams_ehr.attendance.outbox import OrgRoute, OutboxWorker, enqueue_attendance
from teams_ehr.attendance.writers import AuditEventWriter, WriterStrategy
from teams_ehr.testing.fake_fhir import FakeFhirServer

pytestmark = pytest.mark.anyio

BASES = {
    "org-a": "https://ehr-a.example/api/FHIR/R4",
    "org-b": "https://ehr-b.example/api/FHIR/R4",
}
TOKENS = {"org-a": "tok-org-a-7c1", "org-b": "tok-org-b-4e9"}
TARGETS = {
    "org-a": FhirTarget(encounter="Encounter/enc-a", patient="Patient/pat-a"),
    "org-b": FhirTarget(encounter="Encounter/enc-b", patient="Patient/pat-b"),
}


async def test_outbox_worker_uses_row_org_credentials() -> None:
    clock = FakeClock(T0)
    store = MemoryStore()
    servers = {
        org: FakeFhirServer(base, clock=clock, token_check=TOKENS[org].__eq__)
        for org, base in BASES.items()
    }
    writers = {org: AuditEventWriter(clock=clock) for org in BASES}
    token_calls: list[str] = []
    route_calls: list[str] = []

    async def tokens(org_id: str, *, force_refresh: bool = False) -> SecretStr:
        token_calls.append(org_id)
        return SecretStr(TOKENS[org_id])

    async def route(org_id: str, strategy: WriterStrategy) -> OrgRoute:
        route_calls.append(org_id)
        return OrgRoute(writers[org_id], BASES[org_id])

    async def handler(request: httpx.Request) -> httpx.Response:
        for org, base in BASES.items():
            if str(request.url).startswith(base):
                return servers[org].handler(request)
        raise AssertionError(f"unexpected host {request.url.host}")

    # interleave the two organizations' rows so a "last used" credential would be wrong
    for second in range(0, 40, 10):
        for org in BASES:
            facts = [event("connected", org=org, visit=f"visit-{org}", seconds=second)]
            await enqueue_attendance(
                store, facts, target=TARGETS[org], writers=[writers[org]], now=clock()
            )
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        worker = OutboxWorker(store, route, tokens, http, clock=clock, concurrency=4)
        while (await store.outbox_counts())["pending"]:
            assert await worker.run_once() > 0
    counts = await store.outbox_counts()
    assert counts["delivered"] == 8
    assert counts["dead"] == 0
    for org, server in servers.items():
        events = server.resources("AuditEvent")
        assert len(events) == 4
        other = next(o for o in BASES if o != org)
        assert f"enc-{org[-1]}" in str(events)
        assert f"pat-{other[-1]}" not in str(events)
        assert f"enc-{other[-1]}" not in str(events)
    assert sorted(token_calls) == sorted(route_calls)
    assert set(token_calls) == set(BASES)
