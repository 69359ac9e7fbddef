"""HostHarness drives a real host through the sandbox, and says clearly when it cannot (SPEC E1).

The integrator's three scenarios run from docs/testing.md (test_testing_docs.py); here: the
other writers and ways in, the assertion helpers' failure messages, and every misuse the harness
refuses with a message that names the fix ("Known options: …").
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from flask import Flask
from starlette.applications import Starlette

from teams_ehr.app import TeamsEhr
from teams_ehr.config import AttendanceSettings
from teams_ehr.errors import UsageError
from teams_ehr.integrations.flask import FlaskTeamsEhr
from teams_ehr.integrations.starlette import teams_ehr_lifespan, teams_ehr_routes
from teams_ehr.testing.harness import HostHarness, harness_attendance
from teams_ehr.testing.sandbox import PRACTITIONER, Sandbox

pytestmark = pytest.mark.anyio


def fastapi_app(runtime: TeamsEhr) -> FastAPI:
    app = FastAPI(lifespan=teams_ehr_lifespan(runtime))
    app.router.routes.extend(teams_ehr_routes(runtime))
    return app


def flask_app(runtime: TeamsEhr) -> Flask:
    app = Flask("harness_test")
    FlaskTeamsEhr(runtime).init_app(app)
    return app


HOSTS = [pytest.param(fastapi_app, id="fastapi"), pytest.param(flask_app, id="flask")]


async def _visit(host: HostHarness) -> None:
    await host.clinician_launch("appt-1")
    patient = await host.patient_join("appt-1")
    host.admit(patient)
    host.end("appt-1")


# -- what the harness does -------------------------------------------------------------------------


@pytest.mark.parametrize("factory", HOSTS)
async def test_audit_event_writer_writes_one_event_per_connection(factory: Any) -> None:
    async with HostHarness(factory, writer="audit_event") as host:
        await _visit(host)
        run = await host.run_attendance()
        assert run.notifications == (202,) * 7  # started, 2 joined, admitted, 2 left, ended
        assert run.outbox["dead"] == 0
        assert run.outbox["pending"] == 0
        events = host.assert_written("AuditEvent", count=4)
        assert all(e["resourceType"] == "AuditEvent" for e in events)
        host.assert_written("AuditEvent")  # at least one
        await host.assert_no_dead_letters()
        assert host.sandbox.fhir.written("DocumentReference") == []


@pytest.mark.parametrize("factory", HOSTS)
async def test_a_patient_joins_with_a_link_the_host_issued(factory: Any) -> None:
    async with HostHarness(factory) as host:
        start, end = host.sandbox.seed_appointment("appt-1")
        await host.call(host.sandbox.seed_clinician, host.runtime, org_id=host.org_id)
        token = await host.call(
            host.runtime.visits.meetings.prepare_visit,
            host.org_id,
            environment="test",
            visit_key="Appointment/appt-1",
            ehr_user_id=PRACTITIONER,
            start=start,
            end=end,
        )
        patient = await host.patient_join("appt-1", link=f"/j/{token}")
        assert (patient.role, patient.leg) == ("patient", "patient-1")
        assert host.room("appt-1").in_lobby() == ["patient-1"]
        second = await host.patient_join("appt-1", link=f"/j/{token}")
        assert second.leg == "patient-2"


async def test_a_relaunch_with_join_false_leaves_the_room_alone() -> None:
    async with HostHarness(fastapi_app) as host:
        launch = await host.clinician_launch("appt-1", join=False)
        assert launch.in_meeting
        assert launch.clinician is None
        assert host.room("appt-1").in_meeting() == []
        again = await host.clinician_launch("appt-1")
        assert again.clinician is not None
        assert host.room("appt-1").in_meeting() == ["clinician"]
        await host.clinician_launch("appt-1")  # already there: nothing happens
        assert host.room("appt-1").in_meeting() == ["clinician"]
        assert launch.location is not None
        assert launch.location not in repr(launch)  # a join URL stays out of reprs


async def test_a_failure_inside_the_harness_surfaces_as_itself() -> None:
    """Not wrapped in the ExceptionGroup of the task group that runs an ASGI app's lifespan."""
    with pytest.raises(AssertionError, match="the test's own"):
        async with HostHarness(fastapi_app):
            raise AssertionError("the test's own")


# -- the assertion helpers' messages --------------------------------------------------------------


async def test_assert_written_says_what_was_written_instead() -> None:
    async with HostHarness(fastapi_app, writer="audit_event") as host:
        with pytest.raises(AssertionError, match=r"found 0 \(written: nothing\)"):
            host.assert_written("AuditEvent")
        await _visit(host)
        await host.run_attendance()
        with pytest.raises(AssertionError) as caught:
            host.assert_written("DocumentReference", count=1)
        message = str(caught.value)
        assert "expected 1 DocumentReference written to the fake EHR, found 0" in message
        assert "written: AuditEvent x4" in message
        assert "docs/testing.md#the-host-harness" in message
        with pytest.raises(AssertionError, match="expected 3 AuditEvent"):
            host.assert_written("AuditEvent", count=3)


