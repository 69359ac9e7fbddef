"""The launch primitives as integrators call them: no approval snapshot needed, wire names vs
attribute names of the launch context, naive datetimes refused with a ``TeamsEhrError``."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from teams_ehr._types import Clock
from teams_ehr.errors import MetadataMismatchError, OAuthError, UsageError
from teams_ehr.keys import LocalSigner
from teams_ehr.smart.authorize import SmartClientConfig
from teams_ehr.smart.client_auth import PrivateKeyJwt
from teams_ehr.smart.context import WIRE_NAMES, LaunchContext, build_launch_context
from teams_ehr.smart.discovery import DiscoverySnapshot, SmartConfiguration
from teams_ehr.smart.flows import AsyncSmartLaunchClient, SmartLaunchClient
from teams_ehr.testing import FakeEhr

REDIRECT = "https://app.test/callback"
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
KEY = LocalSigner.generate("RS384")


def fake_ehr() -> FakeEhr:
    ehr = FakeEhr(clock=lambda: NOW)
    ehr.register_client("app", redirect_uris=[REDIRECT], jwks={"keys": [KEY.public_jwk()]})
    return ehr


def sync_client(http: httpx.Client, clock: Clock = lambda: NOW) -> SmartLaunchClient:
    config = SmartClientConfig(client_id="app", redirect_uri=REDIRECT)
    return SmartLaunchClient(http, config, PrivateKeyJwt("app", KEY), clock=clock)


def test_start_launch_needs_no_snapshot_and_completes() -> None:
    ehr = fake_ehr()
    with httpx.Client(transport=httpx.MockTransport(ehr.handler)) as http:
        client = sync_client(http)
        launch = ehr.issue_launch(login_department="dep-1")
        redirect, pending = client.start_launch(
            ehr.base_url, "org-1", launch=launch, session_id="sess"
        )
        callback = ehr.authorize_in_browser(redirect)
        result = client.complete_launch(pending, callback, session_id="sess")
    assert result.context.patient == "patient-1"
    assert result.context.login_department == "dep-1"


def test_a_given_snapshot_is_compared() -> None:
    ehr = fake_ehr()
    approved = DiscoverySnapshot.of(SmartConfiguration.model_validate(ehr.smart_configuration()))
    moved = approved.model_copy(update={"token_endpoint": "https://elsewhere.test/token"})
    with httpx.Client(transport=httpx.MockTransport(ehr.handler)) as http:
        client = sync_client(http)
        client.start_launch(
            ehr.base_url, "org-1", launch=ehr.issue_launch(), session_id="s", approved=approved
        )
        with pytest.raises(MetadataMismatchError):
            client.start_launch(
                ehr.base_url, "org-1", launch=ehr.issue_launch(), session_id="s", approved=moved
            )


@pytest.mark.anyio
async def test_async_start_launch_needs_no_snapshot() -> None:
    ehr = fake_ehr()
    config = SmartClientConfig(client_id="app", redirect_uri=REDIRECT)
    async with httpx.AsyncClient(transport=httpx.MockTransport(ehr.handler)) as http:
        client = AsyncSmartLaunchClient(http, config, PrivateKeyJwt("app", KEY), clock=lambda: NOW)
        redirect, pending = await client.start_launch(
            ehr.base_url, "org-1", launch=ehr.issue_launch(), session_id="sess"
        )
    query = dict(parse_qsl(urlsplit(redirect.url).query))
    assert query["aud"] == ehr.base_url
    assert pending.org_id == "org-1"


def test_a_naive_clock_is_a_usage_error_not_a_validation_error() -> None:
    ehr = fake_ehr()
    with httpx.Client(transport=httpx.MockTransport(ehr.handler)) as http:
        client = sync_client(http, clock=lambda: datetime(2026, 3, 1, 9, 0))
        with pytest.raises(UsageError) as caught:
            client.start_launch(ehr.base_url, "org-1", launch=ehr.issue_launch(), session_id="s")
    assert caught.value.reason == "naive_datetime"


EPIC_TOKEN = {
    "scope": "launch openid fhirUser",
    "patient": "P-1",
    "fhirContext": [{"reference": "Appointment/A-1", "role": "launch"}],
    "loginDepartment": "DEP-1",
    "__epic.dstu2.patient": "D2-1",
    "vendorThing": "kept",
}


def test_context_parses_wire_names_into_attributes_and_dumps_them_back() -> None:
    context = build_launch_context(EPIC_TOKEN, {"sub": "user-1", "fhirUser": "Practitioner/1"})
    assert context.fhir_context[0].reference == "Appointment/A-1"
    assert context.login_department == "DEP-1"
    assert context.epic_dstu2_patient == "D2-1"
    assert context.model_extra == {"vendorThing": "kept"}
    wire = context.model_dump(by_alias=True, exclude_none=True)
    assert set(WIRE_NAMES.values()) <= set(wire)
    assert not set(WIRE_NAMES) & set(wire)
    assert LaunchContext.model_validate(wire) == context


def test_context_can_be_built_with_attribute_names() -> None:
    context = LaunchContext(
        patient="P-1",
        fhir_context=[{"reference": "Encounter/E-1"}],  # type: ignore[list-item]
        login_department="DEP-1",
        epic_dstu2_patient="D2-1",
    )
    assert context.fhir_context[0].reference == "Encounter/E-1"
    assert context == LaunchContext.model_validate(
        {
            "patient": "P-1",
            "fhirContext": [{"reference": "Encounter/E-1"}],
            "loginDepartment": "DEP-1",
            "__epic.dstu2.patient": "D2-1",
        }
    )


def test_malformed_context_is_an_oauth_error_without_values() -> None:
    with pytest.raises(OAuthError) as caught:
        build_launch_context({**EPIC_TOKEN, "need_patient_banner": "BANNER-CANARY"}, None)
    assert caught.value.reason == "token_response_invalid"
    assert "BANNER-CANARY" not in str(caught.value)
