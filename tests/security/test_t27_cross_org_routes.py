"""T27–T30 cross-organization isolation through the mounted routes (security.md T27, T28, T30;
SPEC C1, C4; ASVS 8.4.1).

Two approved organizations in one runtime, each with its own EHR (org A on the sandbox EHR, org B
on a second FakeEhr), share the Starlette host. Through the routes a browser can reach:

* a launch URL of one organization with the other's ``iss`` is refused before any I/O (the
  org-scoped launch URL of Epic's integration record and the ``iss`` must both match);
* the same appointment id in both organizations gives two meetings and two join links, each
  resolving to its own organization's meeting;
* a clinician session from org A gets no roster of org B's visit, and no roster under org B's
  path for org A's visit;
* suspending org A stops its launches at once, and leaves org B untouched;
* nothing of one organization's visit (meeting URL, state, launch) appears in the other's pages.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from types import SimpleNamespace
from urllib.parse import urlsplit

import httpx
import pytest

from hosts.drivers import HostDriver, Reply, starlette_app, starlette_host
from teams_ehr.app import TeamsEhr
from teams_ehr.orgs.approval import ApprovalProof
from teams_ehr.orgs.models import Environment, EnvironmentConfig, Organization, config_hash
from teams_ehr.sansio import run_async
from teams_ehr.smart.discovery import DiscoverySnapshot, discovery_flow
from teams_ehr.teams.identity import MicrosoftIdentity
from teams_ehr.testing.fake_ehr import FakeEhr
from teams_ehr.testing.fake_fhir import FakeFhirServer
from teams_ehr.testing.sandbox import (
    APPROVER_OID,
    CLINICIAN_OID,
    PRACTITIONER,
    SMART_CLIENT_ID,
    TENANT_ID,
    Sandbox,
)

ORG_A = "sandbox-clinic"
ORG_B = "other-clinic"
EHR_B = "https://ehr-b.test/interconnect/api/FHIR/R4"


class TwoOrgs:
    def __init__(self) -> None:
        self.sandbox = Sandbox()
        clock = self.sandbox.clock
        self.fhir_b = FakeFhirServer(
            EHR_B, clock=clock, token_check=lambda t: self.ehr_b.token_info(t) is not None
        )
        self.ehr_b = FakeEhr(EHR_B, clock=clock, fhir_handler=self.fhir_b.handler)
        self.ehr_b.register_client(
            SMART_CLIENT_ID,
            redirect_uris=[self.sandbox.redirect_uri],
            jwks={"keys": [self.sandbox.signer.public_jwk()]},
        )

    async def route(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == urlsplit(EHR_B).hostname:
            await request.aread()
            return self.ehr_b.handler(request)
        return await self.sandbox.route(request)

    def app(self) -> TeamsEhr:
        return self.sandbox.app(http=httpx.AsyncClient(transport=httpx.MockTransport(self.route)))

    def seed_appointment(self, appointment: str) -> tuple[datetime, datetime]:
        """The same appointment id in both EHRs (FHIR ids are unique per server only)."""
        start, end = self.sandbox.seed_appointment(appointment)
        self.fhir_b.seed(
            {"resourceType": "Appointment", "id": appointment, "status": "booked",
             "start": start.isoformat(), "end": end.isoformat(),
             "participant": [{"status": "accepted"}]}
        )  # fmt: skip
        return start, end

    def ehr_requests(self) -> int:
        return len(self.sandbox.ehr.requests) + len(self.ehr_b.requests)


async def _seed_org_b(runtime: TeamsEhr, world: TwoOrgs) -> None:
    config = EnvironmentConfig.model_validate(
        {**world.sandbox.environment_config().model_dump(), "fhir_base": EHR_B}
    )
    org = Organization(
        org_id=ORG_B,
        display_name="Other Clinic",
        tenant_id=TENANT_ID,
        approver_oid=APPROVER_OID,
        test=Environment(config=config),
    )
    org = await runtime.registry.create(org, actor=APPROVER_OID)
    org = await runtime.registry.submit_for_approval(ORG_B, "test", actor=APPROVER_OID)
    smart = await run_async(discovery_flow(EHR_B), runtime.http)
    proof = ApprovalProof(
        canonical_base=EHR_B,
        snapshot=DiscoverySnapshot.of(smart),
        id_token_issuer=world.ehr_b.oidc_issuer,
        signed_in_at=world.sandbox.clock(),
    )
    await runtime.registry.approve(
        ORG_B,
        "test",
        MicrosoftIdentity(tenant_id=TENANT_ID, object_id=APPROVER_OID),
        proof,
        config_hash=config_hash(org, "test"),
    )


@pytest.fixture
def world() -> Iterator[tuple[TwoOrgs, HostDriver]]:
    two = TwoOrgs()
    with starlette_host(two.app(), starlette_app) as driver:
        driver.run(two.sandbox.seed_organization, driver.runtime)
        driver.run(_seed_org_b, driver.runtime, two)
        yield two, driver


def _launch_value(ehr: FakeEhr, appointment: str) -> str:
    return ehr.issue_launch(
        appointment=appointment, encounter="encounter-1", user=PRACTITIONER,
        location="dept-1", login_department="dept-1",
    )  # fmt: skip


def _enter(two: TwoOrgs, driver: HostDriver, org: str, ehr: FakeEhr, appointment: str) -> Reply:
    launch = _launch_value(ehr, appointment)
    started = driver.get(f"/launch/{org}/test", {"iss": ehr.base_url, "launch": launch})
    assert started.status == 302, started.body[:200]
    assert urlsplit(started.location).hostname == urlsplit(ehr.base_url).hostname
    callback = ehr.authorize_in_browser(
        SimpleNamespace(method="GET", url=started.location, fields=())
    )
    reply = driver.get("/callback", callback)
    if reply.status == 302:  # first Microsoft sign-in of this clinician in this org
        two.sandbox.entra.sign_in_as(CLINICIAN_OID)
        reply = driver.get(
            "/microsoft/callback", two.sandbox.entra.authorize_in_browser(reply.location)
        )
    assert reply.status == 303, reply.body[:200]
    return reply


@pytest.mark.parametrize("route", ["launch", "patient"])
def test_launch_org_id_iss_mismatch_rejected(world: tuple[TwoOrgs, HostDriver], route: str) -> None:
    two, driver = world
    before = two.ehr_requests()
    for org, ehr in ((ORG_A, two.ehr_b), (ORG_B, two.sandbox.ehr)):
        launch = _launch_value(ehr, "appt-x")
        reply = driver.get(f"/{route}/{org}/test", {"iss": ehr.base_url, "launch": launch})
        assert reply.status == 400
        assert not reply.location
        assert launch.encode() not in reply.body
    assert two.ehr_requests() == before  # refused before discovery or any token request


def test_same_appointment_in_two_orgs_gives_two_isolated_visits(
    world: tuple[TwoOrgs, HostDriver],
) -> None:
    two, driver = world
    start, end = two.seed_appointment("appt-shared")
    entered_a = _enter(two, driver, ORG_A, two.sandbox.ehr, "appt-shared")
    entered_b = _enter(two, driver, ORG_B, two.ehr_b, "appt-shared")
    assert len(two.sandbox.graph.meetings) == 2
    assert entered_a.location != entered_b.location
    rows = {
        mid: driver.run(driver.runtime.store.find_meeting_by_id, mid)
        for mid in two.sandbox.graph.meetings
    }
    by_org = {row.org_id: row for row in rows.values() if row is not None}
    assert set(by_org) == {ORG_A, ORG_B}
    assert by_org[ORG_A].external_id != by_org[ORG_B].external_id

    async def issue(runtime: TeamsEhr, org: str) -> str:
        return await runtime.visits.meetings.prepare_visit(
            org,
            environment="test",
            visit_key="Appointment/appt-shared",
            ehr_user_id=PRACTITIONER,  # signed in with Microsoft at each organization above
            start=start,
            end=end,
        )

    token_a = driver.run(issue, driver.runtime, ORG_A)
    token_b = driver.run(issue, driver.runtime, ORG_B)
    join_a, join_b = driver.get(f"/j/{token_a}"), driver.get(f"/j/{token_b}")
    assert join_a.location == by_org[ORG_A].join_url
    assert join_b.location == by_org[ORG_B].join_url
    assert join_a.location != join_b.location

    # the roster of each visit only under its own organization's path
    for org, row in ((ORG_B, by_org[ORG_A]), (ORG_A, by_org[ORG_B])):
        reply = driver.get(f"/visits/{org}/{row.external_id}/roster")
        assert reply.status == 403
        assert b"snapshot" not in reply.body


def test_suspending_one_org_stops_only_its_launches(world: tuple[TwoOrgs, HostDriver]) -> None:
    two, driver = world
    two.seed_appointment("appt-s")

    async def suspend(runtime: TeamsEhr) -> None:
        await runtime.registry.suspend(ORG_A, "test", actor=APPROVER_OID, reason="incident")

    driver.run(suspend, driver.runtime)
    before = two.ehr_requests()
    launch = _launch_value(two.sandbox.ehr, "appt-s")
    refused = driver.get(
        f"/launch/{ORG_A}/test", {"iss": two.sandbox.ehr.base_url, "launch": launch}
    )
    assert refused.status == 403  # "virtual visits are paused for this organization"
    assert two.ehr_requests() == before
    assert _enter(two, driver, ORG_B, two.ehr_b, "appt-s").status == 303
