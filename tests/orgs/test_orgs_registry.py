"""C1 / security.md T27, T28: the registry over a store — claims, audit, launch resolution."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from orgs_support import (
    ADMIN_A,
    APPROVER,
    APPROVER_A,
    APPROVER_B,
    BASE_A_PROD,
    BASE_A_TEST,
    BASE_B_TEST,
    TENANT_A,
    TENANT_B,
    FakeClock,
    MemoryOrgStore,
    env_config,
    identity,
    open_store,
    org_a,
    org_b,
    proof,
    snapshot,
)

from teams_ehr.errors import (
    ApprovalRequiredError,
    ConfigurationError,
    CrossTenantDeniedError,
    StateTransitionError,
    StorageConflictError,
    UntrustedIssuerError,
)
from teams_ehr.orgs.models import Organization, config_hash
from teams_ehr.orgs.registry import OrganizationRegistry
from teams_ehr.smart.launch import IssuerResolver, admit_launch, parse_launch_request
from teams_ehr.store.protocol import IssuerBinding

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "sqlite"])
def kind(request: pytest.FixtureRequest, anyio_backend: str) -> str:
    return str(request.param)


async def approved_a(registry: OrganizationRegistry, env: Any = "test") -> Organization:
    org = await registry.get("hospital-a")
    if org is None:
        org = await registry.create(org_a(), actor=ADMIN_A)
    current = org.environment(env)
    if current is not None and current.state == "draft":
        org = await registry.submit_for_approval("hospital-a", env, actor=ADMIN_A)
    base = BASE_A_TEST if env == "test" else BASE_A_PROD
    return await registry.approve(
        "hospital-a", env, APPROVER, proof(base), config_hash=config_hash(org, env)
    )


async def test_create_submit_approve_resolve(kind: str) -> None:
    clock = FakeClock()
    async with open_store(kind, clock) as store:
        registry = OrganizationRegistry(store, clock)
        resolver: IssuerResolver = registry  # structural: the launch code takes this
        assert resolver is registry
        created = await registry.create(org_a(), actor=ADMIN_A)
        assert created.version == 1
        assert await registry.resolve_issuer(BASE_A_TEST) is None  # draft
        await registry.submit_for_approval("hospital-a", "test", actor=ADMIN_A)
        assert await registry.resolve_issuer(BASE_A_TEST) is None  # pending
        approved = await approved_a(registry)
        assert approved.version == 3  # create, submit, approve
        assert await registry.resolve_issuer(BASE_A_TEST) == IssuerBinding(
            BASE_A_TEST, "hospital-a", "test"
        )
        assert await registry.resolve_issuer(BASE_A_PROD) is None  # production still a draft
        assert await registry.approved_snapshot("hospital-a", "test") == snapshot(BASE_A_TEST)
        assert await registry.approved_snapshot("hospital-a", "production") is None
        stored = await registry.get("hospital-a")
        assert stored == approved


async def test_launch_blocked_until_active(kind: str) -> None:
    """A1 end to end: the launch admission uses the registry as its IssuerResolver."""
    clock = FakeClock()
    async with open_store(kind, clock) as store:
        registry = OrganizationRegistry(store, clock)
        await registry.create(org_a(), actor=ADMIN_A)
        launch = parse_launch_request({"iss": BASE_A_TEST + "/", "launch": "abc123"})
        with pytest.raises(UntrustedIssuerError):
            await admit_launch(launch, registry)
        await approved_a(registry)
        _, binding = await admit_launch(launch, registry)  # benign variant → same org
        assert binding.org_id == "hospital-a"


async def test_approval_audit_event_written(kind: str) -> None:
    clock = FakeClock()
    async with open_store(kind, clock) as store:
        registry = OrganizationRegistry(store, clock)
        await approved_a(registry)
        with pytest.raises(StateTransitionError):  # production is still a draft
            await registry.approve(
                "hospital-a", "production", identity(TENANT_A, ADMIN_A), None, config_hash="x"
            )
        entries = await registry.audit_log("hospital-a")
        assert [(e.seq, e.actor, e.action) for e in entries] == [
            (1, ADMIN_A, "created"),
            (2, ADMIN_A, "submitted"),
            (3, APPROVER_A, "approved"),
            (4, ADMIN_A, "approval_refused"),
        ]
        assert entries[2].detail["config_hash"] == config_hash(
            await registry.get("hospital-a"),  # type: ignore[arg-type]
            "test",
        )
        assert entries[3].detail == {"environment": "production", "reason": "illegal_transition"}
        assert "token" not in json.dumps([e.detail for e in entries]).lower()


async def test_edit_after_approval_stops_launches_and_releases_claim(kind: str) -> None:
    clock = FakeClock()
    async with open_store(kind, clock) as store:
        registry = OrganizationRegistry(store, clock)
        org = await approved_a(registry)
        edited = await registry.update(
            "hospital-a",
            expected_version=org.version,
            actor=ADMIN_A,
            environments={"test": env_config(BASE_A_TEST, writer="audit_event")},
        )
        assert edited.test is not None
        assert edited.test.state == "pending_approval"
        assert await registry.resolve_issuer(BASE_A_TEST) is None
        assert await store.resolve_issuer(BASE_A_TEST) is None  # claim released
        assert await registry.approved_snapshot("hospital-a", "test") is None
        # The old hash cannot approve the new configuration.
        with pytest.raises(ApprovalRequiredError):
            await registry.approve(
                "hospital-a",
                "test",
                APPROVER,
                proof(BASE_A_TEST),
                config_hash=config_hash(org, "test"),
            )
        again = await registry.approve(
            "hospital-a",
            "test",
            APPROVER,
            proof(BASE_A_TEST),
            config_hash=config_hash(edited, "test"),
        )
        assert again.test is not None
        assert again.test.state == "active"
        assert await registry.resolve_issuer(BASE_A_TEST) is not None


async def test_edited_since_approval_never_resolves_even_with_a_stale_claim(kind: str) -> None:
    """The store still holds the claim and the document still says active, but the config
    changed underneath (a bypass of the registry): the hash check refuses the launch."""
    clock = FakeClock()
    async with open_store(kind, clock) as store:
        registry = OrganizationRegistry(store, clock)
        org = await approved_a(registry)
        document = org.document()
        document["test"]["config"]["client_id"] = "swapped-client"
        await store.put_organization("hospital-a", document, expected_version=org.version)
        assert await store.resolve_issuer(BASE_A_TEST) is not None
        assert await registry.resolve_issuer(BASE_A_TEST) is None
        assert await registry.approved_snapshot("hospital-a", "test") is None


async def test_second_org_same_iss_conflict(kind: str) -> None:
    clock = FakeClock()
    async with open_store(kind, clock) as store:
        registry = OrganizationRegistry(store, clock)
        await approved_a(registry)
        b = await registry.create(org_b(base=BASE_A_TEST), actor=APPROVER_B)
        await registry.submit_for_approval("hospital-b", "test", actor=APPROVER_B)
        approver_b = identity(TENANT_B, APPROVER_B)
        with pytest.raises(StorageConflictError) as info:
            await registry.approve(
                "hospital-b",
                "test",
                approver_b,
                proof(BASE_A_TEST),
                config_hash=config_hash(b, "test"),
            )
        assert info.value.reason == "issuer_claimed"
        assert (await store.resolve_issuer(BASE_A_TEST)).org_id == "hospital-a"  # type: ignore[union-attr]
        b_now = await registry.get("hospital-b")
        assert b_now is not None
        assert b_now.test is not None
        assert b_now.test.state == "pending_approval"
        refused = (await registry.audit_log("hospital-b"))[-1]
        assert (refused.action, refused.detail["reason"]) == ("approval_refused", "issuer_claimed")
        # Once A suspends, the base is free for B (after review).
        await registry.suspend("hospital-a", "test", actor=APPROVER_A, reason="moved")
        await registry.approve(
            "hospital-b", "test", approver_b, proof(BASE_A_TEST), config_hash=config_hash(b, "test")
        )
        assert (await registry.resolve_issuer(BASE_A_TEST)).org_id == "hospital-b"  # type: ignore[union-attr]


async def test_suspend_and_resume(kind: str) -> None:
    clock = FakeClock()
    async with open_store(kind, clock) as store:
        registry = OrganizationRegistry(store, clock)
        await approved_a(registry)
        suspended = await registry.suspend("hospital-a", "test", actor="system", reason="metadata")
        assert suspended.test is not None
        assert suspended.test.state == "suspended"
        assert await registry.resolve_issuer(BASE_A_TEST) is None
        assert await store.resolve_issuer(BASE_A_TEST) is None
        with pytest.raises(StateTransitionError):
            await registry.suspend("hospital-a", "test", actor="system")
        resumed = await registry.resume("hospital-a", "test", actor=ADMIN_A)
        assert resumed.test is not None
        assert resumed.test.state == "pending_approval"
        assert await registry.resolve_issuer(BASE_A_TEST) is None
        entry = (await registry.audit_log("hospital-a"))[3]
        assert (entry.actor, entry.action, entry.detail["reason"]) == (
            "system",
            "suspended",
            "metadata",
        )


async def test_bypass_attempts_through_the_registry(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    async with open_store(kind, clock) as store:
        caplog.set_level(logging.INFO, logger="teams_ehr")
        registry = OrganizationRegistry(store, clock)
        org = await registry.create(org_a(), actor=ADMIN_A)
        digest = config_hash(org, "test")
        attempts: list[tuple[Any, Any, type[Exception]]] = [
            (identity(TENANT_A, APPROVER_A), proof(BASE_A_TEST), StateTransitionError),  # draft
        ]
        for approver, signed, error in attempts:
            with pytest.raises(error):
                await registry.approve("hospital-a", "test", approver, signed, config_hash=digest)
        await registry.submit_for_approval("hospital-a", "test", actor=ADMIN_A)
        for approver, signed, error in [
            (identity(TENANT_A, ADMIN_A), proof(BASE_A_TEST), ApprovalRequiredError),
            (identity(TENANT_B, APPROVER_A), proof(BASE_A_TEST), CrossTenantDeniedError),
            (APPROVER, None, ApprovalRequiredError),
            (APPROVER, proof(BASE_A_PROD), ApprovalRequiredError),
            (APPROVER, proof(BASE_B_TEST), ApprovalRequiredError),
        ]:
            with pytest.raises(error):
                await registry.approve("hospital-a", "test", approver, signed, config_hash=digest)
        assert await registry.resolve_issuer(BASE_A_TEST) is None
        reasons = [e.detail.get("reason") for e in await registry.audit_log("hospital-a")]
        assert reasons.count(None) == 2  # created, submitted
        events = [r.security_event for r in caplog.records if hasattr(r, "security_event")]
        assert events == [r for r in reasons if r is not None]  # one security event per refusal
        assert set(reasons) - {None} == {
            "illegal_transition",
            "not_designated_approver",
            "approver_other_tenant",
            "smart_proof_required",
            "proof_other_base",
        }


async def test_optimistic_versions(kind: str) -> None:
    clock = FakeClock()
    async with open_store(kind, clock) as store:
        registry = OrganizationRegistry(store, clock)
        org = await registry.create(org_a(), actor=ADMIN_A)
        with pytest.raises(StorageConflictError):
            await registry.create(org_a(), actor=ADMIN_A)
        first = await registry.update(
            "hospital-a", expected_version=org.version, actor=ADMIN_A, display_name="New name"
        )
        assert first.version == org.version + 1
        with pytest.raises(StorageConflictError):
            await registry.update(
                "hospital-a", expected_version=org.version, actor=ADMIN_A, display_name="Lost"
            )
        assert (await registry.get("hospital-a")).display_name == "New name"  # type: ignore[union-attr]
        same = await registry.update("hospital-a", expected_version=first.version, actor=ADMIN_A)
        assert same.version == first.version  # nothing changed, nothing written


async def test_new_approver_needs_new_approval(kind: str) -> None:
    clock = FakeClock()
    async with open_store(kind, clock) as store:
        registry = OrganizationRegistry(store, clock)
        org = await approved_a(registry)
        other = "c1c1c1c1-0000-4000-8000-00000000c001"
        changed = await registry.update(
            "hospital-a", expected_version=org.version, actor=ADMIN_A, approver_oid=other
        )
        assert changed.test is not None
        assert changed.test.state == "pending_approval"
        assert await registry.resolve_issuer(BASE_A_TEST) is None
        with pytest.raises(ApprovalRequiredError):  # the former approver no longer can
            await registry.approve(
                "hospital-a",
                "test",
                APPROVER,
                proof(BASE_A_TEST),
                config_hash=config_hash(changed, "test"),
            )


async def test_cross_organization_reads_return_nothing(kind: str) -> None:
    clock = FakeClock()
    async with open_store(kind, clock) as store:
        registry = OrganizationRegistry(store, clock)
        await approved_a(registry)
        await registry.create(org_b(), actor=APPROVER_B)
        assert await registry.get("hospital-b", tenant_id=TENANT_A) is None
        assert await registry.get("hospital-a", tenant_id=TENANT_B) is None
        assert (await registry.get("hospital-a", tenant_id=TENANT_A.upper())) is not None
        assert [o.org_id for o in await registry.list(tenant_id=TENANT_A)] == ["hospital-a"]
        assert [o.org_id for o in await registry.list(tenant_id=TENANT_B)] == ["hospital-b"]
        assert len(await registry.list()) == 2
        assert await registry.get("hospital-c") is None
        assert await registry.approved_snapshot("hospital-b", "test") is None
        assert await registry.approved_snapshot("hospital-c", "test") is None
        assert await registry.resolve_issuer(BASE_B_TEST) is None
        assert await registry.audit_log("hospital-c") == []


async def test_misuse_is_typed(kind: str) -> None:
    clock = FakeClock()
    async with open_store(kind, clock) as store:
        registry = OrganizationRegistry(store, clock)
        with pytest.raises(ConfigurationError):
            await registry.submit_for_approval("nope", "test", actor=ADMIN_A)
        with pytest.raises(ConfigurationError):
            await registry.create(org_a(), actor="alice@example.com")
        with pytest.raises(ConfigurationError):
            await registry.list(tenant_id="not-a-guid")
        active = org_a().model_copy(
            update={"test": org_a().test.model_copy(update={"state": "active"})}
        )  # type: ignore[union-attr]
        with pytest.raises(StateTransitionError):
            await registry.create(active, actor=ADMIN_A)
        assert repr(registry) == "<OrganizationRegistry>"


class FailingPutStore(MemoryOrgStore):
    """Fails the next organization write, as a concurrent writer would."""

    fail_next = False

    async def put_organization(self, org_id: str, document: Any, *, expected_version: Any) -> int:
        if self.fail_next:
            self.fail_next = False
            raise StorageConflictError("version mismatch", reason="version_mismatch")
        return await super().put_organization(org_id, document, expected_version=expected_version)


async def test_claim_is_undone_when_the_write_fails() -> None:
    clock = FakeClock()
    store = FailingPutStore()
    registry = OrganizationRegistry(store, clock)
    org = await registry.create(org_a(), actor=ADMIN_A)
    org = await registry.submit_for_approval("hospital-a", "test", actor=ADMIN_A)
    store.fail_next = True
    with pytest.raises(StorageConflictError):
        await registry.approve(
            "hospital-a", "test", APPROVER, proof(BASE_A_TEST), config_hash=config_hash(org, "test")
        )
    assert store.issuers == {}
    assert (await registry.get("hospital-a")).test.state == "pending_approval"  # type: ignore[union-attr]
    assert (await registry.audit_log("hospital-a"))[-1].action == "approval_refused"


OPERATIONS = ["edit", "submit", "approve", "suspend", "resume", "withdraw", "rename"]


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=st.lists(st.sampled_from(OPERATIONS), max_size=12))
async def test_operations_on_one_org_never_touch_another(operations: list[str]) -> None:
    clock = FakeClock()
    store = MemoryOrgStore()
    registry = OrganizationRegistry(store, clock)
    await registry.create(org_a(), actor=ADMIN_A)
    await registry.create(org_b(), actor=APPROVER_B)
    b_row, b_audit = store.rows["hospital-b"], list(store.audit["hospital-b"])
    for step, operation in enumerate(operations):
        org = await registry.get("hospital-a")
        assert org is not None
        try:
            if operation == "edit":
                config = env_config(BASE_A_TEST, client_id=f"c{step}")
                await registry.update(
                    "hospital-a",
                    expected_version=org.version,
                    actor=ADMIN_A,
                    environments={"test": config},
                )
            elif operation == "rename":
                await registry.update(
                    "hospital-a",
                    expected_version=org.version,
                    actor=ADMIN_A,
                    display_name=f"A {step}",
                )
            elif operation == "approve":
                await registry.approve(
                    "hospital-a",
                    "test",
                    APPROVER,
                    proof(BASE_A_TEST),
                    config_hash=config_hash(org, "test"),
                )
            else:
                method = {
                    "submit": registry.submit_for_approval,
                    "suspend": registry.suspend,
                    "resume": registry.resume,
                    "withdraw": registry.withdraw,
                }[operation]
                await method("hospital-a", "test", actor=ADMIN_A)
        except StateTransitionError:
            pass
        org = await registry.get("hospital-a")
        assert org is not None
        active = org.test is not None and org.test.state == "active"
        assert (await registry.resolve_issuer(BASE_A_TEST) is not None) is active
        assert (BASE_A_TEST in store.issuers) is active
    assert store.rows["hospital-b"] == b_row
    assert store.audit["hospital-b"] == b_audit
    assert await registry.resolve_issuer(BASE_B_TEST) is None