async def test_assert_written_lists_the_known_resource_types() -> None:
    async with HostHarness(fastapi_app) as host:
        with pytest.raises(UsageError) as caught:
            host.assert_written("Docref")
    assert "Known options: AuditEvent, DocumentReference, Encounter" in str(caught.value)
    assert caught.value.reason == "harness_usage"


async def test_assert_no_dead_letters_lists_what_was_given_up() -> None:
    async with HostHarness(fastapi_app) as host:
        await _visit(host)
        host.sandbox.fhir.fail_next(400)  # a poison answer: never retried
        await host.run_attendance()
        with pytest.raises(AssertionError) as caught:
            await host.assert_no_dead_letters()
    message = str(caught.value)
    assert message.startswith("1 attendance write(s) were dead-lettered:\n  - ")
    assert "docs/testing.md#the-host-harness" in message


# -- misuse, refused with the fix -------------------------------------------------------------------


async def test_the_room_of_an_unlaunched_visit_names_the_known_ones() -> None:
    async with HostHarness(fastapi_app) as host:
        with pytest.raises(UsageError, match="Known options: none yet"):
            host.room("appt-1")
        await host.clinician_launch("appt-1")
        with pytest.raises(UsageError, match="Known options: appt-1;"):
            host.end("appt-9")


async def test_a_patient_without_a_meeting_is_an_assertion_that_names_the_step() -> None:
    async with HostHarness(fastapi_app) as host:
        with pytest.raises(AssertionError, match=r"Did the clinician launch the visit first"):
            await host.patient_join("appt-1")


async def test_a_sandbox_with_background_workers_is_refused() -> None:
    with pytest.raises(UsageError, match=r"attendance=harness_attendance\(\)"):
        HostHarness(fastapi_app, sandbox=Sandbox())
    HostHarness(fastapi_app, sandbox=Sandbox(attendance=harness_attendance()))


async def test_an_unknown_writer_lists_the_strategies() -> None:
    with pytest.raises(UsageError) as caught:
        HostHarness(fastapi_app, writer="epic_note")
    assert "Known options: audit_event, encounter_participant, epic_clinical_note" in str(
        caught.value
    )


async def test_attendance_off_is_a_usage_error() -> None:
    sandbox = Sandbox(attendance=AttendanceSettings(enabled=False, workers=False))
    async with HostHarness(fastapi_app, sandbox=sandbox) as host:
        with pytest.raises(UsageError, match=r"attendance is off"):
            await host.run_attendance()


async def test_an_asgi_host_that_never_opens_the_runtime_is_named() -> None:
    def no_lifespan(runtime: TeamsEhr) -> Starlette:
        return Starlette(routes=teams_ehr_routes(runtime))

    with pytest.raises(UsageError, match=r"lifespan=teams_ehr_lifespan\(runtime\)"):
        async with HostHarness(no_lifespan):
            pass


async def test_a_wsgi_host_without_the_flask_bridge_is_named() -> None:
    def plain_wsgi(runtime: TeamsEhr) -> Any:
        def app(environ: Any, start_response: Any) -> list[bytes]:
            start_response("200 OK", [])
            return [b""]

        return app

    with pytest.raises(UsageError, match=r"FlaskTeamsEhr\(runtime\)\.init_app\(app\)"):
        async with HostHarness(plain_wsgi):
            pass


async def test_a_flask_bridge_around_another_runtime_is_named() -> None:
    other = Sandbox(attendance=harness_attendance())

    def wrong_runtime(runtime: TeamsEhr) -> Flask:
        return flask_app(other.app())

    with pytest.raises(UsageError, match="another runtime"):
        async with HostHarness(wrong_runtime):
            pass


async def test_an_app_of_unknown_shape_lists_the_interfaces() -> None:
    with pytest.raises(UsageError) as caught:
        async with HostHarness(lambda runtime: object()):
            pass
    assert "Known options: interface='asgi', interface='wsgi'" in str(caught.value)
    with pytest.raises(UsageError, match="Known options: asgi, wsgi"):
        async with HostHarness(fastapi_app, interface="http2"):  # type: ignore[arg-type]
            pass


async def test_helpers_outside_the_context_are_a_usage_error() -> None:
    host = HostHarness(fastapi_app)
    with pytest.raises(UsageError, match="async with HostHarness"):
        await host.assert_no_dead_letters()
    with pytest.raises(UsageError, match="not started"):
        await host.clinician_launch("appt-1")
