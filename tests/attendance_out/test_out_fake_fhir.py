"""E1: FakeFhirServer — REST semantics, conditional create, scripted faults, ASGI on loopback."""

from __future__ import annotations

import httpx
import pytest
from attendance_out_support import FHIR_BASE, T0, FakeClock

from teams_ehr.testing.fake_ehr import FakeEhr
from teams_ehr.testing.fake_fhir import FakeFhirServer
from teams_ehr.testing.loopback import serve_on_loopback

DOC = {
    "resourceType": "DocumentReference",
    "identifier": [{"system": "urn:x", "value": "k1"}],
    "status": "current",
    "content": [{"attachment": {"contentType": "text/plain", "data": "aGk="}}],
    "context": {"encounter": [{"reference": "Encounter/e1"}]},
    "subject": {"reference": "Patient/p1"},
}


def client(fake: FakeFhirServer) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(fake.handler), base_url=FHIR_BASE + "/")


def test_conditional_create_201_then_200_then_412() -> None:
    fake = FakeFhirServer(FHIR_BASE)
    with client(fake) as http:
        headers = {"If-None-Exist": "identifier=urn:x|k1"}
        first = http.post("DocumentReference", json=DOC, headers=headers)
        assert first.status_code == 201
        assert first.headers["location"].endswith("/DocumentReference/1/_history/1")
        again = http.post("DocumentReference", json=DOC, headers=headers)
        assert again.status_code == 200
        assert again.json()["id"] == "1"
        fake.seed({**DOC, "id": "dup"})
        several = http.post("DocumentReference", json=DOC, headers=headers)
        assert several.status_code == 412
        assert several.json()["resourceType"] == "OperationOutcome"
    assert len(fake.resources("DocumentReference")) == 2


def test_without_conditional_create_the_header_is_ignored() -> None:
    fake = FakeFhirServer(FHIR_BASE, supports_conditional_create=False)
    with client(fake) as http:
        for _ in range(2):
            response = http.post(
                "DocumentReference", json=DOC, headers={"If-None-Exist": "identifier=urn:x|k1"}
            )
            assert response.status_code == 201
    assert len(fake.resources("DocumentReference")) == 2
    statement = client(fake).get("metadata").json()
    assert statement["rest"][0]["resource"][0]["conditionalCreate"] is False


def test_read_update_if_match_and_read_only_types() -> None:
    fake = FakeFhirServer(FHIR_BASE, read_only_types=frozenset({"Encounter"}))
    enc = fake.seed({"resourceType": "Encounter", "id": "e1", "status": "planned"})
    doc = fake.seed(DOC)
    with client(fake) as http:
        read = http.get(f"DocumentReference/{doc['id']}")
        assert read.headers["etag"] == 'W/"1"'
        body = {**read.json(), "status": "superseded"}
        ok = http.put(f"DocumentReference/{doc['id']}", json=body, headers={"If-Match": 'W/"1"'})
        assert ok.status_code == 200
        assert ok.json()["meta"]["versionId"] == "2"
        stale = http.put(f"DocumentReference/{doc['id']}", json=body, headers={"If-Match": 'W/"1"'})
        assert stale.status_code == 412
        assert http.put(f"Encounter/{enc['id']}", json=enc).status_code == 405
        assert http.get("DocumentReference/nope").status_code == 404
        mismatch = http.put(f"DocumentReference/{doc['id']}", json={**body, "id": "other"})
        assert mismatch.status_code == 400


def test_search_by_identifier_tag_id_encounter_patient_and_paging() -> None:
    fake = FakeFhirServer(FHIR_BASE)
    for i in range(5):
        fake.seed({**DOC, "identifier": [{"system": "urn:x", "value": f"k{i}"}]})
    fake.seed({"resourceType": "AuditEvent", "meta": {"tag": [{"system": "urn:t", "code": "c"}]}})
    with client(fake) as http:
        one = http.get("DocumentReference", params={"identifier": "urn:x|k3"}).json()
        assert one["type"] == "searchset"
        assert one["total"] == 1
        assert http.get("DocumentReference", params={"identifier": "k3"}).json()["total"] == 1
        assert http.get("AuditEvent", params={"_tag": "urn:t|c"}).json()["total"] == 1
        assert http.get("DocumentReference", params={"_id": "2"}).json()["total"] == 1
        by_enc = http.get("DocumentReference", params={"encounter": "Encounter/e1"}).json()
        assert by_enc["total"] == 5
        assert http.get("DocumentReference", params={"patient": "p1"}).json()["total"] == 5
        page = http.get("DocumentReference", params={"_count": "2"}).json()
        assert len(page["entry"]) == 2
        following = next(link["url"] for link in page["link"] if link["relation"] == "next")
        assert following.startswith(FHIR_BASE + "/DocumentReference?")
        assert len(http.get(following).json()["entry"]) == 2
        ignored = http.get("DocumentReference", params={"unknown-param": "x"}).json()
        assert ignored["total"] == 5


