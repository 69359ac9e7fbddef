"""C1 models (canonical base, invariants, config hash) and C2 integration records."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from orgs_support import (
    ADMIN_A,
    APPROVER,
    APPROVER_A,
    BASE_A_PROD,
    BASE_A_TEST,
    NOW,
    TENANT_A,
    env_config,
    org_a,
    proof,
)
from pydantic import ValidationError

from leaks import assert_no_leak
from teams_ehr.errors import ApprovalRequiredError, ConfigurationError
from teams_ehr.orgs.approval import apply_approval, apply_edit, apply_event
from teams_ehr.orgs.models import Environment, EnvironmentConfig, Organization, config_hash
from teams_ehr.orgs.records import IntegrationRecords, integration_records
from teams_ehr.smart.epic_context_link import ContextLinkFormat
from teams_ehr.store.protocol import OrganizationRow

# -- EnvironmentConfig ----------------------------------------------------------------------------


def test_fhir_base_is_stored_canonical() -> None:
    config = env_config(
        "https://FHIR-Test.Hospital-A.example:443/interconnect-fhir-oauth/api/FHIR/R4/"
    )
    assert config.fhir_base == BASE_A_TEST


@pytest.mark.parametrize(
    "base",
    [
        "http://fhir.hospital-a.example/api/FHIR/R4",
        "https://user@fhir.hospital-a.example/api",
        "https://fhir.hospital-a.example/api/../admin",
        "https://fhir.hospital-a.example/api?x=1",
        "https://169.254.169.254/latest",
        "https://localhost/fhir",
        "https://fhir.hospital-a.example/%2e%2e/x",
    ],
)
def test_hostile_fhir_base_refused(base: str) -> None:
    with pytest.raises(ValidationError) as info:
        env_config(base)
    assert base not in str(info.value)  # hide_input_in_errors


def test_http_only_for_loopback_when_allowed() -> None:
    config = env_config(
        "http://127.0.0.1:8765/fhir",
        allow_http=True,
        redirect_uri="http://127.0.0.1:8000/callback",
        jwks_url="http://127.0.0.1:8000/jwks.json",
    )
    assert config.fhir_base == "http://127.0.0.1:8765/fhir"
    with pytest.raises(ValidationError):
        env_config("http://10.0.0.5/fhir", allow_http=True)


@pytest.mark.parametrize(
    "changes",
    [
        {"redirect_uri": "http://visits.example.com/cb"},
        {"redirect_uri": "https://visits.example.com/cb#frag"},
        {"jwks_url": "https://user:pw@visits.example.com/jwks"},
        {"jwks_url": "not a url"},
        {"client_id": "has space"},
        {"client_id": ""},
        {"epic_client_id": "x" * 257},
        {"writer": "Epic Note"},
        {"context_tokens": ("sessionId=%CSN%&patient=%X%",)},
        {"context_tokens": ("sessionId=%CSN%", "SESSIONID=%X%")},
        {"context_tokens": ("=%CSN%",)},
        {"unknown_field": 1},
    ],
)
def test_environment_config_validation(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        env_config(BASE_A_TEST, **changes)


def test_epic_department_token_is_accepted() -> None:
    tokens = ("sessionId=%CSN%", "departmentId=%PERFDEPID;;; ; ;;NONE;%")
    assert env_config(BASE_A_TEST, context_tokens=tokens).context_tokens == tokens


# -- Organization and Environment -----------------------------------------------------------------


def test_test_and_production_must_differ() -> None:
    with pytest.raises(ValidationError):
        org_a(production={"config": env_config(BASE_A_TEST, env="production")})
    with pytest.raises(ValidationError):
        org_a(production={"config": env_config(BASE_A_PROD, env="test")})  # same JWKS URL


@pytest.mark.parametrize(
    "changes",
    [
        {"org_id": "Hospital A"},
        {"org_id": "-a"},
        {"org_id": "a" * 65},
        {"display_name": ""},
        {"display_name": "bad\nname"},
        {"tenant_id": "contoso.onmicrosoft.com"},
        {"approver_oid": "analyst@hospital-a.example"},
    ],
)
def test_organization_validation(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        org_a(**changes)


def test_guids_are_normalized_and_repr_is_small() -> None:
    org = org_a(tenant_id=TENANT_A.upper(), approver_oid=APPROVER_A.upper())
    assert (org.tenant_id, org.approver_oid) == (TENANT_A, APPROVER_A)
    assert (
        repr(org)
        == "Organization(org_id='hospital-a', version=0, test='draft', production='draft')"
    )
    assert_no_leak([APPROVER_A, TENANT_A], org)


def test_approval_fields_only_when_active() -> None:
    approved = apply_approval(
        apply_event(org_a(), "test", "submit"),
        "test",
        APPROVER,
        proof(BASE_A_TEST),
        expected_config_hash=config_hash(org_a(), "test"),
        now=NOW,
    )
    assert approved.test is not None
    fields = approved.test.model_dump()
    with pytest.raises(ValidationError):
        Environment.model_validate({**fields, "state": "suspended"})
    with pytest.raises(ValidationError):
        Environment.model_validate({**fields, "approved_by": None})
    with pytest.raises(ValidationError):
        Environment.model_validate({**fields, "approved_at": NOW.replace(tzinfo=None)})


def test_document_round_trip_keeps_the_hash() -> None:
    org = org_a(test={"config": env_config(BASE_A_TEST, context_link={"iv_mode": "zero"})})
    row = OrganizationRow("hospital-a", 7, org.document())
    again = Organization.from_row(row)
    assert again.version == 7
    assert "version" not in org.document()
    assert config_hash(again, "test") == config_hash(org, "test")
    assert again.test is not None
    assert again.test.config.context_link.iv_mode == "zero"


FIELD_CHANGES: dict[str, Any] = {
    "fhir_base": "https://fhir-test.hospital-a.example/interconnect-fhir-oauth/api/FHIR/R5",
    "client_id": "other-client",
    "redirect_uri": "https://visits.example.com/callback/other",
    "jwks_url": "https://visits.example.com/jwks/other.json",
    "epic_client_id": "epic-123",
    "writer": "audit_event",
    "context_tokens": ("sessionId=%CONFERENCEID%",),
    "context_link": ContextLinkFormat(iv_mode="zero"),
}


def test_every_config_field_is_in_the_hash() -> None:
    assert set(FIELD_CHANGES) | {"allow_http"} == set(EnvironmentConfig.model_fields)
    org = org_a()
    base = config_hash(org, "test")
    seen = {base}
    for field, value in FIELD_CHANGES.items():
        assert org.test is not None
        config = org.test.config.model_copy(update={field: value})
        changed = apply_edit(org, "test", config, actor=ADMIN_A)
        digest = config_hash(changed, "test")
        assert digest not in seen, field
        seen.add(digest)
    for key, value in [("approver_oid", ADMIN_A), ("allow_self_approval", False)]:
        assert config_hash(org_a(**{key: value}), "test") != base
    assert config_hash(org_a(display_name="Renamed"), "test") == base
    assert config_hash(org, "production") != base


@settings(max_examples=50)
@given(client_id=st.from_regex(r"\A[\x21-\x7e]{1,40}\Z"))
def test_hash_changes_iff_config_changes(client_id: str) -> None:
    org = org_a()
    assert org.test is not None
    edited = apply_edit(
        org, "test", org.test.config.model_copy(update={"client_id": client_id}), actor=ADMIN_A
    )
    same = client_id == org.test.config.client_id
    assert (config_hash(edited, "test") == config_hash(org, "test")) is same


def test_hash_of_missing_environment() -> None:
    org = Organization.model_validate({**org_a().model_dump(exclude={"test"}), "test": None})
    with pytest.raises(ConfigurationError):
        config_hash(org, "test")


# -- integration records (C2) ---------------------------------------------------------------------


def approved(**kw: Any) -> Organization:
    org = apply_event(org_a(**kw), "test", "submit")
    return apply_approval(
        org,
        "test",
        APPROVER,
        proof(BASE_A_TEST),
        expected_config_hash=config_hash(org, "test"),
        now=NOW,
    )


def test_records_for_an_approved_environment_as_json() -> None:
    records = integration_records(approved(), "test", app_base_url="https://visits.example.com/")
    assert isinstance(records, IntegrationRecords)
    assert records.model_dump(mode="json") == {
        "org_id": "hospital-a",
        "environment": "test",
        "fhir_base": BASE_A_TEST,
        "provider_launch_url": "https://visits.example.com/launch/hospital-a/test",
        "patient_launch_url": "https://visits.example.com/patient/hospital-a/test",
        "client_id": "hospital-a-test-client",
        "epic_client_id": None,
        "redirect_uri": "https://visits.example.com/callback/hospital-a",
        "jwks_url": "https://visits.example.com/jwks/hospital-a/test.json",
        "context_tokens": ["sessionId=%CSN%"],
        "context_query": "sessionId=%CSN%",
        "config_hash": config_hash(approved(), "test"),
        "approved_at": "2026-03-02T09:00:00Z",
    }


def test_records_with_epic_tokens_and_custom_paths() -> None:
    tokens = ("sessionId=%CSN%", "departmentId=%PERFDEPID;;; ; ;;NONE;%")
    org = approved(
        test={"config": env_config(BASE_A_TEST, context_tokens=tokens, epic_client_id="epic-np-1")}
    )
    records = integration_records(
        org,
        "test",
        app_base_url="https://apps.example.com/visits",
        provider_path="/ehr/{org_id}/{environment}/provider",
        patient_path="/ehr/{org_id}/{environment}/patient",
    )
    assert (
        records.provider_launch_url
        == "https://apps.example.com/visits/ehr/hospital-a/test/provider"
    )
    assert (
        records.patient_launch_url == "https://apps.example.com/visits/ehr/hospital-a/test/patient"
    )
    assert records.context_query == "sessionId=%CSN%&departmentId=%PERFDEPID;;; ; ;;NONE;%"
    assert records.epic_client_id == "epic-np-1"


def test_records_only_for_approved_environments() -> None:
    for org in (org_a(), apply_event(org_a(), "test", "submit")):
        with pytest.raises(ApprovalRequiredError):
            integration_records(org, "test", app_base_url="https://visits.example.com")
    with pytest.raises(ApprovalRequiredError):
        integration_records(approved(), "production", app_base_url="https://visits.example.com")
    suspended = apply_event(approved(), "test", "suspend")
    with pytest.raises(ApprovalRequiredError):
        integration_records(suspended, "test", app_base_url="https://visits.example.com")
    # Edited underneath (document changed, approval kept): refused by the hash check.
    document = approved().document()
    document["test"]["config"]["client_id"] = "swapped"
    tampered = Organization.model_validate(document)
    with pytest.raises(ApprovalRequiredError):
        integration_records(tampered, "test", app_base_url="https://visits.example.com")


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"app_base_url": "http://visits.example.com"}, "bad_app_base_url"),
        ({"app_base_url": "https://visits.example.com/?x=1"}, "bad_app_base_url"),
        ({"app_base_url": "visits.example.com"}, "bad_app_base_url"),
        (
            {"app_base_url": "https://v.example.com", "provider_path": "/launch/{tenant_id}"},
            "bad_path_template",
        ),
        ({"app_base_url": "https://v.example.com", "patient_path": "patient"}, "bad_path_template"),
    ],
)
def test_records_configuration_errors(kwargs: dict[str, Any], reason: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        integration_records(approved(), "test", **kwargs)
    assert info.value.reason == reason


def test_unknown_environment_name_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        org_a().environment("prod")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        apply_edit(org_a(), "prod", env_config(BASE_A_PROD), actor=ADMIN_A)  # type: ignore[arg-type]
