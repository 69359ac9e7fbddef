"""A6 launch context model and A3 scope syntax (v1 and v2)."""

from __future__ import annotations

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from leaks import assert_no_leak
from teams_ehr.errors import ConfigurationError
from teams_ehr.smart.context import LaunchContext, build_launch_context
from teams_ehr.smart.scopes import (
    format_scopes,
    parse_granted_scopes,
    parse_resource_scope,
    scopes_allow,
    validate_scopes,
)

EPIC_TOKEN = {
    "access_token": "AT-CANARY",
    "token_type": "bearer",
    "expires_in": 3600,
    "scope": "launch openid fhirUser user/Patient.read",
    "id_token": "IDT-CANARY",
    "state": "STATE-CANARY",
    "patient": "PATIENT-CANARY",
    "encounter": "ENC-CANARY",
    "appointment": "APPT-CANARY",
    "location": "LOC-1",
    "loginDepartment": "DEP-1",
    "__epic.dstu2.patient": "D2-CANARY",
    "need_patient_banner": "false",
    "smart_style_url": "https://ehr.test/style.json",
    "fhirContext": [{"reference": "DocumentReference/DOC-CANARY", "role": "launch"}],
    "tenant": "t-1",
    "intent": "telehealth",
    "fhirUser": "Practitioner/FORGED",
    "__darkMode": True,
}
CLAIMS = {"sub": "USER-CANARY", "fhirUser": "https://ehr.test/fhir/Practitioner/USER-CANARY"}


def test_epic_token_response_maps_to_context() -> None:
    context = build_launch_context(EPIC_TOKEN, CLAIMS)
    assert context.patient == "PATIENT-CANARY"
    assert context.encounter == "ENC-CANARY"
    assert context.appointment == "APPT-CANARY"
    assert context.location == "LOC-1"
    assert context.login_department == "DEP-1"
    assert context.epic_dstu2_patient == "D2-CANARY"
    assert context.need_patient_banner is False
    assert context.smart_style_url == "https://ehr.test/style.json"
    assert context.fhir_context[0].reference == "DocumentReference/DOC-CANARY"
    assert context.tenant == "t-1"
    assert context.intent == "telehealth"
    assert context.scope == {"launch", "openid", "fhirUser", "user/Patient.read"}
    assert context.fhir_user == CLAIMS["fhirUser"]
    assert context.user_id == "USER-CANARY"
    assert context.model_extra == {"__darkMode": True}


def test_fhir_user_only_from_verified_claims() -> None:
    context = build_launch_context(EPIC_TOKEN, None)
    assert context.fhir_user is None
    assert context.user_id is None


def test_context_has_no_credentials_and_repr_hides_ids() -> None:
    context = build_launch_context(EPIC_TOKEN, CLAIMS)
    dumped = context.model_dump()
    assert "access_token" not in dumped
    assert "id_token" not in dumped
    assert_no_leak(
        ["PATIENT-CANARY", "ENC-CANARY", "APPT-CANARY", "D2-CANARY", "DOC-CANARY", "USER-CANARY"],
        context,
        context.fhir_context,
    )


@pytest.mark.parametrize(("wire", "value"), [("true", True), ("TRUE", True), (False, False)])
def test_banner_coercion(wire: object, value: bool) -> None:
    assert LaunchContext.model_validate({"need_patient_banner": wire}).need_patient_banner is value


def test_banner_garbage_refused_without_echo() -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        LaunchContext.model_validate({"need_patient_banner": "BANNER-CANARY"})
    assert "BANNER-CANARY" not in str(info.value)


def test_context_is_frozen() -> None:
    context = build_launch_context(EPIC_TOKEN, CLAIMS)
    with pytest.raises(pydantic.ValidationError):
        context.patient = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("scope", "permissions", "version"),
    [
        ("patient/Observation.rs", "rs", 2),
        ("user/Appointment.cruds", "cruds", 2),
        ("system/Encounter.cud", "cud", 2),
        ("patient/*.r", "r", 2),
        ("user/Patient.read", "rs", 1),
        ("user/DocumentReference.write", "cud", 1),
        ("patient/*.*", "cruds", 1),
    ],
)
def test_resource_scopes_v1_and_v2(scope: str, permissions: str, version: int) -> None:
    parsed = parse_resource_scope(scope)
    assert parsed is not None
    assert parsed.permissions == frozenset(permissions)
    assert parsed.version == version


def test_scope_with_query() -> None:
    parsed = parse_resource_scope("patient/Observation.rs?category=laboratory")
    assert parsed is not None
    assert parsed.query == "category=laboratory"


@pytest.mark.parametrize(
    "scope",
    [
        "patient/Observation.sr",
        "patient/Observation.rr",
        "admin/Patient.r",
        "patient/obs.r",
        "patient/Observation.",
        "patient/Observation.x",
        "launch/Patient",
        "openid fhirUser",
        "",
    ],
)
def test_invalid_scopes_refused(scope: str) -> None:
    with pytest.raises(ConfigurationError):
        validate_scopes([scope])


def test_valid_request_scopes() -> None:
    scopes = validate_scopes(
        [
            "launch",
            "openid",
            "fhirUser",
            "launch/patient",
            "offline_access",
            "openid",
            "launch/encounter?role=https://x.test/role",
            "__custom",
            "https://ex.test/scope",
            "user/Patient.rs",
        ]
    )
    assert scopes.count("openid") == 1
    assert format_scopes(scopes).startswith("launch openid fhirUser")


def test_granted_scopes_tolerant_epic() -> None:
    granted = parse_granted_scopes("Patient.read Patient.search user/Binary.Read user/Binary.read")
    assert scopes_allow(granted, "Patient", "r")
    assert scopes_allow(granted, "Binary", "s")
    assert not scopes_allow(granted, "Binary", "c")
    assert scopes_allow({"system/*.cud"}, "DocumentReference", "c")
    assert not scopes_allow({"openid", "garbage.."}, "Patient", "r")


@given(st.sets(st.sampled_from("cruds"), min_size=1))
def test_any_ordered_subset_is_a_valid_v2_scope(letters: set[str]) -> None:
    suffix = "".join(c for c in "cruds" if c in letters)
    parsed = parse_resource_scope(f"user/Encounter.{suffix}")
    assert parsed is not None
    assert parsed.permissions == frozenset(letters)