def test_outage_fail_next_and_lost_response() -> None:
    clock = FakeClock()
    fake = FakeFhirServer(FHIR_BASE, clock=clock)
    with client(fake) as http:
        fake.outage(T0.replace(hour=15), retry_after=120)
        down = http.get("metadata")
        assert down.status_code == 503
        assert down.headers["retry-after"] == "120"
        clock.advance(hours=1)
        assert http.get("metadata").status_code == 200
        fake.fail_next(429, retry_after=7)
        fake.fail_next(422, code="invariant")
        throttled = http.get("metadata")
        assert (throttled.status_code, throttled.headers["retry-after"]) == (429, "7")
        poison = http.get("metadata")
        assert poison.json()["issue"][0]["code"] == "invariant"
        fake.lose_next_response()
        with pytest.raises(httpx.ReadTimeout):
            http.post("DocumentReference", json=DOC)
    assert len(fake.resources("DocumentReference")) == 1  # the write happened


def test_bearer_token_check() -> None:
    fake = FakeFhirServer(FHIR_BASE, token_check=lambda token: token == "good")
    with client(fake) as http:
        missing = http.get("metadata")
        assert missing.status_code == 401
        assert "invalid_token" in missing.headers["www-authenticate"]
        assert http.get("metadata", headers={"Authorization": "Bearer bad"}).status_code == 401
        assert http.get("metadata", headers={"Authorization": "Bearer good"}).status_code == 200


def test_validation_rejects_invalid_r4() -> None:
    fake = FakeFhirServer(FHIR_BASE, validate=True)
    with client(fake) as http:
        assert http.post("DocumentReference", json=DOC).status_code == 201
        no_content = {k: v for k, v in DOC.items() if k != "content"}
        assert http.post("DocumentReference", json=no_content).status_code == 422
        unknown_element = {**DOC, "attendance": "x"}
        assert http.post("DocumentReference", json=unknown_element).status_code == 422
        wrong_type = http.post("DocumentReference", json={"resourceType": "Encounter"})
        assert wrong_type.status_code == 400
        assert http.post("DocumentReference", content=b"{").status_code == 400


def test_telehealth_endpoint_records_calls() -> None:
    fake = FakeFhirServer(FHIR_BASE)
    url = "https://ehr.example/interconnect-prd" + fake.telehealth_path
    params = {
        "ConferenceID": "c1",
        "ExternalID": "x",
        "ExternalIDType": "1",
        "VendorName": "v",
        "ConnectionStatus": "1",
    }
    with httpx.Client(transport=httpx.MockTransport(fake.handler)) as http:
        assert http.post(url, params=params).status_code == 401
        auth = {"Authorization": "Basic abc", "Epic-Client-ID": "cid"}
        assert http.post(url, params=params, headers=auth).status_code == 200
        missing = http.post(url, params={**params, "ConferenceID": ""}, headers=auth)
        assert missing.status_code == 400
    assert fake.telehealth_calls == [{**params, "auth": "basic", "client_id": "cid"}]


def test_served_as_asgi_on_loopback() -> None:
    fake = FakeFhirServer("http://127.0.0.1/fhir")
    with serve_on_loopback(fake.asgi_app()) as url, httpx.Client(base_url=url) as http:
        created = http.post("/fhir/DocumentReference", json=DOC)
        assert created.status_code == 201
        found = http.get("/fhir/DocumentReference", params={"identifier": "urn:x|k1"})
        assert found.json()["total"] == 1


def test_plugs_into_fake_ehr_as_fhir_handler() -> None:
    store = FakeFhirServer("https://ehr.test/fhir/r4")
    ehr = FakeEhr("https://ehr.test/fhir/r4", fhir_handler=store.handler)
    assert ehr.fhir_handler == store.handler


def test_identifier_index_follows_updates() -> None:
    fake = FakeFhirServer(FHIR_BASE)
    stored = fake.seed(DOC)
    with client(fake) as http:
        changed = {**stored, "identifier": [{"system": "urn:x", "value": "k2"}]}
        assert http.put(f"DocumentReference/{stored['id']}", json=changed).status_code == 200
        old = http.get("DocumentReference", params={"identifier": "urn:x|k1"}).json()
        new = http.get("DocumentReference", params={"identifier": "urn:x|k2"}).json()
    assert (old["total"], new["total"]) == (0, 1)
