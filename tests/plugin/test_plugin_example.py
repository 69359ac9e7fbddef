"""What an integrator writes: the harness fixture on their host, next to plain httpx mocks (E1)."""

from __future__ import annotations

import pytest

STRICT = ("-p", "no:cacheprovider", "--strict-markers", "-W", "error")

INTEGRATOR_TEST = """
import pytest
from starlette.applications import Starlette

from teams_ehr.integrations.starlette import teams_ehr_lifespan, teams_ehr_routes


def create_app(runtime):
    return Starlette(routes=teams_ehr_routes(runtime), lifespan=teams_ehr_lifespan(runtime))


pytestmark = [pytest.mark.anyio, pytest.mark.teams_ehr(host=create_app)]


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_begin_virtual_visit_opens_the_teams_meeting(teams_ehr_harness, teams_ehr_graph):
    # The clinician clicks "Begin virtual visit"; the first time, they sign in with Microsoft.
    launch = await teams_ehr_harness.clinician_launch("appt-1")
    assert launch.in_meeting and launch.signed_in
    (meeting,) = teams_ehr_graph.meetings.values()
    assert meeting["joinWebUrl"] == launch.location
    assert meeting["lobbyBypassSettings"]["scope"] == "organizer"


async def test_graph_throttling_is_retried(teams_ehr_harness, teams_ehr_graph):
    teams_ehr_graph.fail_next("/onlineMeetings", 429, retry_after=0)
    launch = await teams_ehr_harness.clinician_launch("appt-2")
    assert launch.in_meeting
    assert len(teams_ehr_graph.meetings) == 1
"""


def test_the_integrator_example_runs_inside_pytest(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_visit=INTEGRATOR_TEST)
    pytester.runpytest(*STRICT).assert_outcomes(passed=2)


def test_the_fixtures_coexist_with_plain_mock_transports(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import httpx

        def own_handler(request):
            return httpx.Response(200, json={"mine": True})

        def test_plain_mock_transport_is_untouched():
            with httpx.Client(transport=httpx.MockTransport(own_handler)) as client:
                assert client.get("https://ehr.test/interconnect/api/FHIR/R4/metadata").json() == {
                    "mine": True
                }

        def test_both_in_one_test(teams_ehr_ehr):
            mine = httpx.Client(transport=httpx.MockTransport(own_handler))
            fake = httpx.Client(transport=httpx.MockTransport(teams_ehr_ehr.handler))
            with mine, fake:
                url = teams_ehr_ehr.base_url + "/metadata"
                assert mine.get(url).json() == {"mine": True}
                assert fake.get(url).json()["resourceType"] == "CapabilityStatement"
            assert len(teams_ehr_ehr.requests) == 1  # the fake saw only its own request

        def test_real_transport_is_not_patched(teams_ehr_sandbox, teams_ehr_ehr):
            assert httpx.Client()._transport.__class__ is httpx.HTTPTransport
        """
    )
    pytester.runpytest(*STRICT).assert_outcomes(passed=3)
