"""T28 approval and environment-state edges that ``nox -s mutants -- orgs/approval.py
orgs/models.py`` left open.

Every refusal an approver or admin reads on the approval form is pinned by reason *and* text;
the editor recorded on a new environment and on an organization-level edit (the self-approval
rule reads it); the configuration hash as a known answer (approvals store it: a different
encoding after an upgrade would silently un-approve every environment) and with non-ASCII input;
the app URL rules one condition at a time, at the 2,048-character edge.
"""

from __future__ import annotations

from typing import Any

import pytest
from orgs_support import (
    ADMIN_A,
    APPROVER,
    APPROVER_A,
    BASE_A_TEST,
    NOW,
    TENANT_A,
    TENANT_B,
    env_config,
    identity,
    org_a,
    proof,
)
from pydantic import ValidationError

from teams_ehr.errors import (
    ApprovalRequiredError,
    ConfigurationError,
    CrossTenantDeniedError,
    StateTransitionError,
)
from teams_ehr.orgs.approval import apply_approval, apply_edit, apply_event, apply_org_edit
from teams_ehr.orgs.models import EnvironmentConfig, Organization, config_hash


def _pending(**org: Any) -> Organization:
    return apply_event(org_a(**org), "test", "submit")


def _approve(org: Organization, **kw: Any) -> Organization:
    return apply_approval(
        org,
        "test",
        kw.pop("approver", APPROVER),
        kw.pop("proof", proof(BASE_A_TEST)),
        expected_config_hash=kw.pop("expected", config_hash(org, "test")),
        now=NOW,
    )


# -- refusals: reason and text ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "error", "reason", "message"),
    [
        (
            {"approver": {"tenant_id": TENANT_A, "object_id": APPROVER_A}},
            ApprovalRequiredError,
            "no_approver",
            "a Microsoft sign-in is required",
        ),
        (
            {"approver": identity(TENANT_B, APPROVER_A)},
            CrossTenantDeniedError,
            "approver_other_tenant",
            "the approver belongs to another tenant",
        ),
        (
            {"approver": identity(TENANT_A, ADMIN_A)},
            ApprovalRequiredError,
            "not_designated_approver",
            "only the designated approver can approve",
        ),
        (
            {"proof": None},
            ApprovalRequiredError,
            "smart_proof_required",
            "an EHR sign-in against the FHIR base is required",
        ),
        (
            {"proof": proof(BASE_A_TEST).model_copy(update={"canonical_base": "https://x.test/"})},
            ApprovalRequiredError,
            "proof_other_base",
            "the EHR sign-in was against another FHIR base",
        ),
        (
            {"proof": proof(BASE_A_TEST, at=NOW.replace(year=2025))},
            ApprovalRequiredError,
            "stale_proof",
            "the EHR sign-in is not recent",
        ),
        (
            {"proof": proof(BASE_A_TEST, issuer="https://evil.test/oauth2")},
            ApprovalRequiredError,
            "proof_issuer_mismatch",
            "the EHR sign-in came from another issuer",
        ),
        (
            {"expected": "0" * 64},
            ApprovalRequiredError,
            "stale_config_hash",
            "the configuration changed since it was reviewed",
        ),
    ],
)
def test_approval_refusals_are_exact(
    kw: dict[str, Any], error: type[Exception], reason: str, message: str
) -> None:
    with pytest.raises(error) as info:
        _approve(_pending(), **kw)
    assert type(info.value) is error
    assert (info.value.reason, str(info.value)) == (reason, message)  # type: ignore[attr-defined]


def test_self_approval_refusal_is_exact() -> None:
    org = apply_edit(
        _pending(allow_self_approval=False),
        "test",
        env_config(BASE_A_TEST, client_id="edited-by-approver"),
        actor=APPROVER_A,
    )
    with pytest.raises(ApprovalRequiredError) as info:
        _approve(org)
    assert (info.value.reason, str(info.value)) == ("self_approval", "self-approval is not allowed")


def test_a_step_the_table_lacks_names_event_and_state() -> None:
    with pytest.raises(StateTransitionError) as info:
        apply_event(org_a(), "test", "resume")
    assert str(info.value) == "cannot resume an environment that is draft"


