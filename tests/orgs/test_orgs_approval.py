"""C1 / security.md T28: the approval state machine as data, every state × event, and bypasses."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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
    TENANT_B,
    env_config,
    identity,
    org_a,
    proof,
    snapshot,
)
from pydantic import ValidationError

from teams_ehr.errors import (
    ApprovalRequiredError,
    ConfigurationError,
    CrossTenantDeniedError,
    StateTransitionError,
)
from teams_ehr.orgs.approval import (
    TRANSITIONS,
    ApprovalEvent,
    ApprovalProof,
    apply_approval,
    apply_edit,
    apply_event,
    apply_org_edit,
    next_state,
)
from teams_ehr.orgs.models import ApprovalState, Organization, config_hash

STATES: tuple[ApprovalState, ...] = get_args(ApprovalState)
EVENTS: tuple[ApprovalEvent, ...] = get_args(ApprovalEvent)


def approve(org: Organization, **kw: Any) -> Organization:
    return apply_approval(
        org,
        "test",
        kw.pop("approver", APPROVER),
        kw.pop("proof", proof(BASE_A_TEST)),
        expected_config_hash=kw.pop("expected", config_hash(org, "test")),
        now=kw.pop("now", NOW),
        **kw,
    )


def in_state(state: ApprovalState) -> Organization:
    org = org_a()
    if state == "draft":
        return org
    org = apply_event(org, "test", "submit")
    if state == "pending_approval":
        return org
    if state == "active":
        return approve(org)
    return apply_event(org, "test", "suspend")


def fire(org: Organization, event: ApprovalEvent, step: int = 0) -> Organization:
    if event == "approve":
        return approve(org)
    if event == "edit":
        return apply_edit(
            org, "test", env_config(BASE_A_TEST, client_id=f"edit-{step}"), actor=ADMIN_A
        )
    return apply_event(org, "test", event)


def state_of(org: Organization) -> ApprovalState:
    env = org.test
    assert env is not None
    return env.state


# -- the table ------------------------------------------------------------------------------------


def test_table_is_the_documented_machine() -> None:
    assert dict(TRANSITIONS) == {
        ("draft", "submit"): "pending_approval",
        ("draft", "edit"): "draft",
        ("draft", "suspend"): "suspended",
        ("pending_approval", "approve"): "active",
        ("pending_approval", "edit"): "pending_approval",
        ("pending_approval", "withdraw"): "draft",
        ("pending_approval", "suspend"): "suspended",
        ("active", "edit"): "pending_approval",
        ("active", "suspend"): "suspended",
        ("suspended", "edit"): "suspended",
        ("suspended", "resume"): "pending_approval",
    }
    # Suspended is reachable from every other state; active only through approve.
    assert {s for (s, e) in TRANSITIONS if e == "suspend"} == set(STATES) - {"suspended"}
    assert [k for k, v in TRANSITIONS.items() if v == "active"] == [("pending_approval", "approve")]


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("event", EVENTS)
def test_every_state_and_event(state: ApprovalState, event: ApprovalEvent) -> None:
    org = in_state(state)
    expected = TRANSITIONS.get((state, event))
    if expected is None:
        with pytest.raises(StateTransitionError) as info:
            fire(org, event)
        assert info.value.http_status_hint == 409
        assert state_of(org) == state  # nothing changed (models are frozen; no partial write)
        return
    after = fire(org, event)
    assert state_of(after) == expected
    assert next_state(state, event) == expected


@settings(max_examples=200)
@given(events=st.lists(st.sampled_from(EVENTS), max_size=25))
def test_random_event_sequences_keep_the_invariants(events: list[ApprovalEvent]) -> None:
    org = org_a()
    for step, event in enumerate(events):
        before = org
        try:
            org = fire(org, event, step)
        except StateTransitionError:
            assert org == before
            continue
        env = org.test
        assert env is not None
        if env.state == "active":
            assert env.approved_config_hash == config_hash(org, "test")
            assert env.approved_snapshot == snapshot(BASE_A_TEST)
        else:
            assert env.approved_config_hash is None
        if event == "edit":
            assert env.state != "active"  # an edit after approval never leaves it active
        assert org.production == before.production  # other environment untouched


# -- approval requirements (T28) ------------------------------------------------------------------


def pending() -> Organization:
    return in_state("pending_approval")


def test_approval_records_everything() -> None:
    org = approve(pending())
    env = org.test
    assert env is not None
    assert (env.state, env.approved_by, env.approved_at) == ("active", APPROVER_A, NOW)
    assert env.approved_snapshot == snapshot(BASE_A_TEST)
    assert env.approved_config_hash == config_hash(org, "test")


def test_non_designated_user_cannot_approve() -> None:
    with pytest.raises(ApprovalRequiredError) as info:
        approve(pending(), approver=identity(TENANT_A, ADMIN_A))
    assert info.value.reason == "not_designated_approver"


def test_approver_other_tenant_rejected() -> None:
    with pytest.raises(CrossTenantDeniedError) as info:
        approve(pending(), approver=identity(TENANT_B, APPROVER_A))
    assert info.value.reason == "approver_other_tenant"


def test_approve_without_microsoft_identity() -> None:
    with pytest.raises(ApprovalRequiredError):
        approve(pending(), approver={"tenant_id": TENANT_A, "object_id": APPROVER_A})


def test_approve_without_smart_proof() -> None:
    with pytest.raises(ApprovalRequiredError) as info:
        approve(pending(), proof=None)
    assert info.value.reason == "smart_proof_required"


@pytest.mark.parametrize(
    "signed_base",
    [
        BASE_A_PROD,  # the organization's other environment
        BASE_B_TEST,  # another organization's EHR
        BASE_A_TEST + "/",
        BASE_A_TEST.replace("fhir-test", "FHIR-TEST"),
        BASE_A_TEST.replace(".example/", ".example:443/"),
        BASE_A_TEST.replace("R4", "r4"),
        BASE_A_TEST.replace("https://", "https://fhir-test.hospital-a.example@evil.test/x"),
        BASE_A_TEST.replace("hospital-a.example", "hospital-a.example.evil.test"),
        BASE_A_TEST.replace("https://", "http://"),
        BASE_A_TEST + "/../R4",
    ],
)
def test_epic_signin_against_other_iss_rejected(signed_base: str) -> None:
    """The proof must name exactly the canonical base under approval (no normalization)."""
    with pytest.raises(ApprovalRequiredError) as info:
        approve(
            pending(), proof=proof(BASE_A_TEST).model_copy(update={"canonical_base": signed_base})
        )
    assert info.value.reason == "proof_other_base"


def test_signin_token_from_another_authorization_server_rejected() -> None:
    foreign = proof(BASE_A_TEST, issuer="https://fhir-test.hospital-b.example/oauth2")
    with pytest.raises(ApprovalRequiredError) as info:
        approve(pending(), proof=foreign)
    assert info.value.reason == "proof_issuer_mismatch"
    with pytest.raises(ApprovalRequiredError):
        approve(pending(), proof=proof(BASE_A_TEST, issuer=None))


@pytest.mark.parametrize(
    "signed_in_at", [NOW - timedelta(minutes=15, seconds=1), NOW + timedelta(seconds=61)]
)
def test_old_or_future_proof_rejected(signed_in_at: Any) -> None:
    with pytest.raises(ApprovalRequiredError) as info:
        approve(pending(), proof=proof(BASE_A_TEST, at=signed_in_at))
    assert info.value.reason == "stale_proof"


def test_proof_age_edges_accepted() -> None:
    for at in (NOW - timedelta(minutes=15), NOW + timedelta(seconds=60)):
        assert state_of(approve(pending(), proof=proof(BASE_A_TEST, at=at))) == "active"


def test_proof_cannot_carry_tokens() -> None:
    assert set(ApprovalProof.model_fields) == {
        "canonical_base",
        "snapshot",
        "id_token_issuer",
        "signed_in_at",
    }
    fields = proof(BASE_A_TEST).model_dump()
    for extra in ("access_token", "id_token", "refresh_token", "code"):
        with pytest.raises(ValidationError):
            ApprovalProof.model_validate({**fields, extra: "eyJ.canary.token"})
    with pytest.raises(ValidationError):
        ApprovalProof.model_validate({**fields, "signed_in_at": NOW.replace(tzinfo=None)})


def test_approval_with_stale_hash_fails() -> None:
    org = pending()
    reviewed = config_hash(org, "test")
    edited = apply_edit(org, "test", env_config(BASE_A_TEST, client_id="changed"), actor=ADMIN_A)
    assert state_of(edited) == "pending_approval"
    with pytest.raises(ApprovalRequiredError) as info:
        approve(edited, expected=reviewed)
    assert info.value.reason == "stale_config_hash"
    with pytest.raises(ApprovalRequiredError):
        approve(edited, expected="0" * 64)
    assert state_of(approve(edited)) == "active"  # the new hash, once reviewed


def test_skip_pending_direct_to_active_rejected() -> None:
    with pytest.raises(StateTransitionError):
        approve(org_a())


def test_approve_replay_rejected() -> None:
    with pytest.raises(StateTransitionError):
        approve(approve(pending()))


def test_self_approval_policy() -> None:
    org = apply_edit(
        pending(), "test", env_config(BASE_A_TEST, client_id="by-approver"), actor=APPROVER_A
    )
    assert state_of(approve(org)) == "active"  # TEC: admin and approver may be one person
    strict = apply_org_edit(org, actor=APPROVER_A, allow_self_approval=False)
    with pytest.raises(ApprovalRequiredError) as info:
        approve(strict)
    assert info.value.reason == "self_approval"
    by_admin = apply_edit(strict, "test", env_config(BASE_A_TEST, client_id="x"), actor=ADMIN_A)
    assert state_of(approve(by_admin)) == "active"


# -- edits ---------------------------------------------------------------------------------------


def test_edit_after_approval_resets_state() -> None:
    active = approve(pending())
    edited = apply_edit(
        active, "test", env_config(BASE_A_TEST, writer="audit_event"), actor=ADMIN_A
    )
    env = edited.test
    assert env is not None
    assert env.state == "pending_approval"
    assert (env.approved_config_hash, env.approved_snapshot, env.approved_by) == (None, None, None)
    assert env.edited_by == ADMIN_A


def test_unchanged_config_is_not_an_edit() -> None:
    active = approve(pending())
    assert apply_edit(active, "test", env_config(BASE_A_TEST), actor=ADMIN_A) is active


def test_new_environment_starts_as_draft() -> None:
    org = Organization.model_validate(
        {**org_a().model_dump(exclude={"production"}), "production": None}
    )
    added = apply_edit(org, "production", env_config(BASE_A_PROD, env="production"), actor=ADMIN_A)
    assert added.production is not None
    assert added.production.state == "draft"


def test_new_approver_resets_every_environment() -> None:
    org = approve(pending())
    changed = apply_org_edit(org, actor=ADMIN_A, approver_oid=APPROVER_B)
    assert changed.test is not None
    assert changed.production is not None
    assert (changed.test.state, changed.production.state) == ("pending_approval", "draft")
    renamed = apply_org_edit(org, actor=ADMIN_A, display_name="Hospital A (renamed)")
    assert renamed.test == org.test  # the display name is outside the hash


def test_resume_needs_a_new_approval() -> None:
    suspended = apply_event(approve(pending()), "test", "suspend")
    assert suspended.test is not None
    assert suspended.test.approved_config_hash is None
    resumed = apply_event(suspended, "test", "resume")
    assert state_of(resumed) == "pending_approval"
    assert state_of(approve(resumed)) == "active"


def test_misuse_is_typed() -> None:
    with pytest.raises(ConfigurationError):
        apply_event(pending(), "test", "approve")
    with pytest.raises(ConfigurationError):
        apply_event(pending(), "test", "edit")
    no_test = Organization.model_validate({**org_a().model_dump(exclude={"test"}), "test": None})
    with pytest.raises(ConfigurationError):
        apply_event(no_test, "test", "submit")
