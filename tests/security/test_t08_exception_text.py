"""T08 ``test_exception_str_has_no_url_query`` (security.md T08, T31; ASVS 16.5.1): an HTTP failure
wrapped by the SDK — FHIR, Graph or the transport — never carries the request's query string,
the server's diagnostics or the body into ``str(exc)`` / ``repr(exc)``.

FHIR search URLs hold the patient reference and identifiers; Graph's messages can echo the
``joinWebUrl`` filter and user ids; OperationOutcome diagnostics can quote the resource.
"""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leaks import assert_no_leak
from teams_ehr._types import Flow
from teams_ehr.attendance.writers.fhir_http import fhir_error_for
from teams_ehr.errors import TeamsEhrError, TransportError
from teams_ehr.sansio import run_sync
from teams_ehr.teams.graph_errors import graph_error_from_response

PATIENT = "Patient/pat-CANARY-08"
JOIN = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_CANARY08%40thread.v2/0"
SEARCH = f"https://ehr.test/fhir/DocumentReference?patient={PATIENT}&identifier=urn:x|CANARY-08"
GRAPH = f"https://graph.microsoft.com/v1.0/users/u/onlineMeetings?$filter=JoinWebUrl eq '{JOIN}'"
NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
CANARIES = [PATIENT, "CANARY-08", "CANARY08", JOIN]

statuses = st.sampled_from([400, 401, 403, 404, 409, 410, 412, 422, 429, 500, 502, 503, 504])


def _outcome(text: str) -> dict[str, object]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "invalid", "diagnostics": text}],
    }


@settings(max_examples=40)
@given(status=statuses, echo=st.sampled_from(CANARIES))
def test_fhir_error_text_has_no_query_or_diagnostics(status: int, echo: str) -> None:
    request = httpx.Request("GET", SEARCH)
    response = httpx.Response(
        status, json=_outcome(f"no match for {echo} at {SEARCH}"), request=request
    )
    error = fhir_error_for(response, "search DocumentReference", NOW)
    assert isinstance(error, TeamsEhrError)
    assert_no_leak(CANARIES, error, error.args, vars(error))


@settings(max_examples=40)
@given(status=statuses, echo=st.sampled_from(CANARIES))
def test_graph_error_text_has_no_query_or_message(status: int, echo: str) -> None:
    request = httpx.Request("GET", GRAPH)
    body = {
        "error": {
            "code": "BadRequest",
            "message": f"Invalid filter clause near {echo} in {GRAPH}",
            "innerError": {"request-id": "r-1"},
        }
    }
    response = httpx.Response(status, json=body, request=request)
    error = graph_error_from_response(response, "GET onlineMeetings")
    assert isinstance(error, TeamsEhrError)
    assert_no_leak(CANARIES, error, error.args)


@pytest.mark.parametrize(
    "failure",
    [httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ProxyError],
)
@pytest.mark.parametrize("url", [SEARCH, GRAPH])
def test_transport_error_text_has_no_query(failure: type[httpx.TransportError], url: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise failure(f"failed on {request.url}", request=request)

    def flow() -> Flow[None]:
        yield httpx.Request("GET", url)

    with (
        httpx.Client(transport=httpx.MockTransport(handler)) as client,
        pytest.raises(TransportError) as caught,
    ):
        run_sync(flow(), client)
    assert_no_leak(CANARIES, caught.value, caught.value.args)