@pytest.mark.parametrize("event", ["approve", "edit"])
def test_approve_and_edit_have_their_own_functions(event: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        apply_event(org_a(), "test", event)
    assert (info.value.reason, str(info.value)) == (
        "use_apply_approval_or_edit",
        "approve and edit have their own functions",
    )


def test_an_unconfigured_environment_is_named() -> None:
    org = org_a(production=None)
    for call in (
        lambda: apply_event(org, "production", "submit"),
        lambda: config_hash(org, "production"),
    ):
        with pytest.raises(ConfigurationError) as missing:
            call()
        assert (missing.value.reason, str(missing.value)) == (
            "unknown_environment",
            "the environment is not configured",
        )
    with pytest.raises(ConfigurationError) as info:
        org.environment("staging")  # type: ignore[arg-type]
    assert (info.value.reason, str(info.value)) == (
        "bad_environment",
        "environment must be 'test' or 'production'",
    )


# -- the editor the self-approval rule reads --------------------------------------------------------


def test_a_new_environment_records_its_editor() -> None:
    org = apply_edit(org_a(production=None), "production", _prod_config(), actor=ADMIN_A)
    assert org.production is not None
    assert (org.production.state, org.production.edited_by) == ("draft", ADMIN_A)


def _prod_config() -> EnvironmentConfig:
    return env_config(
        "https://fhir.hospital-a.example/interconnect-fhir-oauth/api/FHIR/R4", env="production"
    )


def test_an_organization_edit_records_its_editor_on_every_environment() -> None:
    org = apply_org_edit(org_a(), actor=ADMIN_A, allow_self_approval=False)
    assert org.test is not None
    assert org.production is not None
    assert (org.test.edited_by, org.production.edited_by) == (ADMIN_A, ADMIN_A)
    with pytest.raises(ApprovalRequiredError):  # so that editor cannot approve it alone
        _approve(
            apply_event(
                apply_org_edit(org, actor=APPROVER_A, display_name="Renamed"), "test", "submit"
            ),
            approver=identity(TENANT_A, ADMIN_A),
        )


# -- representation and hash -------------------------------------------------------------------------


def test_repr_names_states_and_missing_environments() -> None:
    org = _pending(production=None)
    assert (
        repr(org)
        == "Organization(org_id='hospital-a', version=0, test='pending_approval', production=None)"
    )


# SHA-256 of b"teams-ehr/org-config\x00" + the sorted, compact, ASCII JSON of the material.
KNOWN_HASH = "cac3a0b5a2090060ee1b61c4d4b4a8e6ff965724d474d2171762a370b0437a14"


def test_config_hash_known_answer() -> None:
    assert config_hash(org_a(), "test") == KNOWN_HASH


def test_config_hash_covers_non_ascii_urls() -> None:
    base = org_a()
    edited = apply_edit(
        base,
        "test",
        env_config(BASE_A_TEST, redirect_uri="https://visits.example.com/rückruf"),
        actor=ADMIN_A,
    )
    digest = config_hash(edited, "test")
    assert len(digest) == 64
    assert digest != config_hash(base, "test")


# -- app URL rules, one condition at a time -------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://visits.example.com/cb", "redirect_uri must be an https URL"),
        (
            "https://user@visits.example.com/cb",
            "redirect_uri must be an absolute URL without userinfo or fragment",
        ),
        (
            "https://:pw@visits.example.com/cb",
            "redirect_uri must be an absolute URL without userinfo or fragment",
        ),
        (
            "https:///cb",
            "redirect_uri must be an absolute URL without userinfo or fragment",
        ),
        (
            "https://visits.example.com/cb#frag",
            "redirect_uri must be an absolute URL without userinfo or fragment",
        ),
        ("https://visits.example.com/c b", "redirect_uri has forbidden characters"),
        ("https://visits.example.com/c\tb", "redirect_uri has forbidden characters"),
        ("https://visits.example.com/" + "x" * 2022, "redirect_uri has forbidden characters"),
    ],
)
def test_app_url_rules(url: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        env_config(BASE_A_TEST, redirect_uri=url)
    assert [e["msg"] for e in info.value.errors()] == [f"Value error, {message}"]


def test_app_url_of_2048_characters_is_accepted() -> None:
    url = "https://visits.example.com/" + "x" * 2021
    assert len(url) == 2048
    assert env_config(BASE_A_TEST, redirect_uri=url).redirect_uri == url
