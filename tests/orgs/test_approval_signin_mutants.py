"""The approver's three steps at their edges, from ``nox -s mutants -- orgs/approval_signin.py``.

Threat T28 (docs/security.md) and docs/guides/ehr-analyst.md: only the designated approver, of a
pending environment, at its current hash, may start; only the EHR sign-in of the approval started,
at that organization's exact base, becomes a proof; the proof's issuer is the id_token's ``iss``
verified again against the discovered ``jwks_uri`` (OpenID Connect Core 1.0 §3.1.3.7). Every
refusal is pinned by reason, by the text the approver reads, by its audit entry and by its log
line. The steps run here on :class:`ApprovalSignin` itself against FakeEhr, no console pages.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from orgs_support import (
    ADMIN_A,
    APPROVER,
    APPROVER_A,
    BASE_A_TEST,
    NOW,
    TENANT_A,
    FakeClock,
    MemoryOrgStore,
    env_config,
    identity,
    org_a,
)
from pydantic import SecretStr

from teams_ehr.errors import ApprovalRequiredError
from teams_ehr.orgs.approval_signin import ApprovalSignin
from teams_ehr.orgs.console_sessions import AdminSession, AdminSessions, ApprovalStep
from teams_ehr.orgs.models import EnvironmentName, Organization, config_hash
from teams_ehr.orgs.registry import OrganizationRegistry
from teams_ehr.smart.context import build_launch_context
from teams_ehr.smart.discovery import DiscoveryCache
from teams_ehr.smart.flows import LaunchResult
from teams_ehr.smart.jwks import JwksCache
from teams_ehr.smart.tokens import TokenResponse
from teams_ehr.testing.fake_ehr import FakeEhr
from teams_ehr.web import WebResponse, redirect

pytestmark = pytest.mark.anyio

BROWSER = "browser-1"
CLIENT = "hospital-a-test-client"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the steps are backend-neutral; the admin tests run both


class _Rows:
    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, bytes, datetime]] = {}

    async def put_pending(
        self, key: str, *, org_id: str, payload: bytes, expires_at: datetime
    ) -> None:
        self.rows[key] = (org_id, payload, expires_at)

    async def take_pending(self, key: str, *, now: datetime) -> tuple[str, bytes] | None:
        row = self.rows.pop(key, None)
        return None if row is None or row[2] <= now else (row[0], row[1])


@dataclass
class _Visits:
    """The StandaloneStarter: records what it was asked to start."""

    started: list[tuple[str, str, str]] = field(default_factory=list)

    async def begin_standalone(
        self, org_id: str, environment: EnvironmentName, *, session_id: str
    ) -> WebResponse:
        self.started.append((org_id, environment, session_id))
        return redirect("https://ehr.example/authorize", status=302)


@dataclass
class _World:
    fake: FakeEhr
    store: MemoryOrgStore
    registry: OrganizationRegistry
    sessions: AdminSessions
    visits: _Visits
    steps: ApprovalSignin

    async def session(self) -> AdminSession:
        session = await self.sessions.current(BROWSER)
        assert session is not None
        return session

    def refusals(self, org_id: str = "hospital-a") -> list[tuple[str, Any]]:
        return [
            (e.actor, e.detail)
            for e in self.store.audit.get(org_id, [])
            if e.action == "approval_refused"
        ]


@asynccontextmanager
async def _world(*, who: str = APPROVER_A, **org: Any) -> AsyncIterator[_World]:
    clock = FakeClock()
    fake = FakeEhr(BASE_A_TEST, clock=clock)
    store = MemoryOrgStore()
    registry = OrganizationRegistry(store, clock)
    await registry.create(org_a(**org), actor=ADMIN_A)
    sessions = AdminSessions(_Rows(), clock=clock)
    session = AdminSession(
        identity=identity(TENANT_A, who),
        csrf=SecretStr("form-token"),
        expires_at=NOW + timedelta(hours=1),
    )
    await sessions.replace(BROWSER, session)
    visits = _Visits()
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as http:
        steps = ApprovalSignin(
            sessions=sessions,
            audit=store,
            registry=registry,
            visits=visits,
            jwks=JwksCache(clock=clock),
            discovery=DiscoveryCache(clock=clock),
            http=http,
            clock=clock,
            token_factory=lambda: "approval-1",
        )
        yield _World(fake, store, registry, sessions, visits, steps)


async def _pending(world: _World) -> Organization:
    return await world.registry.submit_for_approval("hospital-a", "test", actor=ADMIN_A)


def _result(world: _World, *, org_id: str = "hospital-a", **token: Any) -> LaunchResult:
    id_token = world.fake.id_token(CLIENT, "analyst-1", nonce=None)
    body = {"access_token": "at", "token_type": "Bearer", "id_token": id_token, **token}
    return LaunchResult(
        org_id=org_id,
        issuer=BASE_A_TEST,
        context=build_launch_context({}, None),
        token=TokenResponse.model_validate({k: v for k, v in body.items() if v is not None}),
    )


async def _begin(world: _World, org: Organization) -> None:
    session = await world.session()
    await world.steps.begin(BROWSER, session, org, "test", reviewed_hash=config_hash(org, "test"))


# -- step 1 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "reason"),
    [("draft", "not_pending"), ("missing", "not_pending"), ("admin", "not_designated_approver")],
)
async def test_who_and_what_may_start_an_approval(
    setup: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    who = ADMIN_A if setup == "admin" else APPROVER_A
    async with _world(who=who, production=None) as world:
        org = await _pending(world) if setup != "draft" else await world.registry.get("hospital-a")
        assert org is not None
        environment: EnvironmentName = "production" if setup == "missing" else "test"
        session = await world.session()
        with (
            caplog.at_level(logging.WARNING, logger="teams_ehr.orgs.approval_signin"),
            pytest.raises(ApprovalRequiredError) as refused,
        ):
            await world.steps.begin(
                BROWSER, session, org, environment, reviewed_hash=config_hash(org, "test")
            )
        assert refused.value.reason == reason
        assert str(refused.value) == "this approval cannot start"
        assert world.refusals() == [(who, {"environment": environment, "reason": reason})]
        [record] = [
            r
            for r in caplog.records
            if r.name == "teams_ehr.orgs.approval_signin" and r.levelno >= logging.WARNING
        ]
        assert record.getMessage() == f"approval refused (org hospital-a, {environment}): {reason}"
        assert world.visits.started == []
        assert (await world.session()).approval is None


async def test_a_started_approval_is_recorded_then_the_ehr_sign_in_begins() -> None:
    async with _world() as world:
        org = await _pending(world)
        await _begin(world, org)
        assert (await world.session()).approval == ApprovalStep(
            org_id="hospital-a",
            environment="test",
            reviewed_hash=config_hash(org, "test"),
            approval_id="approval-1",
        )
        assert world.visits.started == [("hospital-a", "test", BROWSER)]
        assert repr(world.steps) == "<ApprovalSignin>"


# -- step 2 ------------------------------------------------------------------------------------------


async def test_an_ehr_sign_in_without_an_approval_in_progress_is_refused() -> None:
    async with _world() as world:
        org = await _pending(world)
        with pytest.raises(ApprovalRequiredError) as refused:
            await world.steps.prove(BROWSER, await world.session(), org, "test", _result(world))
        assert refused.value.reason == "no_approval"
        assert str(refused.value) == "no approval is in progress"
        assert world.refusals() == [(APPROVER_A, {"environment": "test", "reason": "no_approval"})]


@pytest.mark.parametrize("mismatch", ["org_id", "issuer"])
async def test_an_ehr_sign_in_for_another_org_or_base_is_no_proof(mismatch: str) -> None:
    async with _world() as world:
        org = await _pending(world)
        await _begin(world, org)
        result = _result(world, org_id="hospital-b" if mismatch == "org_id" else "hospital-a")
        if mismatch == "issuer":
            result = result.model_copy(update={"issuer": "https://other.example/fhir"})
        with pytest.raises(ApprovalRequiredError) as refused:
            await world.steps.prove(BROWSER, await world.session(), org, "test", result)
        assert refused.value.reason == "proof_other_base"
        assert str(refused.value) == "the EHR sign-in was against another base"
        assert world.refusals() == [
            (APPROVER_A, {"environment": "test", "reason": "proof_other_base"})
        ]
        step = (await world.session()).approval
        assert step is not None
        assert step.proof is None


@pytest.mark.parametrize("epic", [None, "epic-app-id"])
async def test_the_proof_is_discovered_afresh_with_the_epic_client_id_header(
    epic: str | None,
) -> None:
    """fhir.epic.com/Documentation?docId=oauth2: discovery names the client when the
    environment has an Epic client id (the value sent is the environment's client id)."""
    config = env_config(BASE_A_TEST, epic_client_id=epic)
    async with _world(test={"config": config}) as world:
        org = await _pending(world)
        await _begin(world, org)
        await world.steps.prove(BROWSER, await world.session(), org, "test", _result(world))
        [discovery] = world.fake.calls("smart-configuration")
        assert discovery.headers.get("Epic-Client-ID") == (CLIENT if epic else None)
        step = (await world.session()).approval
        assert step is not None
        assert step.proof is not None
        assert step.proof.canonical_base == BASE_A_TEST
        assert step.proof.id_token_issuer == world.fake.oidc_issuer
        assert step.proof.signed_in_at == NOW
        assert len(world.fake.calls("jwks")) == 1


@pytest.mark.parametrize("missing", ["issuer", "jwks_uri"])
async def test_without_issuer_or_jwks_uri_the_proof_names_no_issuer(missing: str) -> None:
    async with _world() as world:
        world.fake.smart_configuration_overrides[missing] = None
        org = await _pending(world)
        await _begin(world, org)
        await world.steps.prove(BROWSER, await world.session(), org, "test", _result(world))
        step = (await world.session()).approval
        assert step is not None
        assert step.proof is not None
        assert step.proof.id_token_issuer is None
        assert world.fake.calls("jwks") == []


async def test_an_id_token_that_does_not_verify_names_no_issuer() -> None:
    async with _world() as world:
        org = await _pending(world)
        await _begin(world, org)
        forged = jwt.encode(
            {"iss": world.fake.oidc_issuer, "aud": CLIENT, "sub": "x"}, "k" * 32, "HS256"
        )
        result = _result(world, id_token=forged)
        await world.steps.prove(BROWSER, await world.session(), org, "test", result)
        step = (await world.session()).approval
        assert step is not None
        assert step.proof is not None
        assert step.proof.id_token_issuer is None
        no_id = _result(world, id_token=None)
        await world.steps.prove(BROWSER, await world.session(), org, "test", no_id)
        step = (await world.session()).approval
        assert step is not None
        assert step.proof is not None
        assert step.proof.id_token_issuer is None


# -- step 3 ------------------------------------------------------------------------------------------


async def test_the_proof_is_used_once_and_only_for_its_approval() -> None:
    async with _world() as world:
        org = await _pending(world)
        await _begin(world, org)
        await world.steps.prove(BROWSER, await world.session(), org, "test", _result(world))
        for wrong in (None, "", "approval-2"):
            with pytest.raises(ApprovalRequiredError) as refused:
                await world.steps.approve(
                    BROWSER, await world.session(), "hospital-a", "test", approval_id=wrong
                )
            assert refused.value.reason == "smart_proof_required"
            assert (await world.session()).approval is None  # the step is gone either way
            await _begin(world, org)
            await world.steps.prove(BROWSER, await world.session(), org, "test", _result(world))
        approved = await world.steps.approve(
            BROWSER, await world.session(), "hospital-a", "test", approval_id="approval-1"
        )
        assert approved.test is not None
        assert approved.test.state == "active"
        assert approved.test.approved_by == APPROVER.object_id
