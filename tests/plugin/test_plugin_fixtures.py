"""The ``teams_ehr_*`` fixtures and the ``teams_ehr`` marker, run in inner sessions (SPEC E1)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

STRICT = ("-p", "no:cacheprovider", "--strict-markers", "-W", "error")


def test_every_fixture_is_a_fake_wired_to_its_partners(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import httpx
        import pytest
        from teams_ehr.testing.fake_ehr import FakeEhr
        from teams_ehr.testing.fake_entra import FakeEntra
        from teams_ehr.testing.fake_fhir import FakeFhirServer
        from teams_ehr.testing.fake_graph import FakeGraph

        def test_types(teams_ehr_ehr, teams_ehr_fhir, teams_ehr_entra, teams_ehr_graph):
            assert isinstance(teams_ehr_ehr, FakeEhr)
            assert isinstance(teams_ehr_fhir, FakeFhirServer)
            assert isinstance(teams_ehr_entra, FakeEntra)
            assert isinstance(teams_ehr_graph, FakeGraph)
            assert teams_ehr_ehr.fhir_handler == teams_ehr_fhir.handler
            assert teams_ehr_fhir.base_url == teams_ehr_ehr.base_url

        def test_fhir_requires_a_token_the_ehr_issued(teams_ehr_ehr, teams_ehr_fhir):
            teams_ehr_fhir.seed({"resourceType": "Appointment", "id": "a1", "status": "booked"})
            with httpx.Client(transport=httpx.MockTransport(teams_ehr_ehr.handler)) as client:
                url = teams_ehr_ehr.base_url + "/Appointment/a1"
                assert client.get(url).status_code == 401
                bad = client.get(url, headers={"Authorization": "Bearer forged"})
                assert bad.status_code == 401

        @pytest.mark.anyio
        async def test_graph_checks_tokens_with_entra(teams_ehr_entra, teams_ehr_graph):
            request = httpx.Request(
                "GET", teams_ehr_graph.base_url + "/v1.0/users/x/onlineMeetings/y",
                headers={"Authorization": "Bearer not-issued-by-entra"},
            )
            response = await teams_ehr_graph.handler(request)
            assert response.status_code == 401

        def test_fresh_fakes_per_test_1(teams_ehr_ehr):
            teams_ehr_ehr.standalone_user = "changed"

        def test_fresh_fakes_per_test_2(teams_ehr_ehr):
            assert teams_ehr_ehr.standalone_user == "practitioner-1"
        """
    )
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def anyio_backend():
            return "asyncio"
        """
    )
    pytester.runpytest(*STRICT).assert_outcomes(passed=5)


def test_the_sandbox_shares_its_fakes_with_the_individual_fixtures(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        def test_same_objects(
            teams_ehr_ehr, teams_ehr_fhir, teams_ehr_entra, teams_ehr_graph, teams_ehr_sandbox
        ):
            assert teams_ehr_sandbox.ehr is teams_ehr_ehr
            assert teams_ehr_sandbox.fhir is teams_ehr_fhir
            assert teams_ehr_sandbox.entra is teams_ehr_entra
            assert teams_ehr_sandbox.graph is teams_ehr_graph

        def test_sandbox_requested_last_still_shares(teams_ehr_ehr, teams_ehr_sandbox):
            assert teams_ehr_sandbox.ehr is teams_ehr_ehr
        """
    )
    pytester.runpytest(*STRICT).assert_outcomes(passed=2)


def test_marker_options_merge_closest_first(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from datetime import datetime, timezone

        FIXED = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
        pytestmark = pytest.mark.teams_ehr(epic=False, ehr_base="https://module.test/fhir")

        @pytest.mark.teams_ehr(tenant_id="11111111-1111-4111-8111-111111111111")
        def test_module_options(teams_ehr_ehr, teams_ehr_entra, teams_ehr_graph):
            assert teams_ehr_ehr.epic is False
            assert teams_ehr_ehr.base_url == "https://module.test/fhir"
            assert teams_ehr_entra.tenant_id == "11111111-1111-4111-8111-111111111111"
            assert teams_ehr_graph.tenant_id == "11111111-1111-4111-8111-111111111111"

        @pytest.mark.teams_ehr(epic=True, clock=lambda: FIXED)
        class TestClass:
            def test_class_beats_module(self, teams_ehr_ehr):
                assert teams_ehr_ehr.epic is True
                assert teams_ehr_ehr.base_url == "https://module.test/fhir"
                assert teams_ehr_ehr.clock() == FIXED

            @pytest.mark.teams_ehr(epic=False, ehr_base="https://test.test/r4")
            def test_test_beats_class(self, teams_ehr_ehr, teams_ehr_fhir):
                assert teams_ehr_ehr.epic is False
                assert teams_ehr_ehr.base_url == teams_ehr_fhir.base_url == "https://test.test/r4"

        @pytest.mark.teams_ehr(ehr_base="https://sandbox.test/api/FHIR/R4", epic=False)
        def test_sandbox_options(teams_ehr_sandbox):
            assert teams_ehr_sandbox.ehr.base_url == "https://sandbox.test/api/FHIR/R4"
            assert teams_ehr_sandbox.ehr.epic is False
        """
    )
    pytester.runpytest(*STRICT).assert_outcomes(passed=4)


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("epik=True", "unexpected keyword argument 'epik'"),
        ("epic='yes'", "epic must be True or False"),
        ("ehr_base='ftp://x'", "ehr_base must be an absolute http(s) URL"),
        ("clock=3", "clock must be a callable"),
        ("True", "keyword options only"),
    ],
)
def test_a_bad_option_is_a_clear_error(
    pytester: pytest.Pytester, marker: str, message: str
) -> None:
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.teams_ehr({marker})
        def test_bad(teams_ehr_ehr):
            pass
        """
    )
    result = pytester.runpytest(*STRICT)
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    assert message in out
    assert "docs/testing.md#marker-options" in out
    assert "Traceback" not in out


def test_tenant_id_is_refused_for_the_sandbox(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.teams_ehr(tenant_id="11111111-1111-4111-8111-111111111111")
        def test_bad(teams_ehr_sandbox):
            pass
        """
    )
    result = pytester.runpytest(*STRICT)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*teams_ehr_sandbox uses its own tenant*"])


def test_the_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.teams_ehr(**options)*docs/testing.md*"])


def test_plugin_can_be_disabled(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(teams_ehr_ehr):\n    pass\n")
    result = pytester.runpytest("-p", "no:teams_ehr")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'teams_ehr_ehr' not found*"])


def test_importing_the_plugin_loads_no_fake() -> None:
    code = (
        "import sys, json, teams_ehr.testing.plugin;"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('teams_ehr'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(json.loads(out))
    heavy = {m for m in loaded if m.startswith(("teams_ehr.testing.", "teams_ehr.app"))}
    assert heavy == {"teams_ehr.testing.plugin"}
