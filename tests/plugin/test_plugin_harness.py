"""The ``teams_ehr_harness`` fixture: configured by the marker, sharing the sandbox (SPEC E1)."""

from __future__ import annotations

import pytest

STRICT = ("-p", "no:cacheprovider", "--strict-markers", "-W", "error")

HOST = """
import pytest
from starlette.applications import Starlette

from teams_ehr.integrations.starlette import teams_ehr_lifespan, teams_ehr_routes


def create_app(runtime):
    return Starlette(routes=teams_ehr_routes(runtime), lifespan=teams_ehr_lifespan(runtime))


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param
"""


def test_the_harness_runs_the_marked_host_on_the_shared_sandbox(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        HOST
        + """
pytestmark = [pytest.mark.anyio, pytest.mark.teams_ehr(host=create_app)]


async def test_shared(teams_ehr_harness, teams_ehr_sandbox, teams_ehr_fhir):
    assert teams_ehr_harness.sandbox is teams_ehr_sandbox
    assert teams_ehr_fhir is teams_ehr_sandbox.fhir
    assert not teams_ehr_sandbox.settings.attendance.workers  # the harness runs attendance


@pytest.mark.teams_ehr(writer="audit_event")
async def test_writer(teams_ehr_harness):
    host = teams_ehr_harness
    org = await host.call(host.runtime.registry.get, host.org_id)
    assert org.test.config.writer == "audit_event"


async def test_no_harness_no_change(teams_ehr_sandbox):
    assert teams_ehr_sandbox.settings.attendance.workers
"""
    )
    pytester.runpytest(*STRICT).assert_outcomes(passed=6)


def test_a_harness_without_a_host_names_the_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        HOST
        + """
@pytest.mark.anyio
async def test_forgot(teams_ehr_harness):
    pass
"""
    )
    result = pytester.runpytest(*STRICT, "-k", "asyncio")
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    assert "teams_ehr_harness needs the host under test" in out
    assert "@pytest.mark.teams_ehr(host=create_app)" in out
    assert "Known options: epic, ehr_base," in out
    assert "docs/testing.md#the-host-harness" in out
    assert "Traceback" not in out


def test_a_host_that_is_not_a_factory_is_a_clear_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        HOST
        + """
@pytest.mark.anyio
@pytest.mark.teams_ehr(host="myapp:create_app")
async def test_bad(teams_ehr_harness):
    pass
"""
    )
    result = pytester.runpytest(*STRICT, "-k", "asyncio")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*host must be the app factory*docs/testing.md#marker-options*"])


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ('writer="epic_note"', "unknown attendance writer 'epic_note'. Known options: audit_event"),
        ("host=lambda runtime: object()", "Known options: interface='asgi', interface='wsgi'"),
    ],
)
def test_a_harness_it_cannot_start_says_what_to_fix(
    pytester: pytest.Pytester, marker: str, message: str
) -> None:
    pytester.makepyfile(
        HOST
        + f"""
@pytest.mark.anyio
@pytest.mark.teams_ehr(host=create_app)
@pytest.mark.teams_ehr({marker})
async def test_bad(teams_ehr_harness):
    pass
"""
    )
    result = pytester.runpytest(*STRICT, "-k", "asyncio")
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    assert "teams_ehr_harness: " in out
    assert message in out
    assert "Traceback" not in out
