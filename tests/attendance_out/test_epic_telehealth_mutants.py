"""Edges of the Epic telehealth status writer ``nox -s mutants`` left open (threat T33: what
is written back to the EHR; docs/reference/attendance-writer.md).

``SetExternalConnectionStatus`` (Epic Telehealth Context-Aware Linking, https://open.epic.com/):
the exact request (query parameters, ``Accept``, ``Authorization`` bearer or HTTP Basic
``emp$<user>``, RFC 7617), the Interconnect base, the 64 KiB response cap, and the texts and
reason codes of each refusal an integrator reads.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest
from attendance_out_support import FHIR_BASE, TARGET, TOKEN_CANARY, FakeClock, event
from pydantic import SecretStr

from teams_ehr.attendance.fhir_resources import FhirTarget
from teams_ehr.attendance.writers import (
    AttendanceDelivery,
    EpicTelehealthStatusWriter,
    TelehealthStatusOptions,
    WriterStrategy,
)
from teams_ehr.attendance.writers.epic_telehealth import DEFAULT_STATUS_PATH, interconnect_base
from teams_ehr.errors import ConfigurationError, FhirError, UsageError
from teams_ehr.sansio import ResponseTooLargeError, run_sync

TOKEN = SecretStr(TOKEN_CANARY)
INTERCONNECT = "https://ehr.example/interconnect-prd"


def _delivery(kind: str = "connected", role: str = "patient", target: FhirTarget = TARGET) -> Any:
    return AttendanceDelivery.of(
        WriterStrategy.EPIC_TELEHEALTH_STATUS, [event(kind, role, "p-1", 71)], target=target
    )


def _request(options: TelehealthStatusOptions, fhir_base: str = FHIR_BASE, **kw: Any) -> Any:
    writer = EpicTelehealthStatusWriter(options)
    return writer.build_request(_delivery(**kw), fhir_base=fhir_base, access_token=TOKEN)


def test_the_default_request_exactly() -> None:
    request = _request(TelehealthStatusOptions())
    assert request.method == "POST"
    assert str(request.url.copy_with(query=None)) == INTERCONNECT + DEFAULT_STATUS_PATH
    assert dict(request.url.params.multi_items()) == {
        "ConferenceID": "csn-canary-555",
        "ExternalID": "p-1",
        "ExternalIDType": "1",
        "VendorName": "Microsoft Teams",
        "ConnectionStatus": "1",
    }
    assert request.headers["accept"] == "application/json"
    assert request.headers["authorization"] == f"Bearer {TOKEN_CANARY}"
    assert "epic-client-id" not in request.headers


def test_a_role_without_a_configured_id_type_is_sent_as_3() -> None:
    options = TelehealthStatusOptions(external_id_types={"provider": "7"})
    assert _request(options).url.params["ExternalIDType"] == "3"
    assert _request(options, role="provider").url.params["ExternalIDType"] == "7"


@pytest.mark.parametrize(
    ("fhir_base", "options", "url"),
    [
        (FHIR_BASE + "/", {}, INTERCONNECT + DEFAULT_STATUS_PATH),
        ("https://h/BOX", {}, "https://h/BOX" + DEFAULT_STATUS_PATH),
        (FHIR_BASE, {"interconnect_base": "https://ic.example/x/"}, "https://ic.example/x/p"),
        (FHIR_BASE, {"interconnect_base": "https://ic.example/X"}, "https://ic.example/X/p"),
    ],
)
def test_the_status_url_joins_base_and_path_with_one_slash(
    fhir_base: str, options: dict[str, Any], url: str
) -> None:
    if "interconnect_base" in options:
        options = {**options, "path": "/p"}
    request = _request(TelehealthStatusOptions(**options), fhir_base)
    assert str(request.url.copy_with(query=None)) == url


@pytest.mark.parametrize(
    ("fhir_base", "interconnect"),
    [
        ("https://h/x/api/FHIR/R4", "https://h/x"),
        ("https://h/x/api/FHIR/STU3/", "https://h/x"),
        ("https://h/x/api/fhir/dstu2//", "https://h/x"),
        ("https://h/X", "https://h/X"),
        ("https://h/XX/", "https://h/XX"),
    ],
)
def test_interconnect_base_strips_the_fhir_suffix_and_slashes(
    fhir_base: str, interconnect: str
) -> None:
    assert interconnect_base(fhir_base) == interconnect


@pytest.mark.parametrize(
    ("user", "password"), [(None, "pw"), ("", "pw"), ("svc", None), (None, None)]
)
def test_basic_auth_needs_both_user_and_password(user: str | None, password: str | None) -> None:
    options = TelehealthStatusOptions(
        auth="basic",
        basic_user=user,
        basic_password=SecretStr(password) if password is not None else None,
    )
    with pytest.raises(ConfigurationError) as error:
        _request(options)
    assert error.value.reason == "missing_auth"
    assert str(error.value) == "basic auth needs a user and password"


def test_basic_auth_header_is_emp_user_and_password() -> None:
    options = TelehealthStatusOptions(
        auth="basic", basic_user="svc", basic_password=SecretStr("pw"), method="GET"
    )
    request = _request(options)
    assert request.method == "GET"
    expected = "Basic " + base64.b64encode(b"emp$svc:pw").decode()
    assert request.headers["authorization"] == expected


def test_a_missing_conference_id_is_refused_with_its_reason() -> None:
    with pytest.raises(ConfigurationError) as error:
        _request(TelehealthStatusOptions(), target=FhirTarget(encounter="Encounter/e"))
    assert (error.value.reason, str(error.value)) == ("missing_target", "a conference id is needed")


def test_a_kind_without_a_status_code_is_a_bad_fact() -> None:
    with pytest.raises(UsageError) as error:
        _request(TelehealthStatusOptions(), kind="lobby_entered")
    assert error.value.reason == "bad_fact"
    assert str(error.value) == "no telehealth status is configured for 'lobby_entered' facts"


def _send(transport: httpx.MockTransport) -> Any:
    writer = EpicTelehealthStatusWriter(clock=FakeClock())
    flow = writer.write_flow(_delivery(), fhir_base=FHIR_BASE, access_token=TOKEN)
    with httpx.Client(transport=transport) as http:
        return run_sync(flow, http)


@pytest.mark.parametrize(("size", "ok"), [(65_536, True), (65_537, False)])
def test_the_response_is_capped_at_64_kib(size: int, ok: bool) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=b" " * size))
    if ok:
        assert _send(transport).status == "sent"
    else:
        with pytest.raises(ResponseTooLargeError):
            _send(transport)


def test_a_refusal_names_the_telehealth_status_call() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(400, json={}))
    with pytest.raises(FhirError) as error:
        _send(transport)
    assert str(error.value) == "FHIR telehealth status answered 400"
    assert error.value.status_code == 400
