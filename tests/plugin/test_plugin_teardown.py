"""Teardown checks: unconsumed scripted failures and requests the sandbox refused (SPEC E1)."""

from __future__ import annotations

import pytest

STRICT = ("-p", "no:cacheprovider", "--strict-markers", "-W", "error")

SCRIPTS = {
    "ehr": 'teams_ehr_ehr.fail_next("token", 503)',
    "fhir": "teams_ehr_fhir.fail_next(500)",
    "entra": 'teams_ehr_entra.fail_next("token", 503, times=2)',
    "graph": 'teams_ehr_graph.fail_next("/onlineMeetings", 429, retry_after=1)',
}


@pytest.mark.parametrize("fake", sorted(SCRIPTS))
def test_an_unconsumed_scripted_failure_fails_the_test(
    pytester: pytest.Pytester, fake: str
) -> None:
    pytester.makepyfile(
        f"""
        def test_scripted(teams_ehr_{fake}):
            {SCRIPTS[fake]}
        """
    )
    result = pytester.runpytest(*STRICT)
    result.assert_outcomes(passed=1, errors=1)
    out = result.stdout.str()
    assert "scripted failures were never consumed" in out
    assert "docs/testing.md#unconsumed-scripted-failures" in out
    assert "assert_all_consumed=False" in out
    assert "Traceback" not in out


def test_the_check_lists_every_leftover_of_the_sandbox(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_scripted(teams_ehr_sandbox):
            teams_ehr_sandbox.ehr.fail_next("token", 503)
            teams_ehr_sandbox.graph.fail_next("/onlineMeetings", 429, times=2)
        """
    )
    result = pytester.runpytest(*STRICT)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*FakeEhr.fail_next('token', 503)*",
            "*FakeGraph fail script ('/onlineMeetings', 429)*2 left*",
        ]
    )


def test_consumed_or_allowed_leftovers_pass(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import httpx
        import pytest

        def test_consumed(teams_ehr_ehr):
            teams_ehr_ehr.fail_next("smart-configuration", 503)
            transport = httpx.MockTransport(teams_ehr_ehr.handler)
            with httpx.Client(transport=transport) as client:
                url = teams_ehr_ehr.base_url + "/.well-known/smart-configuration"
                assert client.get(url).status_code == 503
                assert client.get(url).status_code == 200

        @pytest.mark.teams_ehr(assert_all_consumed=False)
        def test_allowed(teams_ehr_ehr):
            teams_ehr_ehr.fail_next("token", 503)
        """
    )
    pytester.runpytest(*STRICT).assert_outcomes(passed=2)


def test_a_failing_test_is_not_buried_under_leftovers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_fails(teams_ehr_ehr):
            teams_ehr_ehr.fail_next("token", 503)
            assert False, "the real failure"
        """
    )
    result = pytester.runpytest(*STRICT)
    result.assert_outcomes(failed=1)
    assert "never consumed" not in result.stdout.str()


def test_a_request_the_sandbox_refused_fails_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import httpx
        import pytest
        from teams_ehr.testing.sandbox import SandboxRoutingError

        @pytest.fixture
        def anyio_backend():
            return "asyncio"

        @pytest.mark.anyio
        async def test_swallowed_escape(teams_ehr_sandbox):
            async with teams_ehr_sandbox.http_client() as client:
                try:  # code under test that hides a transport error still gets caught
                    await client.get("https://api.example.org/patients")
                except httpx.TransportError:
                    pass

        @pytest.mark.anyio
        @pytest.mark.teams_ehr(assert_all_routed=False)
        async def test_expected_refusal(teams_ehr_sandbox):
            async with teams_ehr_sandbox.http_client() as client:
                with pytest.raises(SandboxRoutingError):
                    await client.get("https://api.example.org/patients")
        """
    )
    result = pytester.runpytest(*STRICT)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*the sandbox refused 1 request(s) to hosts no fake serves*",
            "*GET api.example.org (1x)*",
            "*docs/testing.md#requests-leaving-the-sandbox*",
        ]
    )
    assert "/patients" not in result.stdout.str()  # host only: paths may carry identifiers


def test_unconsumed_lost_responses_are_listed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_scripted(teams_ehr_sandbox):
            teams_ehr_sandbox.ehr.lose_next_response("token")
            teams_ehr_sandbox.entra.lose_next_response("jwks", times=2)
            teams_ehr_sandbox.fhir.lose_next_response(times=3)
            teams_ehr_sandbox.graph.lose_next_response("createOrGet")
        """
    )
    result = pytester.runpytest(*STRICT)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*FakeEhr.lose_next_response('token'): 1 left*",
            "*FakeFhirServer.lose_next_response(): 3 left*",
            "*FakeEntra.lose_next_response('jwks'): 2 left*",
            "*FakeGraph lose script ('createOrGet'): 1 left*",
        ]
    )
