"""What an integrator writes: the sandbox fixture end to end, next to plain httpx mocks (E1)."""

from __future__ import annotations

import pytest

STRICT = ("-p", "no:cacheprovider", "--strict-markers", "-W", "error")

INTEGRATOR_TEST = """
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest

from teams_ehr.testing.sandbox import CLINICIAN_OID

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_begin_virtual_visit_opens_the_teams_meeting(teams_ehr_sandbox, teams_ehr_graph):
    sandbox = teams_ehr_sandbox
    sandbox.seed_appointment("appt-1")
    async with sandbox.app() as app:
        org = await sandbox.seed_organization(app)

        # The clinician clicks "Begin virtual visit" in the EHR.
        launch = sandbox.provider_launch("appt-1")
        started = await app.visits.begin_launch(
            org.org_id, "test", {"iss": sandbox.ehr.base_url, "launch": launch},
            session_id="browser-1",
        )
        assert started.status == 302
        browser = SimpleNamespace(method="GET", url=started.location, fields=())
        callback = sandbox.ehr.authorize_in_browser(browser)
        first = await app.visits.complete_ehr_callback(callback, session_id="browser-1")

        # First visit: the clinician signs in with Microsoft once, then lands in Teams.
        assert first.location.startswith(sandbox.entra.authorize_endpoint)
        sandbox.entra.sign_in_as(CLINICIAN_OID)
        signin = sandbox.entra.authorize_in_browser(first.location)
        entered = await app.visits.complete_microsoft_signin(signin, session_id="browser-1")
        assert entered.status == 303
        assert urlsplit(entered.location).hostname == "teams.microsoft.com"

        (meeting,) = teams_ehr_graph.meetings.values()
        assert meeting["joinWebUrl"] == entered.location
        assert meeting["lobbyBypassSettings"]["scope"] == "organizer"


@pytest.mark.teams_ehr(assert_all_consumed=True)
async def test_graph_throttling_is_retried(teams_ehr_sandbox):
    sandbox = teams_ehr_sandbox
    sandbox.seed_appointment("appt-2")
    sandbox.graph.fail_next("/onlineMeetings", 429, retry_after=0)
    async with sandbox.app() as app:
        org = await sandbox.seed_organization(app)
        start, end = sandbox.seed_appointment("appt-2")
        token = await app.visits.prepare_visit(
            org.org_id, visit_key="Appointment/appt-2", organizer_oid=CLINICIAN_OID,
            start=start, end=end,
        )
        joined = await app.visits.join(token, client_key="203.0.113.9")
        assert joined.status == 303
    assert len(sandbox.graph.meetings) == 1
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
