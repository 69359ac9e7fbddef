"""FHIR REST helpers (https://hl7.org/fhir/R4/http.html): edges ``nox -s mutants --
attendance/writers/fhir_http.py`` left open.

The exact requests (headers, compact JSON, no body on GET, ``Prefer``), the id of a created
resource from the body, ``Location`` or ``Content-Location`` (each source alone), search bundles
without ``entry`` or ``link``, the page limit at its edge, ``Retry-After`` at 0 and past the cap,
OperationOutcome parsing and the errors' exact reason and text.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from teams_ehr.attendance.fhir_resources import ResourceIdentity
from teams_ehr.attendance.writers.fhir_http import (
    MAX_RETRY_AFTER,
    create_once_flow,
    fhir_error_for,
    fhir_request,
    retry_at_from,
)
from teams_ehr.errors import FhirError, FhirUnavailableError
from teams_ehr.sansio import run_async

pytestmark = pytest.mark.anyio
BASE = "https://ehr.example/fhir/R4"
TOKEN = SecretStr("tok-canary")
NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
IDENTITY = ResourceIdentity("AuditEvent", "urn:teams-ehr:test", "v-1")
RESOURCE: dict[str, Any] = {"resourceType": "AuditEvent", "b": [1, 2], "a": "x"}


# -- requests ---------------------------------------------------------------------------------


def test_request_with_body_is_compact_fhir_json() -> None:
    request = fhir_request("PUT", f"{BASE}/AuditEvent/1", TOKEN, body=RESOURCE)
    assert request.headers["Accept"] == "application/fhir+json"
    assert request.headers["Content-Type"] == "application/fhir+json"
    assert request.headers["Authorization"] == "Bearer tok-canary"
    assert request.content == b'{"resourceType":"AuditEvent","b":[1,2],"a":"x"}'


def test_request_without_body_sends_no_body_and_no_content_type() -> None:
    request = fhir_request("GET", f"{BASE}/AuditEvent", TOKEN, headers={"X-Extra": "1"})
    assert request.content == b""
    assert "Content-Type" not in request.headers
    assert request.headers["X-Extra"] == "1"


# -- Retry-After --------------------------------------------------------------------------------


def _response(
    status: int, headers: dict[str, str] | None = None, body: Any = None
) -> httpx.Response:
    content = json.dumps(body).encode() if body is not None else b""
    return httpx.Response(status, headers=headers or {}, content=content)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", NOW),
        ("-5", NOW),
        (" 30 ", NOW + timedelta(seconds=30)),
        ("99999999999999999999", NOW + MAX_RETRY_AFTER),
        ("7200", NOW + MAX_RETRY_AFTER),
    ],
)
def test_retry_after_seconds(value: str, expected: datetime) -> None:
    assert retry_at_from(_response(503, {"Retry-After": value}), NOW) == expected


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "codes"),
    [
        (400, [1, 2], ()),
        (400, None, ()),
        (400, {"resourceType": "Bundle", "issue": [{"code": "x"}]}, ()),
        (
            400,
            {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error"}, "x", {"code": "invalid"}],
            },
            ("invalid",),
        ),
    ],
)
def test_issue_codes_only_from_operation_outcomes(
    status: int, body: Any, codes: tuple[str, ...]
) -> None:
    error = fhir_error_for(_response(status, body=body), "create AuditEvent", NOW)
    assert error.issue_codes == codes
    assert (error.reason, str(error)) == ("fhir_bad_request", "FHIR create AuditEvent answered 400")


@pytest.mark.parametrize(("status", "reason"), [(401, "fhir_unauthorized"), (503, "fhir")])
def test_error_texts_name_interaction_and_status(status: int, reason: str) -> None:
    error = fhir_error_for(_response(status), "search Encounter", NOW)
    assert str(error) == f"FHIR search Encounter answered {status}"
    assert error.status_code == status


# -- create_once_flow ------------------------------------------------------------------------------


class Server:
    """Answers from a list of responses and records every request."""

    def __init__(self, *responses: httpx.Response) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.responses.pop(0)


async def _create(server: Server, base: str = BASE, **kw: Any) -> Any:
    kw.setdefault("conditional_create", True)
    flow = create_once_flow(base, TOKEN, RESOURCE, IDENTITY, clock=lambda: NOW, **kw)
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handler)) as http:
        return await run_async(flow, http)


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected"),
    [
        (201, {}, {"resourceType": "AuditEvent", "id": "a1"}, "a1"),
        (
            201,
            {"Location": f"{BASE}/AuditEvent/a2/_history/1"},
            {"resourceType": "OperationOutcome", "id": "o"},
            "a2",
        ),
        (
            201,
            {"Location": f"{BASE}/AuditEvent/a3/_history/1"},
            {"resourceType": "AuditEvent"},
            "a3",
        ),
        (201, {"Content-Location": f"{BASE}/AuditEvent/a4/_history/2"}, None, "a4"),
        (
            200,
            {"Location": f"{BASE}/AuditEvent/a5", "Content-Location": f"{BASE}/AuditEvent/zz"},
            None,
            "a5",
        ),
        (201, {"Location": f"{BASE}/Other/a6"}, None, None),
        (201, {}, None, None),
    ],
)
async def test_created_id_sources(
    status: int, headers: dict[str, str], body: Any, expected: str | None
) -> None:
    outcome = await _create(Server(_response(status, headers, body)))
    assert (outcome.status, outcome.resource_type, outcome.resource_id) == (
        "created" if status == 201 else "existing",
        "AuditEvent",
        expected,
    )


async def test_conditional_create_request_is_exact() -> None:
    server = Server(_response(201, body={"resourceType": "AuditEvent", "id": "a1"}))
    await _create(server, base=BASE + "/")
    [request] = server.requests
    assert (request.method, str(request.url)) == ("POST", f"{BASE}/AuditEvent")
    assert request.headers["Prefer"] == "return=representation"
    assert request.headers["If-None-Exist"] == IDENTITY.query()


async def test_base_is_stripped_of_slashes_only() -> None:
    server = Server(_response(201))
    await _create(server, base="https://ehr.example/fhirX/")
    assert str(server.requests[0].url) == "https://ehr.example/fhirX/AuditEvent"


@pytest.mark.parametrize("search", ["create", "error"])
async def test_conditional_create_refusal_is_typed(search: str) -> None:
    server = Server(_response(503, {"Retry-After": "30"}))
    with pytest.raises(FhirUnavailableError) as info:
        await _create(server)
    assert info.value.retry_at == NOW + timedelta(seconds=30)
    assert str(info.value) == "FHIR create AuditEvent answered 503"


def _bundle(*entries: Any, next_url: str | None = None, bare: bool = False) -> httpx.Response:
    body: dict[str, Any] = {"resourceType": "Bundle"}
    if not bare:
        body["entry"] = list(entries)
        body["link"] = [{"relation": "next", "url": next_url}] if next_url else []
    return _response(200, body=body)


async def test_search_then_create_requests_are_exact() -> None:
    server = Server(
        _bundle(bare=True), _response(201, body={"resourceType": "AuditEvent", "id": "n"})
    )
    outcome = await _create(server, conditional_create=False)
    get, post = server.requests
    assert (get.method, str(get.url), get.content) == (
        "GET",
        str(httpx.URL(f"{BASE}/AuditEvent?{IDENTITY.query()}")),
        b"",
    )
    assert (post.method, post.headers["Prefer"]) == ("POST", "return=representation")
    assert (outcome.status, outcome.resource_type, outcome.resource_id) == (
        "created",
        "AuditEvent",
        "n",
    )


async def test_search_uses_the_given_query() -> None:
    server = Server(_bundle(), _response(201))
    await _create(server, conditional_create=False, search_query="identifier=x%7Cy")
    assert str(server.requests[0].url) == f"{BASE}/AuditEvent?identifier=x%7Cy"


async def test_search_skips_entries_without_a_resource() -> None:
    match = {**RESOURCE, "identifier": [{"system": IDENTITY.system, "value": IDENTITY.value}]}
    server = Server(_bundle({"fullUrl": "x"}, "junk", {"resource": match}))
    outcome = await _create(server, conditional_create=False)
    assert (outcome.status, outcome.resource_type, outcome.resource_id) == (
        "existing",
        "AuditEvent",
        None,
    )


async def test_search_of_a_non_bundle_is_refused() -> None:
    server = Server(_response(200, body=[1]))
    with pytest.raises(FhirError) as info:
        await _create(server, conditional_create=False)
    assert (info.value.reason, str(info.value)) == (
        "fhir_bad_search",
        "FHIR search answered a non-Bundle",
    )


async def test_several_matches_are_a_duplicate_identifier() -> None:
    match = {**RESOURCE, "identifier": [{"system": IDENTITY.system, "value": IDENTITY.value}]}
    server = Server(_bundle({"resource": {**match, "id": "1"}}, {"resource": {**match, "id": "2"}}))
    with pytest.raises(FhirError) as info:
        await _create(server, conditional_create=False)
    assert (info.value.reason, str(info.value)) == (
        "duplicate_identifier",
        "FHIR search AuditEvent found several",
    )


@pytest.mark.parametrize(("max_pages", "gets"), [(None, 5), (2, 2), (1, 1)])
async def test_search_follows_at_most_max_pages(max_pages: int | None, gets: int) -> None:
    pages = [_bundle(next_url=f"{BASE}/AuditEvent?page={i + 1}") for i in range(8)]
    server = Server(*pages, _response(201))
    kw = {} if max_pages is None else {"max_pages": max_pages}
    await _create(server, conditional_create=False, **kw)
    assert [r.method for r in server.requests] == ["GET"] * gets + ["POST"]


@pytest.mark.parametrize("where", ["search", "create"])
async def test_search_mode_refusals_are_typed(where: str) -> None:
    refusal = _response(503, {"Retry-After": "30"})
    responses = (refusal,) if where == "search" else (_bundle(), refusal)
    with pytest.raises(FhirUnavailableError) as info:
        await _create(Server(*responses), conditional_create=False)
    verb = "search" if where == "search" else "create"
    assert str(info.value) == f"FHIR {verb} AuditEvent answered 503"
    assert info.value.retry_at == NOW + timedelta(seconds=30)
