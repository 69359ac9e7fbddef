"""Registry edges that ``nox -s mutants -- orgs/registry.py`` left open (threats T27, T28, T32).

Every write's audit entry is pinned whole (actor, action, detail: the append-only log is what an
auditor reads); the editor each edit records (the self-approval rule reads it); claims that
outlive their environment (a missing environment, an organization that is gone, a suspended
environment) never resolve and never raise; refusals by reason, text and security log line.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from orgs_support import (
    ADMIN_A,
    APPROVER,
    APPROVER_A,
    APPROVER_B,
    BASE_A_PROD,
    BASE_A_TEST,
    BASE_B_TEST,
    NOW,
    TENANT_A,
    FakeClock,
    MemoryOrgStore,
    env_config,
    org_a,
    org_b,
    proof,
)

from teams_ehr.errors import (
    ApprovalRequiredError,
    ConfigurationError,
    StateTransitionError,
    StorageConflictError,
)
from teams_ehr.orgs.models import Organization, config_hash
from teams_ehr.orgs.registry import SYSTEM_ACTOR, OrganizationRegistry
from teams_ehr.store.protocol import IssuerBinding

pytestmark = pytest.mark.anyio

DRAFTS = {"test": "draft", "production": "draft"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the registry is backend-neutral; test_orgs_registry runs both


def _registry(**kw: Any) -> tuple[OrganizationRegistry, MemoryOrgStore]:
    store = MemoryOrgStore()
    return OrganizationRegistry(store, FakeClock(), **kw), store


async def _active(registry: OrganizationRegistry) -> Organization:
    org = await registry.create(org_a(), actor=ADMIN_A)
    org = await registry.submit_for_approval(org.org_id, "test", actor=ADMIN_A)
    return await registry.approve(
        org.org_id, "test", APPROVER, proof(BASE_A_TEST), config_hash=config_hash(org, "test")
    )


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "teams_ehr.orgs.registry" and r.levelno >= logging.WARNING
    ]


def _trail(store: MemoryOrgStore, org_id: str = "hospital-a") -> list[tuple[str, str, Any]]:
    return [(e.actor, e.action, e.detail) for e in store.audit.get(org_id, [])]


# -- tenants and actors ----------------------------------------------------------------------------


async def test_a_bad_tenant_is_refused_by_reason_and_text() -> None:
    registry, _ = _registry()
    await registry.create(org_a(), actor=ADMIN_A)
    for read in (registry.list(tenant_id="nope"), registry.get("hospital-a", tenant_id="nope")):
        with pytest.raises(ConfigurationError) as refused:
            await read
        assert refused.value.reason == "bad_tenant"
        assert str(refused.value) == "tenant_id must be a GUID"


async def test_tenant_reads_normalize_the_guid() -> None:
    registry, _ = _registry()
    await registry.create(org_a(), actor=ADMIN_A)
    await registry.create(org_b(), actor=APPROVER_B)
    assert [o.org_id for o in await registry.list(tenant_id=TENANT_A.upper())] == ["hospital-a"]
    assert await registry.get("hospital-a", tenant_id=TENANT_A.upper()) is not None
    assert [o.org_id for o in await registry.list()] == ["hospital-a", "hospital-b"]


async def test_actors_are_normalized_oids_or_system() -> None:
    registry, store = _registry()
    await registry.create(org_a(), actor=ADMIN_A.upper())
    await registry.submit_for_approval("hospital-a", "test", actor=SYSTEM_ACTOR)
    assert [actor for actor, _, _ in _trail(store)] == [ADMIN_A, "system"]
    with pytest.raises(ConfigurationError) as refused:
        await registry.withdraw("hospital-a", "test", actor="System")
    assert refused.value.reason == "bad_actor"
    assert str(refused.value) == "actor must be an Entra oid or 'system'"


# -- the audit trail of every write ----------------------------------------------------------------


async def test_each_state_change_is_audited_with_its_action_and_new_state() -> None:
    registry, store = _registry()
    await registry.create(org_a(), actor=ADMIN_A)
    submitted = await registry.submit_for_approval("hospital-a", "test", actor=ADMIN_A)
    withdrawn = await registry.withdraw("hospital-a", "test", actor=ADMIN_A)
    assert (submitted.test.state, withdrawn.test.state) == ("pending_approval", "draft")  # type: ignore[union-attr]
    suspended = await registry.suspend("hospital-a", "test", actor=ADMIN_A)
    assert suspended.test.state == "suspended"  # type: ignore[union-attr]
    await registry.suspend("hospital-a", "production", actor=ADMIN_A, reason="incident-7")
    resumed = await registry.resume("hospital-a", "test", actor=ADMIN_A)
    assert resumed.test.state == "pending_approval"  # type: ignore[union-attr]
    assert _trail(store) == [
        (ADMIN_A, "created", {"environments": DRAFTS}),
        (ADMIN_A, "submitted", {"environment": "test", "state": "pending_approval"}),
        (ADMIN_A, "withdrawn", {"environment": "test", "state": "draft"}),
        (ADMIN_A, "suspended", {"environment": "test", "state": "suspended", "reason": "manual"}),
        (
            ADMIN_A,
            "suspended",
            {"environment": "production", "state": "suspended", "reason": "incident-7"},
        ),
        (ADMIN_A, "resumed", {"environment": "test", "state": "pending_approval"}),
    ]
    assert [o.version for o in (submitted, withdrawn, suspended, resumed)] == [2, 3, 4, 6]


async def test_approval_is_audited_with_base_and_hash() -> None:
    registry, store = _registry()
    org = await _active(registry)
    assert org.test is not None
    assert _trail(store)[-1] == (
        APPROVER_A,
        "approved",
        {"environment": "test", "fhir_base": BASE_A_TEST, "config_hash": config_hash(org, "test")},
    )
    assert store.issuers == {BASE_A_TEST: IssuerBinding(BASE_A_TEST, "hospital-a", "test")}


async def test_an_edit_records_the_editor_and_audits_what_changed() -> None:
    registry, store = _registry()
    org = await _active(registry)
    edited = await registry.update(
        "hospital-a",
        expected_version=org.version,
        actor=ADMIN_A.upper(),
        environments={"production": env_config(BASE_A_PROD, env="production", client_id="p2")},
    )
    assert edited.production is not None
    assert edited.test is not None
    assert edited.production.edited_by == ADMIN_A
    assert edited.test.state == "active"  # the other environment is untouched
    assert _trail(store)[-1] == (
        ADMIN_A,
        "edited",
        {
            "environments": {"test": "active", "production": "draft"},
            "changed": ["production"],
        },
    )


async def test_an_organization_edit_records_the_editor_on_every_environment() -> None:
    registry, store = _registry()
    org = await _active(registry)
    assert org.production is not None
    assert org.production.edited_by == ADMIN_A  # the creator
    edited = await registry.update(
        "hospital-a", expected_version=org.version, actor=APPROVER_A, allow_self_approval=False
    )
    assert edited.allow_self_approval is False
    assert edited.test is not None
    assert edited.production is not None
    assert (edited.test.edited_by, edited.production.edited_by) == (APPROVER_A, APPROVER_A)
    assert edited.test.state == "pending_approval"
    assert store.issuers == {}  # the edit released the claim
    assert _trail(store)[-1] == (
        APPROVER_A,
        "edited",
        {
            "environments": {"test": "pending_approval", "production": "draft"},
            "changed": ["test", "production"],
        },
    )


async def test_an_edit_that_changes_nothing_writes_nothing() -> None:
    registry, store = _registry()
    org = await registry.create(org_a(), actor=ADMIN_A)
    same = await registry.update(
        "hospital-a",
        expected_version=org.version,
        actor=ADMIN_A,
        display_name=org.display_name,
        environments={"test": env_config(BASE_A_TEST)},
    )
    assert same == org
    assert len(store.audit["hospital-a"]) == 1


# -- approval refusals -----------------------------------------------------------------------------


async def test_a_refused_approval_is_audited_and_logged_as_a_security_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry, store = _registry()
    org = await registry.create(org_a(), actor=ADMIN_A)
    org = await registry.submit_for_approval("hospital-a", "test", actor=ADMIN_A)
    with (
        caplog.at_level(logging.WARNING, logger="teams_ehr.orgs.registry"),
        pytest.raises(ApprovalRequiredError) as refused,
    ):
        await registry.approve(
            "hospital-a",
            "test",
            None,  # type: ignore[arg-type]
            proof(BASE_A_TEST),
            config_hash=config_hash(org, "test"),
        )
    assert refused.value.reason == "no_approver"
    assert _trail(store)[-1] == (
        "unknown",
        "approval_refused",
        {"environment": "test", "reason": "no_approver"},
    )
    [record] = _warnings(caplog)
    assert record.getMessage() == "organization hospital-a: approval refused: no_approver"
    assert record.security_event == "no_approver"  # type: ignore[attr-defined]


async def test_the_registry_s_proof_age_is_the_one_applied() -> None:
    registry, store = _registry(max_proof_age=timedelta(minutes=1))
    await registry.create(org_a(), actor=ADMIN_A)
    org = await registry.submit_for_approval("hospital-a", "test", actor=ADMIN_A)
    old = proof(BASE_A_TEST, at=NOW - timedelta(minutes=2))  # within the 15-minute default
    with pytest.raises(ApprovalRequiredError) as refused:
        await registry.approve(
            "hospital-a", "test", APPROVER, old, config_hash=config_hash(org, "test")
        )
    assert refused.value.reason == "stale_proof"
    assert _trail(store)[-1][2] == {"environment": "test", "reason": "stale_proof"}
    fresh = proof(BASE_A_TEST, at=NOW - timedelta(minutes=1))  # exactly at the edge
    approved = await registry.approve(
        "hospital-a", "test", APPROVER, fresh, config_hash=config_hash(org, "test")
    )
    assert approved.test is not None
    assert approved.test.state == "active"


# -- claims that outlive their environment ---------------------------------------------------------


async def test_a_claim_for_a_missing_environment_or_organization_resolves_to_nothing() -> None:
    registry, store = _registry()
    await registry.create(org_b(), actor=APPROVER_B)  # hospital-b has no production
    store.issuers[BASE_B_TEST] = IssuerBinding(BASE_B_TEST, "hospital-b", "production")
    assert await registry.resolve_issuer(BASE_B_TEST) is None
    assert await registry.approved_snapshot("hospital-b", "production") is None
    store.issuers[BASE_A_TEST] = IssuerBinding(BASE_A_TEST, "hospital-gone", "test")
    assert await registry.resolve_issuer(BASE_A_TEST) is None
    assert await registry.approved_snapshot("hospital-gone", "test") is None


async def test_a_claim_of_a_suspended_environment_resolves_to_nothing_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry, store = _registry()
    await _active(registry)
    binding = store.issuers[BASE_A_TEST]
    await registry.suspend("hospital-a", "test", actor=ADMIN_A)
    assert store.issuers == {}  # suspension released it
    store.issuers[BASE_A_TEST] = binding  # a release that failed after the write
    with caplog.at_level(logging.WARNING, logger="teams_ehr.orgs.registry"):
        assert await registry.resolve_issuer(BASE_A_TEST) is None
    assert _warnings(caplog) == []
    assert await registry.approved_snapshot("hospital-a", "test") is None


async def test_a_stale_claim_of_an_edited_environment_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry, store = _registry()
    org = await _active(registry)
    document = org.document()
    document["test"]["config"]["client_id"] = "swapped-client"
    await store.put_organization("hospital-a", document, expected_version=org.version)
    with caplog.at_level(logging.WARNING, logger="teams_ehr.orgs.registry"):
        assert await registry.resolve_issuer(BASE_A_TEST) is None
    [record] = _warnings(caplog)
    assert record.getMessage() == (
        "issuer claim of org hospital-a is stale (edited since approval)"
    )


async def test_the_creator_is_recorded_as_the_editor_of_every_environment() -> None:
    """Threat T28: the self-approval rule reads the last editor; creating is editing."""
    registry, _ = _registry()
    created = await registry.create(org_a(allow_self_approval=False), actor=APPROVER_A.upper())
    assert created.test is not None
    assert created.production is not None
    assert (created.test.edited_by, created.production.edited_by) == (APPROVER_A, APPROVER_A)
    stored = await registry.get("hospital-a")
    assert stored == created
    org = await registry.submit_for_approval("hospital-a", "test", actor=ADMIN_A)
    with pytest.raises(ApprovalRequiredError) as refused:
        await registry.approve(
            "hospital-a", "test", APPROVER, proof(BASE_A_TEST), config_hash=config_hash(org, "test")
        )
    assert refused.value.reason == "self_approval"


async def test_an_unknown_organization_is_refused_by_reason_and_text() -> None:
    registry, _ = _registry()
    with pytest.raises(ConfigurationError) as refused:
        await registry.suspend("hospital-a", "test", actor=ADMIN_A)
    assert (refused.value.reason, str(refused.value)) == (
        "unknown_organization",
        "unknown organization",
    )


class _FailingPut(MemoryOrgStore):
    """Fails the next organization write, as a concurrent writer would."""

    fail_next = False

    async def put_organization(self, org_id: str, document: Any, *, expected_version: Any) -> int:
        if self.fail_next:
            self.fail_next = False
            raise StorageConflictError("version mismatch", reason="version_mismatch")
        return await super().put_organization(org_id, document, expected_version=expected_version)


async def test_a_failed_write_keeps_the_claims_the_organization_already_held() -> None:
    """Threat T27: undoing a failed write releases only what that write claimed."""
    store = _FailingPut()
    registry = OrganizationRegistry(store, FakeClock())
    await _active(registry)
    held = dict(store.issuers)
    store.fail_next = True
    with pytest.raises(StorageConflictError):
        await registry.suspend("hospital-a", "production", actor=ADMIN_A)
    assert store.issuers == held
    assert await registry.resolve_issuer(BASE_A_TEST) == held[BASE_A_TEST]


async def test_a_stale_version_is_refused_by_reason_and_text_and_nothing_is_written() -> None:
    registry, store = _registry()
    org = await registry.create(org_a(), actor=ADMIN_A)
    with pytest.raises(StorageConflictError) as refused:
        await registry.update(
            "hospital-a", expected_version=org.version + 1, actor=ADMIN_A, display_name="B"
        )
    assert (refused.value.reason, str(refused.value)) == (
        "version_mismatch",
        "organization version mismatch",
    )
    assert await registry.get("hospital-a") == org
    assert len(store.audit["hospital-a"]) == 1


async def test_every_audited_change_is_logged_with_organization_and_action(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry, _ = _registry()
    with caplog.at_level(logging.INFO, logger="teams_ehr.orgs.registry"):
        await registry.create(org_a(), actor=ADMIN_A)
        await registry.submit_for_approval("hospital-a", "test", actor=ADMIN_A)
    messages = [
        r.getMessage()
        for r in caplog.records
        if r.name == "teams_ehr.orgs.registry" and r.levelno == logging.INFO
    ]
    assert messages == ["organization hospital-a: created", "organization hospital-a: submitted"]


async def test_a_new_organization_must_start_as_drafts_by_reason_and_text() -> None:
    registry, store = _registry()
    pending = org_a().model_copy(
        update={"test": org_a().test.model_copy(update={"state": "pending_approval"})}  # type: ignore[union-attr]
    )
    with pytest.raises(StateTransitionError) as refused:
        await registry.create(pending, actor=ADMIN_A)
    assert (refused.value.reason, str(refused.value)) == (
        "illegal_transition",
        "a new organization's environments start as drafts",
    )
    assert store.rows == {}
    assert store.audit == {}


async def test_a_lost_write_or_a_claimed_base_refuses_the_approval_with_an_audit_entry() -> None:
    """Threat T27: the second organization for a base is refused, audited with its reason."""
    store = _FailingPut()
    registry = OrganizationRegistry(store, FakeClock())
    await registry.create(org_a(), actor=ADMIN_A)
    org = await registry.submit_for_approval("hospital-a", "test", actor=ADMIN_A)
    store.fail_next = True
    with pytest.raises(StorageConflictError):
        await registry.approve(
            "hospital-a", "test", APPROVER, proof(BASE_A_TEST), config_hash=config_hash(org, "test")
        )
    assert _trail(store)[-1] == (
        APPROVER_A,
        "approval_refused",
        {"environment": "test", "reason": "version_mismatch"},
    )
    store.issuers[BASE_A_TEST] = IssuerBinding(BASE_A_TEST, "hospital-b", "test")
    with pytest.raises(StorageConflictError) as refused:
        await registry.approve(
            "hospital-a", "test", APPROVER, proof(BASE_A_TEST), config_hash=config_hash(org, "test")
        )
    assert refused.value.reason == "issuer_claimed"
    assert _trail(store)[-1][2] == {"environment": "test", "reason": "issuer_claimed"}


class _CountingReads(MemoryOrgStore):
    reads = 0

    async def get_organization(self, org_id: str) -> Any:
        self.reads += 1
        return await super().get_organization(org_id)


async def test_resolve_issuer_uses_the_organization_read_in_this_request_only_if_named() -> None:
    store = _CountingReads()
    registry = OrganizationRegistry(store, FakeClock())
    active = await _active(registry)
    await registry.create(org_b(), actor=APPROVER_B)
    store.reads = 0
    binding = await registry.resolve_issuer(BASE_A_TEST, known=active)
    assert binding == IssuerBinding(BASE_A_TEST, "hospital-a", "test")
    assert store.reads == 0
    assert active.test is not None
    suspended = active.model_copy(
        update={"test": active.test.model_copy(update={"state": "suspended"})}
    )
    assert await registry.resolve_issuer(BASE_A_TEST, known=suspended) is None  # as read
    assert store.reads == 0
    other = await registry.get("hospital-b")
    store.reads = 0
    assert await registry.resolve_issuer(BASE_A_TEST, known=other) == binding
    assert store.reads == 1  # another organization: the bound one is read


async def test_approved_snapshot_of_an_organization_already_read() -> None:
    registry, _ = _registry()
    active = await _active(registry)
    assert active.test is not None
    snapshot = active.test.approved_snapshot
    assert snapshot is not None
    assert OrganizationRegistry.approved_snapshot_of(active, "test") == snapshot
    assert await registry.approved_snapshot("hospital-a", "test") == snapshot
    assert OrganizationRegistry.approved_snapshot_of(None, "test") is None
    assert OrganizationRegistry.approved_snapshot_of(active, "production") is None  # a draft
    assert OrganizationRegistry.approved_snapshot_of(org_b(), "production") is None  # missing
    document = active.document()
    document["test"]["config"]["client_id"] = "swapped-client"
    edited = Organization.model_validate({**document, "version": active.version})
    assert OrganizationRegistry.approved_snapshot_of(edited, "test") is None
