"""The fakes speak one scripting language and play the browser the same way (SPEC E1).

``fail_next`` / ``lose_next_response`` with ``times=`` on FakeEhr, FakeEntra, FakeFhirServer and
FakeGraph; ``authorize_in_browser`` on FakeEhr and FakeEntra takes a ``str``, an
``httpx.URL`` or an ``httpx.Request``; FakeFhirServer tells what clients wrote from what was
seeded.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
from urllib.parse import urlencode

import httpx
import pytest

from teams_ehr.app import MICROSOFT_CALLBACK_PATH
from teams_ehr.errors import UsageError
from teams_ehr.smart.authorize import AuthorizationRedirect
from teams_ehr.testing.fake_ehr import FakeEhr, FakeEhrError
from teams_ehr.testing.fake_entra import FakeEntra
from teams_ehr.testing.fake_fhir import FakeFhirServer
from teams_ehr.testing.fake_graph import FakeGraph
from teams_ehr.testing.plugin import pending_scripted_failures
from teams_ehr.testing.sandbox import (
    CLINICIAN_OID,
    MICROSOFT_CLIENT_ID,
    SMART_CLIENT_ID,
    Sandbox,
)

VERIFIER = "v" * 43
CHALLENGE = base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=")


@pytest.fixture
def sandbox() -> Sandbox:
    return Sandbox()


def _ehr_authorize(sandbox: Sandbox) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": SMART_CLIENT_ID,
        "redirect_uri": sandbox.redirect_uri,
        "scope": "launch openid fhirUser",
        "state": "st-1",
        "aud": sandbox.ehr.base_url,
        "code_challenge": CHALLENGE.decode(),
        "code_challenge_method": "S256",
        "launch": sandbox.provider_launch("appt-1"),
    }


def _entra_authorize_url(sandbox: Sandbox) -> str:
    params = {
        "client_id": MICROSOFT_CLIENT_ID,
        "response_type": "code",
        "redirect_uri": sandbox.app_base_url + MICROSOFT_CALLBACK_PATH,
        "scope": "openid profile",
        "state": "st-2",
        "nonce": "n-1",
        "code_challenge": CHALLENGE.decode(),
        "code_challenge_method": "S256",
    }
    return f"{sandbox.entra.authorize_endpoint}?{urlencode(params)}"


# -- the browser ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["str", "url", "get-request", "post-request", "redirect"])
def test_fake_ehr_authorizes_every_browser_target(sandbox: Sandbox, shape: str) -> None:
    params = _ehr_authorize(sandbox)
    url = f"{sandbox.ehr.authorize_url}?{urlencode(params)}"
    target: object = {
        "str": url,
        "url": httpx.URL(url),
        "get-request": httpx.Request("GET", url),
        "post-request": httpx.Request("POST", sandbox.ehr.authorize_url, data=params),
        "redirect": AuthorizationRedirect(
            method="POST", url=sandbox.ehr.authorize_url, fields=tuple(params.items())
        ),
    }[shape]
    back = sandbox.ehr.authorize_in_browser(target)  # type: ignore[arg-type]
    assert back["state"] == "st-1"
    assert back["code"]


def test_fake_ehr_refusal_is_a_usage_error_with_a_reason(sandbox: Sandbox) -> None:
    with pytest.raises(FakeEhrError) as caught:
        sandbox.ehr.authorize_in_browser(sandbox.ehr.authorize_url + "?client_id=nobody")
    assert isinstance(caught.value, UsageError)
    assert caught.value.reason == "fake_ehr_refused"


@pytest.mark.parametrize("shape", ["str", "url", "request"])
def test_fake_entra_authorizes_every_browser_target(sandbox: Sandbox, shape: str) -> None:
    sandbox.entra.sign_in_as(CLINICIAN_OID)
    url = _entra_authorize_url(sandbox)
    target = {"str": url, "url": httpx.URL(url), "request": httpx.Request("GET", url)}[shape]
    back = sandbox.entra.authorize_in_browser(target)
    assert back["state"] == "st-2"
    assert back["code"]


# -- one naming -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fake", [FakeEhr, FakeEntra, FakeFhirServer, FakeGraph])
def test_every_fake_scripts_failures_and_lost_responses_with_times(fake: type) -> None:
    for name in ("fail_next", "lose_next_response"):
        times = inspect.signature(getattr(fake, name)).parameters["times"]
        assert times.kind is inspect.Parameter.KEYWORD_ONLY
        assert times.default == 1
    assert not hasattr(fake, "lose_response_next")


def test_fake_ehr_fail_next_times(sandbox: Sandbox) -> None:
    sandbox.ehr.fail_next("smart-configuration", 503, times=2)
    url = sandbox.ehr.base_url + "/.well-known/smart-configuration"
    with httpx.Client(transport=httpx.MockTransport(sandbox.ehr.handler)) as client:
        assert [client.get(url).status_code for _ in range(3)] == [503, 503, 200]


def test_fake_ehr_loses_the_token_response_after_redeeming_the_code(sandbox: Sandbox) -> None:
    """The code is spent even though the client never saw the tokens (RFC 6749 §4.1.2)."""
    params = _ehr_authorize(sandbox)
    params["client_id"] = "public"
    sandbox.ehr.register_client("public", redirect_uris=[sandbox.redirect_uri])
    code = sandbox.ehr.authorize_in_browser(f"{sandbox.ehr.authorize_url}?{urlencode(params)}")
    form = {
        "grant_type": "authorization_code",
        "code": code["code"],
        "redirect_uri": sandbox.redirect_uri,
        "code_verifier": VERIFIER,
        "client_id": "public",
    }
    sandbox.ehr.lose_next_response("token")
    assert pending_scripted_failures(sandbox.ehr) == ["FakeEhr.lose_next_response('token'): 1 left"]
    with httpx.Client(transport=httpx.MockTransport(sandbox.ehr.handler)) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post(sandbox.ehr.token_url, data=form)
        retried = client.post(sandbox.ehr.token_url, data=form)
    assert retried.status_code == 400
    assert retried.json()["error"] == "invalid_grant"
    assert pending_scripted_failures(sandbox.ehr) == []


def test_fake_entra_loses_the_next_responses(sandbox: Sandbox) -> None:
    sandbox.entra.lose_next_response("jwks", times=2)
    assert pending_scripted_failures(sandbox.entra) == [
        "FakeEntra.lose_next_response('jwks'): 2 left"
    ]
    with httpx.Client(transport=httpx.MockTransport(sandbox.entra.handler)) as client:
        for _ in range(2):
            with pytest.raises(httpx.ReadTimeout):
                client.get(sandbox.entra.jwks_uri)
        assert client.get(sandbox.entra.jwks_uri).status_code == 200
    assert pending_scripted_failures(sandbox.entra) == []


def test_fake_fhir_fail_next_and_lose_next_response_take_times() -> None:
    fhir = FakeFhirServer("https://fhir.test/r4")
    note = {"resourceType": "Basic", "code": {"text": "x"}}
    fhir.fail_next(503, times=2)
    with httpx.Client(transport=httpx.MockTransport(fhir.handler)) as client:
        statuses = [client.post(fhir.base_url + "/Basic", json=note).status_code for _ in range(3)]
        fhir.lose_next_response(times=2, method="POST")
        for _ in range(2):
            with pytest.raises(httpx.ReadTimeout):
                client.post(fhir.base_url + "/Basic", json=note)
        assert client.post(fhir.base_url + "/Basic", json=note).status_code == 201
    assert statuses == [503, 503, 201]
    assert len(fhir.resources("Basic")) == 4  # the lost replies' writes happened


# -- what clients wrote ----------------------------------------------------------------------------


def test_fake_fhir_written_leaves_seeded_resources_aside() -> None:
    fhir = FakeFhirServer("https://fhir.test/r4")
    fhir.seed({"resourceType": "Encounter", "id": "e-1", "status": "planned"})
    fhir.seed({"resourceType": "Encounter", "id": "e-2", "status": "planned"})
    assert fhir.written() == []
    with httpx.Client(transport=httpx.MockTransport(fhir.handler)) as client:
        updated = {"resourceType": "Encounter", "id": "e-2", "status": "finished"}
        assert client.put(fhir.base_url + "/Encounter/e-2", json=updated).status_code == 200
        event = {"resourceType": "AuditEvent", "identifier": [{"system": "s", "value": "1"}]}
        assert client.post(fhir.base_url + "/AuditEvent", json=event).status_code == 201
        again = client.post(
            fhir.base_url + "/AuditEvent", json=event, headers={"If-None-Exist": "identifier=s|1"}
        )
        assert again.status_code == 200  # a conditional create that matched wrote nothing
    assert [(r["resourceType"], r["id"]) for r in fhir.written()] == [
        ("Encounter", "e-2"),
        ("AuditEvent", "1"),
    ]
    [encounter] = fhir.written("Encounter")
    assert (encounter["status"], encounter["meta"]["versionId"]) == ("finished", "2")
