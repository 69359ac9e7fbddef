"""Exact launch-context parsing (smart/context.py, requirement A6; threats T08, T11).

SMART App Launch "Launch context" and Epic's token response: every wire name, the banner string
coercion, the dropped credential members and the id_token-only identity are pinned exactly.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from teams_ehr.errors import OAuthError
from teams_ehr.smart.context import WIRE_NAMES, FhirContextItem, LaunchContext, build_launch_context


def test_wire_names_exact() -> None:
    assert WIRE_NAMES == {
        "fhir_context": "fhirContext",
        "login_department": "loginDepartment",
        "epic_dstu2_patient": "__epic.dstu2.patient",
    }


@pytest.mark.parametrize("use_wire", [True, False])
def test_each_renamed_field_parses_from_both_names(use_wire: bool) -> None:
    def name(attribute: str) -> str:
        return WIRE_NAMES[attribute] if use_wire else attribute

    context = build_launch_context(
        {
            name("fhir_context"): [{"reference": "Appointment/1", "role": "launch"}],
            name("login_department"): "D1",
            name("epic_dstu2_patient"): "P2",
        },
        None,
    )
    assert context.fhir_context == (FhirContextItem(reference="Appointment/1", role="launch"),)
    assert context.login_department == "D1"
    assert context.epic_dstu2_patient == "P2"
    dumped = context.model_dump(by_alias=True)
    assert dumped["fhirContext"][0]["reference"] == "Appointment/1"
    assert dumped["loginDepartment"] == "D1"
    assert dumped["__epic.dstu2.patient"] == "P2"


def test_defaults() -> None:
    context = LaunchContext()
    assert context.fhir_context == ()
    assert context.login_department is None
    assert context.epic_dstu2_patient is None
    assert context.scope == frozenset()
    assert context.need_patient_banner is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("false", False),
        (" TRUE ", True),
        ("False", False),
        (True, True),
        (False, False),
    ],
)
def test_banner_values(value: Any, expected: bool) -> None:
    assert (
        build_launch_context({"need_patient_banner": value}, None).need_patient_banner is expected
    )


@pytest.mark.parametrize("value", ["maybe", "", "1", "yes"])
def test_banner_refusals(value: str) -> None:
    with pytest.raises(OAuthError) as info:
        build_launch_context({"need_patient_banner": value}, None)
    assert info.value.reason == "token_response_invalid"
    assert info.value.error == "invalid_response"
    assert str(info.value) == "the token response's launch context is malformed"
    assert info.value.__cause__ is None


def test_direct_validation_message() -> None:
    with pytest.raises(ValidationError, match="need_patient_banner must be a boolean"):
        LaunchContext.model_validate({"need_patient_banner": "maybe"})


@pytest.mark.parametrize(
    ("scope", "expected"),
    [("a b  c", {"a", "b", "c"}), (None, set()), ("", set()), (["x", "y"], {"x", "y"})],
)
def test_scope_forms(scope: Any, expected: set[str]) -> None:
    assert LaunchContext.model_validate({"scope": scope}).scope == expected


def test_credentials_and_unvouched_identity_dropped() -> None:
    token = {
        "access_token": "A",
        "refresh_token": "R",
        "id_token": "I",
        "token_type": "Bearer",
        "expires_in": 3600,
        "state": "S",
        "scope": "openid launch",
        "fhirUser": "Practitioner/evil",
        "fhir_user": "Practitioner/evil",
        "user_id": "evil",
        "sub": "evil",
        "patient": "P1",
        "vendor": "kept",
    }
    context = build_launch_context(token, None)
    assert context.model_extra == {"vendor": "kept"}
    assert context.fhir_user is None
    assert context.user_id is None
    assert context.patient == "P1"
    assert context.scope == {"openid", "launch"}


def test_identity_from_the_id_token_only() -> None:
    claims = {"fhirUser": "Practitioner/1", "sub": "abc"}
    context = build_launch_context({"fhirUser": "Practitioner/evil"}, claims)
    assert (context.fhir_user, context.user_id) == ("Practitioner/1", "abc")
    odd = build_launch_context({}, {"fhirUser": 5, "sub": ["x"]})
    assert (odd.fhir_user, odd.user_id) == (None, None)
    assert build_launch_context({}, {}).user_id is None


def test_reprs_show_no_identifiers() -> None:
    context = build_launch_context(
        {"patient": "P-CANARY", "scope": "b a", "need_patient_banner": "true", "intent": "x"},
        {"sub": "U-CANARY"},
    )
    assert repr(context) == (
        "LaunchContext(scope=['a', 'b'], need_patient_banner=True, intent='x', "
        "has_patient=True, has_user=True)"
    )
    assert repr(LaunchContext()) == (
        "LaunchContext(scope=[], need_patient_banner=None, intent=None, "
        "has_patient=False, has_user=False)"
    )
    item = FhirContextItem(reference="Patient/P-CANARY", type="Patient", role="r")
    assert repr(item) == "FhirContextItem(type='Patient', role='r')"
